"""Piper voices (VITS in ONNX) through piper-tts's own `PiperVoice.synthesize`. Piper phonemizes the text
and splits it into sentences itself (espeak's full stops), and aigc keeps those sentences, each one run of
the voice as in Piper's API; a sentence of more than MAX_SENTENCE_CHARS phonemes (a text without full stops:
only commas, or no punctuation at all) is cut further (`split_long`: after a comma, semicolon or colon, else
between words), so that its audio comes a bounded piece at a time instead of all at the end.

Piper's noise comes from random ops inside the ONNX graph, seeded from onnxruntime's global seed when a
session is created, and advancing with every run. So each request gets a session of its own, created
right after `onnxruntime.set_seed(seed)` from the model file (as `PiperVoice.load` makes it): the same
seed gives the same samples whatever ran before, equal to Piper's API with the seed set before
`PiperVoice.load`.
A session costs about 0.3 s for a medium voice on this project's 2-core CPU: a warm server pays it per
request.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .base import EngineKey
from .speech import MAX_SENTENCE_CHARS, SpeechRequest, check_input, split_long, split_sentences

_SEEDING = threading.Lock()  # onnxruntime's seed is process-wide: set it and create the session together


class PiperEngine:
    backend = "piper"
    device = "cpu"
    dtype = "float32"

    def __init__(self, model: Path) -> None:
        import json

        from piper import PiperVoice
        from piper.config import PiperConfig

        # The config and the model bytes now; a session per request (see the module's docstring), so a
        # one-shot run still creates one session, as `PiperVoice.load` would.
        config = json.loads(model.with_suffix(".onnx.json").read_text(encoding="utf-8"))
        self.voice = PiperVoice(session=None, config=PiperConfig.from_dict(config))
        self.model_path = str(model)
        self.sample_rate = self.voice.config.sample_rate
        self.name = model.stem

    @classmethod
    def load(cls, key: EngineKey) -> PiperEngine:
        folder = Path(key.folder)
        voices = sorted(p for p in folder.glob("*.onnx") if p.with_suffix(".onnx.json").is_file())
        return cls(voices[0])

    def sentences(self, text: str) -> list[str]:
        return split_sentences(text)

    def speaker_id(self, voice: str | None) -> int | None:
        if voice is None:
            return None
        speakers = self.voice.config.speaker_id_map or {}
        if voice in speakers:
            return speakers[voice]
        if voice.isdigit() and int(voice) < max(self.voice.config.num_speakers, 1):
            return int(voice)
        known = f"default, {', '.join(list(speakers)[:10])}" if speakers else "default (it has one speaker)"
        raise UsageError(f"Unknown voice '{voice}' for {self.name}: use {known}", param="voice")

    def check(self, request: SpeechRequest) -> None:
        """Before any work: the speed and text every engine takes (check_input: a NUL is a ValueError in
        Piper's espeak call, a lone surrogate a UnicodeEncodeError), and the speaker."""
        check_input(request)
        self.speaker_id(request.voice)

    def _seeded_voice(self, seed: int) -> Any:
        import onnxruntime

        with _SEEDING:
            onnxruntime.set_seed(seed)
            session = onnxruntime.InferenceSession(
                self.model_path,
                sess_options=onnxruntime.SessionOptions(),
                providers=["CPUExecutionProvider"],
            )
        return dataclasses.replace(self.voice, session=session)

    def chunks(self, request: SpeechRequest) -> Iterator[Any]:
        """One array per Piper sentence, or per piece of one too long (see the module's docstring)."""
        from piper import SynthesisConfig

        length = None if request.speed == 1.0 else self.voice.config.length_scale / request.speed
        config = SynthesisConfig(speaker_id=self.speaker_id(request.voice), length_scale=length)
        voice = self._seeded_voice(request.seed)
        for sentence in voice.phonemize(request.text):
            for piece in split_long(sentence, MAX_SENTENCE_CHARS, ",;:"):
                for chunk in _synthesize_phonemes(voice, piece, config):
                    yield chunk.audio_float_array


def _synthesize_phonemes(voice: Any, phonemes: list[str], config: Any) -> Iterator[Any]:
    """Piper's own `synthesize` for one sentence's phonemes (its ids, the voice's run, normalizing, volume),
    on a copy of the voice whose phonemizer hands it these: the same samples as the sentence in Piper's
    `synthesize(text)`, which offers no call taking phonemes."""
    shim = dataclasses.replace(voice)
    shim.phonemize = lambda _text: [phonemes]
    return shim.synthesize("", syn_config=config)
