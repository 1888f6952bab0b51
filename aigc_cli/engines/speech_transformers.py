"""The transformers `text-to-speech` pipeline (VITS/MMS, SpeechT5 + HiFi-GAN, FastSpeech2, Bark...): aigc
splits the text into sentences (`split_sentences`), `transformers.set_seed(seed)` runs once before the
first, and each sentence is one pipeline call. A VITS speaking rate is set for the call and put back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .base import EngineKey
from .speech import SpeechRequest, check_input, split_sentences


class TransformersSpeechEngine:
    backend = "transformers"

    def __init__(self, folder: Path, device: str, dtype: str, vocoder: Path | None = None) -> None:
        from transformers import pipeline

        from ..device import torch_dtype

        extra = {}
        if vocoder is not None:
            from transformers import SpeechT5HifiGan

            extra["vocoder"] = SpeechT5HifiGan.from_pretrained(vocoder).to(device)
        self.pipe = pipeline(
            "text-to-speech", model=str(folder), device=device, dtype=torch_dtype(dtype), **extra
        )
        self.device = device
        self.dtype = dtype
        self.sample_rate = int(self.pipe.sampling_rate)
        self.name = folder.name
        self.model_type = self.pipe.model.config.model_type

    @classmethod
    def load(cls, key: EngineKey) -> TransformersSpeechEngine:
        """key.options: vocoder (a HiFi-GAN folder, for SpeechT5)."""
        vocoder = key.option("vocoder")
        return cls(Path(key.folder), key.device, key.dtype, Path(vocoder) if vocoder else None)

    def sentences(self, text: str) -> list[str]:
        return split_sentences(text)

    def check(self, request: SpeechRequest) -> None:
        """Before any work: the speed and text every engine takes (check_input), the voice and speed this
        model takes, and a sentence its tokenizer reads nothing of."""
        check_input(request)
        self.forward_params(request)
        tokenizer = getattr(self.pipe, "tokenizer", None)
        if tokenizer is None:
            return
        for sentence in self.sentences(request.text):
            if not tokenizer(sentence).input_ids:  # a character-level VITS drops what it cannot say
                shown = sentence if len(sentence) <= 60 else sentence[:57] + "..."
                raise UsageError(
                    f'Nothing in "{shown}" is in the alphabet of {self.name}, which drops what it cannot '
                    "say: spell numbers and symbols out in words"
                )

    def forward_params(self, request: SpeechRequest) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.model_type == "speecht5":
            if request.voice is None or not request.voice.endswith(".npy"):
                size = self.pipe.model.config.speaker_embedding_dim
                raise UsageError(f"SpeechT5 needs a speaker x-vector: --voice FILE.npy ({size} floats)")
            import numpy as np
            import torch

            try:
                vector = np.load(request.voice).astype("float32").reshape(1, -1)
            except (OSError, ValueError) as exc:
                raise UsageError(f"Cannot read the x-vector {request.voice}: {exc}") from exc
            params["speaker_embeddings"] = torch.from_numpy(vector).to(self.pipe.device)
        elif request.voice is not None:
            raise UsageError(
                f"--voice is not supported for {self.model_type} models here (only: default)", param="voice"
            )
        if request.speed != 1.0 and self.model_type != "vits":
            raise UsageError(f"--speed is not supported for {self.model_type} models here")
        return params

    @contextmanager
    def _speaking_rate(self, speed: float) -> Iterator[None]:
        model = self.pipe.model
        if self.model_type != "vits" or speed == 1.0:  # 1.0: the model's own rate
            yield
            return
        original = model.speaking_rate
        model.speaking_rate = speed
        try:
            yield
        finally:
            model.speaking_rate = original

    def chunks(self, request: SpeechRequest) -> Iterator[Any]:
        import transformers

        params = self.forward_params(request)
        with self._speaking_rate(request.speed):
            transformers.set_seed(request.seed)
            for sentence in self.sentences(request.text):
                output = self.pipe(sentence, forward_params=params) if params else self.pipe(sentence)
                yield output["audio"].reshape(-1)
