"""`aigc speak`: flags -> SpeechSettings -> SpeechRequest -> a speech engine from the pool -> a file,
stdout, a raw PCM stream, or a player."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..console import Console, StepBar
from ..engines import EngineKey
from ..errors import GenerationError, UsageError
from ..interrupts import raising
from ..loading import locate, source_of
from ..output import (
    encode_audio,
    pcm16,
    plan_output,
    write_atomic,
    write_binary,
    write_json_line,
    write_text,
)
from ..pool import EnginePool, default_pool
from ..registry import ModelRef, resolve
from ..server.discovery import find_server
from ..settings import Resolved, resolve_settings
from ..streams import read_prompt
from .common import find_folder, find_model, loading, model_errors, pick_seed, report_seed

if TYPE_CHECKING:
    from ..engines.speech import SpeechRequest

PLAYERS = {
    "ffplay": ["-nodisp", "-autoexit", "-loglevel", "quiet"],
    "aplay": ["-q"],
    "paplay": [],
    "afplay": [],
}


def find_player() -> list[str]:
    for name, flags in PLAYERS.items():
        found = shutil.which(name)
        if found:
            return [found, *flags]
    raise GenerationError(f"--play found no audio player: install one of {', '.join(PLAYERS)}")


def _vocoder(ref: ModelRef, console: Console) -> Path | None:
    if ref.spec is None or ref.spec.vocoder is None:
        return None
    return locate(resolve(ref.spec.vocoder, "speech"), None, console)


def speech_engine_key(folder: Path, device: str, dtype: str, vocoder: Path | None) -> EngineKey:
    """Piper voices run on onnxruntime's CPU provider (no torch, no device to pick); the rest on the
    transformers pipeline, with the registry's vocoder when the alias names one."""
    from ..loading import speech_backend

    backend, options = speech_backend(folder)
    if backend == "piper":
        return EngineKey("speech", str(folder), "cpu", "float32", "piper")
    if vocoder is not None:
        options = (("vocoder", str(vocoder)),)
    return EngineKey("speech", str(folder), device, dtype, backend, options)


@dataclass(frozen=True)
class SpeechJob:
    """A speech request ready to run on its engine (loaded, in the pool), and what its file records."""

    key: EngineKey
    label: str
    request: SpeechRequest
    record: dict[str, Any]
    seed_drawn: bool
    """No seed was given: request.seed was drawn at random (report it)."""


def prepare_speech(
    resolved: Resolved,
    text: str,
    console: Console,
    pool: EnginePool,
    fallback_voices: frozenset[str] = frozenset(),
) -> SpeechJob:
    """Find and load the voice of `resolved` (settings from any source), draw the seed, and check the
    request against the voice (speaker, speed) before any work. A voice in `fallback_voices` (OpenAI's
    names, which API clients must send) that the model does not have speaks with its default speaker. The
    CLI and the server come through here. Raises UsageError, ModelUnavailableError."""
    from ..engines.speech import SpeechRequest
    from ..loading import is_piper_voice

    s = resolved.values
    ref, folder = find_folder("speech", s.model, console, source=resolved.sources["model"])
    label = ref.label
    if is_piper_voice(folder):  # onnxruntime on the CPU: no torch to import, no device to pick
        key = EngineKey("speech", str(folder), "cpu", "float32", "piper")
        if s.device not in (None, "auto", "cpu") or s.dtype not in (None, "auto", "float32"):
            console.warn(
                "Piper voices run on onnxruntime's CPU provider in float32: --device/--dtype do not apply"
            )
    else:
        target = find_model("speech", s.model, s.device, s.dtype, console)
        key = speech_engine_key(folder, target.device.device, target.dtype, _vocoder(ref, console))
    if key.backend != "piper":
        from ..loading import quiet_libraries

        quiet_libraries(console)
    with loading(console, pool, key, f"Loading {label}"), model_errors(label):
        voice = pool.get(key)
    seed = pick_seed(s.seed, Console(quiet=True)) if s.seed is None else s.seed
    request = SpeechRequest(text, seed, s.voice, s.speed or 1.0, s.sentence_silence or 0.0)
    if s.voice in fallback_voices:
        try:
            voice.check(request)
        except UsageError:
            request = replace(request, voice=None)
    voice.check(request)
    record = {
        "kind": "speech",
        "text": text,
        "model": label,
        "source": source_of(ref, folder),
        "voice": request.voice,
        "speed": request.speed,
        "sentence_silence": request.sentence_silence,
        "seed": seed,
        "sample_rate": voice.sample_rate,
        "device": key.device,
        "dtype": key.dtype,
        "aigc_version": __version__,
    }
    return SpeechJob(key, label, request, record, s.seed is None)


