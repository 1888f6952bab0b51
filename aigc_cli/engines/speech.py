"""Speech over any speech engine: `synthesize` yields audio sentence by sentence, `synthesize_all`
collects it. Nothing here prints. The engines: speech_piper.py (Piper voices) and speech_transformers.py
(the transformers text-to-speech pipeline).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import SpeechEngine

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


def synthesize(voice: SpeechEngine, request: SpeechRequest) -> Iterator[AudioChunk]:
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


def synthesize_all(voice: SpeechEngine, request: SpeechRequest) -> tuple[Any, float]:
    """All samples joined, and the compute seconds."""
    import numpy as np

    chunks = list(synthesize(voice, request))
    samples = np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, dtype=np.float32)
    return samples, sum(c.seconds for c in chunks)
