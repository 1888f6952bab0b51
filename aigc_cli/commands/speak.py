"""`aigc speak`: text -> SpeechRequest -> synthesize -> a file, stdout, a raw PCM stream, or a player."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from .. import __version__
from ..console import Console, StepBar, terminal
from ..device import DeviceChoice, dtype_name, pick_device, pick_dtype
from ..errors import GenerationError, UsageError
from ..loading import locate
from ..registry import DEFAULT_MODELS, ModelRef, resolve
from ..streams import read_prompt
from ..writers import (
    AUDIO_FORMATS,
    auto_path,
    check_writable,
    encode_audio,
    pcm16,
    write_atomic,
    write_binary,
    write_json_line,
    write_text,
)
from .common import pick_seed, report_seed, setting

PLAYERS = {
    "ffplay": ["-nodisp", "-autoexit", "-loglevel", "quiet"],
    "aplay": ["-q"],
    "paplay": [],
    "afplay": [],
}


@dataclass(frozen=True)
class SpeakOptions:
    prompt: str | None
    model: str | None
    out: str | None
    format: str | None
    voice: str | None
    speed: float
    sentence_silence: float
    seed: int | None
    play: bool
    json: bool
    device: str
    dtype: str


def output_format(options: SpeakOptions) -> str:
    if options.format is not None:
        fmt = options.format.lower()
        if fmt not in (*AUDIO_FORMATS, "raw"):
            raise UsageError(f"Unknown format '{options.format}': use wav, flac, ogg or raw")
        return fmt
    if options.out in (None, "-"):
        return "wav"
    suffix = Path(options.out).suffix.lower().lstrip(".")
    if suffix not in AUDIO_FORMATS:
        raise UsageError(
            f"Cannot tell the audio format of '{options.out}': use .wav, .flac or .ogg, or --format"
        )
    return suffix


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


def run_speak(options: SpeakOptions, console: Console) -> None:
    from ..generators.speech import SpeechRequest, synthesize

    options = replace(
        options,
        voice=setting("speech", "voice", options.voice),
        speed=setting("speech", "speed", None if options.speed == 1.0 else options.speed, 1.0),
        sentence_silence=setting(
            "speech",
            "sentence_silence",
            None if options.sentence_silence == 0.0 else options.sentence_silence,
            0.0,
        ),
        device=setting("speech", "device", None if options.device == "auto" else options.device, "auto"),
        dtype=setting("speech", "dtype", None if options.dtype == "auto" else options.dtype, "auto"),
    )
    fmt = output_format(options)
    if options.speed <= 0:
        raise UsageError("--speed must be above 0")
    to_stdout = options.out == "-" or (options.out is None and not options.play and not options.json)
    if to_stdout and terminal.stdout():
        if options.out == "-" or fmt == "raw":
            raise UsageError("Not writing audio bytes to a terminal: pipe stdout somewhere, or use -o FILE")
        to_stdout = False  # a terminal gets an auto-named file instead
    if options.out == "-" and options.json:
        raise UsageError("--json prints JSON on stdout: write the audio to a file with -o")
    if fmt == "raw" and options.play:
        raise UsageError("--play needs a file format (wav, flac or ogg), not raw")
    if options.out not in (None, "-"):
        check_writable(Path(options.out))
    text = read_prompt(options.prompt)
    ref = resolve(setting("speech", "model", options.model, DEFAULT_MODELS["speech"]), "speech")
    folder = locate(ref, "speech", console)
    vocoder = _vocoder(ref, console)
    player = find_player() if options.play else None
    from ..loading import is_piper_voice, load_voice

    if is_piper_voice(folder):  # ONNX on the CPU: no torch to import, no device to pick
        device, dtype = DeviceChoice("cpu", "Piper runs on onnxruntime's CPU provider"), "float32"
    else:
        device = pick_device(options.device)
        dtype, _ = pick_dtype(device.device, options.dtype)
    # Piper's noise is seeded before its session exists: draw the seed now, report it once the request
    # checks out.
    seed = options.seed if options.seed is not None else pick_seed(None, Console(quiet=True))

    with console.status(f"Loading {ref.label}"):
        voice = load_voice(folder, device.device, dtype, seed, console, vocoder)
    request = SpeechRequest(text, seed, options.voice, options.speed, options.sentence_silence)
    voice.check(request)
    if options.seed is None:
        report_seed(seed, console)
    if fmt == "raw":
        console.info(f"aigc: raw PCM: {voice.sample_rate} Hz, 16-bit signed little-endian (S16_LE), mono")
    chunks, compute = [], 0.0
    with StepBar(console, len(voice.sentences(text)), "sentences") as progress:
        for chunk in synthesize(voice, request):
            compute += chunk.seconds
            progress.advance()
            if fmt == "raw" and to_stdout:
                write_binary(pcm16(chunk.samples))
            else:
                chunks.append(chunk.samples)
    import numpy as np

    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    record = {
        "kind": "speech",
        "text": text,
        "model": ref.label,
        "repo": ref.repo,
        "path": str(folder),
        "voice": options.voice,
        "speed": options.speed,
        "sentence_silence": options.sentence_silence,
        "seed": seed,
        "sample_rate": voice.sample_rate,
        "device": device.device,
        "dtype": dtype_name(dtype),
        "aigc_version": __version__,
    }
    path = None
    if fmt == "raw" and not to_stdout:
        path = Path(options.out) if options.out else auto_path(text, seed, ".raw")
        write_atomic(path, pcm16(samples))
    elif fmt != "raw":
        data = encode_audio(samples, voice.sample_rate, fmt, record)
        if to_stdout:
            write_binary(data)
        elif options.out is not None:
            path = Path(options.out)
            write_atomic(path, data)
        elif not options.play:
            path = auto_path(text, seed, f".{fmt}")
            write_atomic(path, data)
        if player is not None:
            _play(player, path, data, fmt)
    duration = len(samples) / voice.sample_rate if fmt != "raw" or not to_stdout else None
    if options.json:
        total = duration if duration is not None else 0.0
        write_json_line(
            {
                "path": str(path) if path else None,
                "format": fmt,
                "duration": round(total, 3),
                **record,
                "real_time_factor": round(compute / total, 4) if total else None,
            }
        )
    elif path is not None and terminal.stdout():
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
