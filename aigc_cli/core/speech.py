"""Speech: `prepare` (voice, backend, the checks the voice needs, the seed, the record) -> SpeechJob, and
`run` (an AudioChunk per sentence, then a Result with all the samples)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..engines import EngineKey
from ..errors import UsageError
from ..loading import revision_of
from ..marking import MADE
from ..settings import Resolved, named
from .events import AudioChunk, Event, Reporter, Result, SeedChosen
from .models import find_folder, find_model, load, model_errors
from .seeds import draw_seed

if TYPE_CHECKING:
    from ..engines.speech import SpeechRequest
    from ..pool import EnginePool
    from ..registry import ModelRef


@dataclass(frozen=True)
class SpeechJob:
    """A speech request ready to run on its engine (loaded, in the pool), and what its file records."""

    key: EngineKey
    label: str
    request: SpeechRequest
    record: dict[str, Any]
    seed_drawn: bool
    """No seed was given: request.seed was drawn at random."""


def _vocoder(ref: ModelRef, reporter: Reporter) -> Path | None:
    from ..loading import locate
    from ..registry import resolve

    if ref.spec is None or ref.spec.vocoder is None:
        return None
    return locate(resolve(ref.spec.vocoder, "speech"), None, reporter)  # type: ignore[arg-type]


def engine_key(folder: Path, device: str, dtype: str, vocoder: Path | None) -> EngineKey:
    """Piper voices run on onnxruntime's CPU provider (no torch, no device to pick); the rest on the
    transformers pipeline, with the registry's vocoder when the alias names one."""
    from ..loading import speech_backend

    backend, options = speech_backend(folder)
    if backend == "piper":
        return EngineKey("speech", str(folder), "cpu", "float32", "piper")
    if vocoder is not None:
        options = (("vocoder", str(vocoder)),)
    return EngineKey("speech", str(folder), device, dtype, backend, options)


DEFAULT_VOICE = "default"
"""The voice name every model takes for its own default speaker (GET /v1/audio/voices lists it)."""
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
    | {"marin", "cedar"}
)
"""OpenAI's voice names: API clients must send one (the official client requires `voice`), and a user may
copy one from OpenAI's docs; a model without a speaker of that name speaks with its default voice."""


def prepare(
    resolved: Resolved,
    text: str,
    reporter: Reporter,
    pool: EnginePool,
    fallback_voices: frozenset[str] = OPENAI_VOICES,
    fallback_said: str = "warning",
) -> SpeechJob:
    """Find and load the voice of `resolved` (settings from any source), draw the seed, and check the
    request against the voice (speaker, speed, text it can read) before any work. A voice in
    `fallback_voices` (OpenAI's names, which API clients must send) that the model does not have speaks
    with its default speaker. Raises UsageError (exit 2), ModelUnavailableError (exit 3)."""
    from ..engines.speech import SpeechRequest, clean_text
    from ..loading import is_piper_voice, source_of

    s = resolved.values
    text, cleaned = clean_text(text)  # before anything loads: a UTF-16 file is exit 2 at once
    ref, folder = find_folder("speech", s.model, reporter, source=resolved.sources["model"])
    label = ref.label
    if is_piper_voice(folder):  # onnxruntime on the CPU: no torch to import, no device to pick
        key = EngineKey("speech", str(folder), "cpu", "float32", "piper")
        if s.device not in (None, "auto", "cpu") or s.dtype not in (None, "auto", "float32"):
            given = "/".join(named(resolved, n, "speech") for n in ("device", "dtype"))
            reporter.warn(
                f"Piper voices run on onnxruntime's CPU provider in float32: {given} do not apply",
                "setting_unused",
                ("device", "dtype"),
            )
    else:
        target = find_model("speech", s.model, s.device, s.dtype, reporter)
        key = engine_key(folder, target.device.device, target.dtype, _vocoder(ref, reporter))
    if key.backend != "piper":
        from ..loading import quiet_libraries

        quiet_libraries(reporter)  # type: ignore[arg-type]
    voice = load(pool, key, reporter, f"Loading {label}", label)
    seed, drawn = draw_seed(s.seed)
    given = None if s.voice == DEFAULT_VOICE else s.voice  # every model's own default speaker
    request = SpeechRequest(text, seed, given, s.speed or 1.0, s.sentence_silence or 0.0)
    if given in fallback_voices:
        try:
            voice.check(request)
        except UsageError:
            request = replace(request, voice=None)
            # a warning to a user who typed it; a note (fallback_said) for API clients, which send one on
            # every request
            say = reporter.note if fallback_said == "note" else reporter.warn
            say(
                f"{label} has no voice '{given}' (one of OpenAI's names): its default voice speaks",
                "voice_fallback",
            )
    voice.check(request)
    if cleaned is not None:
        reporter.warn(f"the text: {cleaned}", "text_cleaned")
    reporter.emit(SeedChosen(seed, drawn))
    record = {
        "kind": "speech",
        "text": text,
        "model": label,
        "revision": revision_of(folder),
        "source": source_of(ref, folder),
        "voice": request.voice,
        "speed": request.speed,
        "sentence_silence": request.sentence_silence,
        "seed": seed,
        "sample_rate": voice.sample_rate,
        "device": key.device,
        "dtype": key.dtype,
        "aigc_version": __version__,
        "digital_source_type": None if s.mark is False else MADE,
    }
    return SpeechJob(key, label, request, record, drawn)


def run(job: SpeechJob, voice: Any) -> Iterator[Event]:
    """An AudioChunk per sentence as it is made, then one Result: record, payload (all samples, float32),
    timings (compute: seconds spent synthesizing; duration: seconds of audio). Closing the iterator stops
    at the next sentence."""
    import numpy as np

    from ..engines.speech import synthesize

    chunks, compute = [], 0.0
    with model_errors(job.label):
        for chunk in synthesize(voice, job.request):
            compute += chunk.seconds
            chunks.append(chunk.samples)
            yield AudioChunk(chunk.index, chunk.samples, chunk.sample_rate, chunk.seconds)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    rate = job.record["sample_rate"]
    timings = {"compute": round(compute, 4), "duration": len(samples) / rate}
    yield Result(0, job.record, samples, timings)
