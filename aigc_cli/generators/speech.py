"""Speech synthesis: `synthesize` yields audio sentence by sentence, `synthesize_all` collects it.
Nothing here prints.

Two backends behind one small interface (`Voice`):
- Piper voices (VITS in ONNX): the text goes to `PiperVoice.synthesize`, which splits it into sentences
  itself; `onnxruntime.set_seed(seed)` runs before the voice is loaded, which makes its noise repeatable.
- The transformers `text-to-speech` pipeline (VITS/MMS, SpeechT5 + HiFi-GAN, FastSpeech2, Bark...):
  aigc splits the text into sentences (`split_sentences`), `transformers.set_seed(seed)` runs once
  before the first, and each sentence is one pipeline call.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_SENTENCE_CHARS = 300
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n|\n(?=\s*[-*\u2022])")


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    seed: int
    voice: str | None = None
    """Speaker: a Piper speaker id or name, a SpeechT5 x-vector (.npy), a Bark preset."""
    speed: float = 1.0
    """> 1 speaks faster."""
    sentence_silence: float = 0.0
    """Seconds of silence after each sentence."""


@dataclass(frozen=True)
class AudioChunk:
    samples: Any
    """float32 mono samples in [-1, 1]."""
    sample_rate: int
    index: int
    """The sentence's position."""
    seconds: float
    """Compute time for this chunk."""


def split_sentences(text: str, limit: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Sentences in order; a sentence longer than `limit` is cut at commas, then at spaces."""
    pieces: list[str] = []
    for sentence in SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        while len(sentence) > limit:
            cut = max(sentence.rfind(", ", 0, limit), sentence.rfind("; ", 0, limit))
            cut = cut + 1 if cut > limit // 3 else sentence.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces


class Voice:
    """The backend interface: `sample_rate`, `sentences(text)`, `chunks(request)`."""

    sample_rate: int
    name: str

    def sentences(self, text: str) -> list[str]:
        return split_sentences(text)

    def check(self, request: SpeechRequest) -> None:
        """Raise UsageError for a voice or speed this backend cannot honour, before any work."""

    def chunks(self, request: SpeechRequest) -> Iterator[Any]:
        raise NotImplementedError


class PiperBackend(Voice):
    def __init__(self, model: Path, seed: int) -> None:
        import onnxruntime
        from piper import PiperVoice

        onnxruntime.set_seed(seed)  # before the session exists, or the noise is not repeatable
        self.voice = PiperVoice.load(model)
        self.sample_rate = self.voice.config.sample_rate
        self.name = model.stem

    def speaker_id(self, voice: str | None) -> int | None:
        from ..errors import UsageError

        if voice is None:
            return None
        speakers = self.voice.config.speaker_id_map or {}
        if voice in speakers:
            return speakers[voice]
        if voice.isdigit() and int(voice) < max(self.voice.config.num_speakers, 1):
            return int(voice)
        known = ", ".join(list(speakers)[:10]) or "0 (this voice has one speaker)"
        raise UsageError(f"Unknown voice '{voice}' for {self.name}: use {known}")

    def check(self, request: SpeechRequest) -> None:
        self.speaker_id(request.voice)

    def chunks(self, request: SpeechRequest) -> Iterator[Any]:
        from piper import SynthesisConfig

        length = None if request.speed == 1.0 else self.voice.config.length_scale / request.speed
        config = SynthesisConfig(speaker_id=self.speaker_id(request.voice), length_scale=length)
        for chunk in self.voice.synthesize(request.text, syn_config=config):
            yield chunk.audio_float_array


class PipelineBackend(Voice):
    def __init__(self, folder: Path, device: str, dtype: Any, vocoder: Path | None = None) -> None:
        from transformers import pipeline

        extra = {}
        if vocoder is not None:
            from transformers import SpeechT5HifiGan

            extra["vocoder"] = SpeechT5HifiGan.from_pretrained(vocoder).to(device)
        self.pipe = pipeline("text-to-speech", model=str(folder), device=device, dtype=dtype, **extra)
        self.sample_rate = int(self.pipe.sampling_rate)
        self.name = folder.name
        self.model_type = self.pipe.model.config.model_type

    def check(self, request: SpeechRequest) -> None:
        self.forward_params(request)

    def forward_params(self, request: SpeechRequest) -> dict[str, Any]:
        from ..errors import UsageError

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
            raise UsageError(f"--voice is not supported for {self.model_type} models here")
        if request.speed != 1.0:
            if self.model_type != "vits":
                raise UsageError(f"--speed is not supported for {self.model_type} models here")
            self.pipe.model.speaking_rate = request.speed
        return params

    def chunks(self, request: SpeechRequest) -> Iterator[Any]:
        import transformers

        params = self.forward_params(request)
        transformers.set_seed(request.seed)
        for sentence in self.sentences(request.text):
            output = self.pipe(sentence, forward_params=params) if params else self.pipe(sentence)
            yield output["audio"].reshape(-1)


def synthesize(voice: Voice, request: SpeechRequest) -> Iterator[AudioChunk]:
    """Audio chunks in order, one per sentence, silence appended as asked."""
    import numpy as np

    silence = np.zeros(round(request.sentence_silence * voice.sample_rate), dtype=np.float32)
    started = time.perf_counter()
    for index, samples in enumerate(voice.chunks(request)):
        samples = np.asarray(samples, dtype=np.float32)
        if silence.size:
            samples = np.concatenate([samples, silence])
        now = time.perf_counter()
        yield AudioChunk(samples, voice.sample_rate, index, round(now - started, 4))
        started = time.perf_counter()


def synthesize_all(voice: Voice, request: SpeechRequest) -> tuple[Any, float]:
    """All samples joined, and the compute seconds."""
    import numpy as np

    chunks = list(synthesize(voice, request))
    samples = np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, dtype=np.float32)
    return samples, sum(c.seconds for c in chunks)
