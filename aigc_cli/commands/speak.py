"""`aigc speak`: flags -> settings -> core.speech (here, or on a running server through the client) -> the
renderer -> a file, stdout, a raw PCM stream, or a player."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..console import Console
from ..errors import GenerationError, UsageError
from ..interrupts import raising
from ..output import plan_output
from ..settings import resolve_settings
from ..streams import read_prompt

PLAYERS = {
    "ffplay": ["-nodisp", "-autoexit", "-loglevel", "quiet"],
    "aplay": ["-q"],
    "paplay": [],
    "afplay": [],
}


@dataclass(frozen=True)
class SpeakOptions:
    """What `aigc speak` was asked: the text argument, the settings flags, and the command's own options."""

    prompt: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    """Setting name -> value, None where the flag was not given (settings.resolve_settings)."""
    out: str | None = None
    audio_format: str | None = None
    """--format: wav, flac, ogg, mp3, opus, aac or raw (None: by the extension of --out, else wav)."""
    play: bool = False
    as_json: bool = False
    local: bool = False
    no_log: bool = False
    use_stdin: bool = True
    """False with --no-stdin: the argument alone is the text."""


def find_player() -> list[str]:
    for name, flags in PLAYERS.items():
        found = shutil.which(name)
        if found:
            return [found, *flags]
    raise GenerationError(f"--play found no audio player: install one of {', '.join(PLAYERS)}")


def run_speak(options: SpeakOptions, console: Console) -> None:
    """`aigc speak`."""
    from .. import logs
    from ..core import speech as core_speech
    from ..engines.speech import split_sentences
    from ..pool import default_pool
    from ..server.discovery import find_server
    from .render import render_speech

    resolved = resolve_settings("speech", options.flags)
    plan = plan_output("audio", options.out, 1, options.as_json, options.audio_format, options.play)
    if plan.format == "raw" and options.play:
        raise UsageError("--play needs a file format (wav, flac, ogg, mp3, opus or aac), not raw")
    text = read_prompt(options.prompt, options.use_stdin, console)
    player = find_player() if options.play else None
    events, folder = None, None
    server = None if options.local else find_server()
    if server is not None:
        from ..client import remote_speech

        events = remote_speech(server, resolved, text, plan.format, console)
    if events is None:
        pool = default_pool()
        job = core_speech.prepare(resolved, text, console.reporter(), pool)
        folder = job.key.folder
        events = core_speech.run(job, pool.get(job.key))
    with raising():
        done = render_speech(events, console, plan, len(split_sentences(text)), options.as_json)
    if player is not None:
        _play(player, done.path, done.data, plan.format)
    logs.log_generation(
        "speak",
        "speech",
        done.record,
        resolved.values,
        path=done.path,
        seconds=done.timings.get("compute"),
        folder=folder,
        no_log=options.no_log,
    )


def _play(player: list[str], path: Path | None, data: bytes, fmt: str) -> None:
    with tempfile.TemporaryDirectory(prefix="aigc-play-") as work:
        target = path
        if target is None:
            target = Path(work) / f"speech.{fmt}"
            target.write_bytes(data)
        result = subprocess.run([*player, str(target)], stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise GenerationError(f"{Path(player[0]).name} could not play the audio (exit {result.returncode})")