def run_speak(
    prompt_arg: str | None,
    flags: dict[str, Any],
    out: str | None,
    audio_format: str | None,
    play: bool,
    as_json: bool,
    console: Console,
    local: bool = False,
    no_log: bool = False,
) -> None:
    from ..engines.speech import synthesize
    from .image import file_logger

    resolved = resolve_settings("speech", flags)
    plan = plan_output("audio", out, 1, as_json, audio_format, play)
    if plan.format == "raw" and play:
        raise UsageError("--play needs a file format (wav, flac or ogg), not raw")
    text = read_prompt(prompt_arg)
    player = find_player() if play else None
    server = None if local else find_server()
    if server is not None:
        from ..server.client import remote_speech

        done = remote_speech(server, resolved, text, plan, as_json, console)
        if done is not None:
            path, data, record, compute = done
            file_logger("speak", resolved, no_log)(record, path, compute)
            if player is not None:
                _play(player, path, data, plan.format)
            return
    pool = default_pool()
    job = prepare_speech(resolved, text, console, pool)
    voice = pool.get(job.key)
    if job.seed_drawn:  # reported once the request checks out
        report_seed(job.request.seed, console)
    if plan.format == "raw":
        console.info(f"aigc: raw PCM: {voice.sample_rate} Hz, 16-bit signed little-endian (S16_LE), mono")
    chunks, compute = [], 0.0
    with (
        StepBar(console, len(voice.sentences(text)), "sentences") as progress,
        model_errors(job.label),
        raising(),
    ):
        for chunk in synthesize(voice, job.request):
            compute += chunk.seconds
            progress.advance()
            if plan.format == "raw" and plan.to_stdout:
                write_binary(pcm16(chunk.samples))
            else:
                chunks.append(chunk.samples)
    import numpy as np

    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    with raising():
        path, data = _write(plan, samples, voice.sample_rate, job.record, text, job.request.seed)
    if player is not None:
        _play(player, path, data, plan.format)
    duration = len(samples) / voice.sample_rate if not (plan.format == "raw" and plan.to_stdout) else None
    file_logger("speak", resolved, no_log, job.key.folder)(job.record, path, compute)
    report_audio(plan, duration, job.record, path, compute, as_json, progress)


def _write(
    plan: Any, samples: Any, rate: int, record: dict[str, Any], text: str, seed: int
) -> tuple[Path | None, bytes]:
    """Write the audio where the plan says; (the path written or None, the encoded bytes)."""
    path = plan.path(0, text, seed)
    data = b""
    if plan.format == "raw":
        if path is not None:
            write_atomic(path, pcm16(samples))
    else:
        data = encode_audio(samples, rate, plan.format, record)
        if plan.to_stdout:
            write_binary(data)
        elif path is not None:
            write_atomic(path, data)
    return path, data


def audio_json(
    record: dict[str, Any], path: Path | None, fmt: str, duration: float | None, compute: float | None
) -> dict[str, Any]:
    """What --json prints of one audio result (and a batch job's result)."""
    total = duration if duration is not None else 0.0
    return {
        **record,
        "path": str(path) if path else None,
        "format": fmt,
        "duration": round(total, 3),
        "real_time_factor": round(compute / total, 4) if total and compute is not None else None,
    }


def report_audio(
    plan: Any,
    duration: float | None,
    record: dict[str, Any],
    path: Path | None,
    compute: float | None,
    as_json: bool,
    progress: StepBar | None,
) -> None:
    """The --json line, or the path written on a terminal. duration: seconds of audio (None: streamed);
    compute: seconds spent synthesizing (None: not known)."""
    if as_json:
        write_json_line(audio_json(record, path, plan.format, duration, compute))
    elif path is not None and plan.print_paths:
        if progress is not None:
            progress.print_line(str(path))
        else:
            write_text(f"{path}\n")


def _play(player: list[str], path: Path | None, data: bytes, fmt: str) -> None:
    with tempfile.TemporaryDirectory(prefix="aigc-play-") as work:
        target = path
        if target is None:
            target = Path(work) / f"speech.{fmt}"
            target.write_bytes(data)
        result = subprocess.run([*player, str(target)], stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise GenerationError(f"{Path(player[0]).name} could not play the audio (exit {result.returncode})")
