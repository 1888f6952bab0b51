"""The CLI's one renderer: the core's events (from a local run, or from a server through the client) become
stderr lines, a progress bar, the stdout payload and files. A local run and a run through `aigc serve`
render the same events, so they print the same lines and write the same bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..console import Console, StepBar
from ..core.events import AudioChunk, Event, ImageStep, Result, TextDelta
from ..output import OutputPlan, audio_json, end_text, write_json_line, write_text


def render_text(
    events: Iterable[Event], console: Console, stream: bool, as_json: bool, log: Callable[[Result], None]
) -> list[Result]:
    """Completions to stdout: streamed text (each completion ended by a newline, the next after a blank
    line), or one JSON line each; log(result) for each. Returns the results."""
    started: set[int] = set()
    results: list[Result] = []

    def begin(index: int) -> None:
        if index not in started:
            started.add(index)
            if index > 0 and not as_json:
                write_text("\n")

    for event in events:
        if isinstance(event, TextDelta):
            if stream and not as_json:
                begin(event.index)
                write_text(event.text)
        elif isinstance(event, Result):
            text = event.record["text"]
            if as_json:
                write_json_line(event.record)
            else:
                if not stream:
                    begin(event.index)
                    write_text(text)
                begin(event.index)
                end_text(text)
            log(event)
            results.append(event)
        else:
            console.show(event)
    return results


def render_images(
    events: Iterable[Event],
    console: Console,
    plan: OutputPlan,
    as_json: bool,
    total_steps: int,
    log: Callable[[Result, Path | None], None],
    ingredient: bytes | None = None,
) -> None:
    """Each image written where the plan says, with its record (signed when configured, `ingredient` the
    init image's file); its --json line or its path; a progress bar over all denoising steps on a terminal;
    log(result, path) for each."""
    from ..output import save_image

    with StepBar(console, total_steps, "denoising") as progress:
        for event in events:
            if isinstance(event, ImageStep):
                progress.advance()
            elif isinstance(event, Result):
                path = save_image(event.payload, event.index, event.record, plan, ingredient, event.data)
                log(event, path)
                if as_json:
                    write_json_line({"path": str(path) if path else None, **event.record, **event.timings})
                elif path is not None and plan.print_paths:
                    progress.print_line(str(path))
            else:
                console.show(event)


@dataclass
class Audio:
    """What render_speech wrote: the path (None: stdout), the encoded bytes, the record, the timings."""

    path: Path | None = None
    data: bytes = b""
    record: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)


def render_speech(
    events: Iterable[Event], console: Console, plan: OutputPlan, sentences: int, as_json: bool
) -> Audio:
    """Raw PCM streamed to stdout sentence by sentence, or the whole file (WAV, FLAC, OGG, MP3...) written
    where the plan says with its record; then the --json line or the path on a terminal."""
    from ..output import encode_audio, pcm16, write_atomic, write_binary

    done = Audio()
    streaming = plan.format == "raw" and plan.to_stdout
    said = False
    with StepBar(console, sentences, "sentences") as progress:
        for event in events:
            if isinstance(event, (AudioChunk, Result)) and plan.format == "raw" and not said:
                said = True
                rate = event.sample_rate if isinstance(event, AudioChunk) else event.record["sample_rate"]
                console.info(f"aigc: raw PCM: {rate} Hz, 16-bit signed little-endian (S16_LE), mono")
            if isinstance(event, AudioChunk):
                progress.advance()
                if streaming:
                    write_binary(event.samples if isinstance(event.samples, bytes) else pcm16(event.samples))
            elif isinstance(event, Result):
                done.record, done.timings = event.record, event.timings
                done.path = plan.path(0, event.record["text"], event.record["seed"])
                if plan.format == "raw":
                    done.data = event.data if event.data is not None else pcm16(event.payload)
                    if done.path is not None:
                        write_atomic(done.path, done.data)
                else:
                    done.data = event.data
                    if done.data is None:
                        rate = event.record["sample_rate"]
                        done.data = encode_audio(event.payload, rate, plan.format, event.record)
                    if plan.to_stdout:
                        write_binary(done.data)
                    elif done.path is not None:
                        write_atomic(done.path, done.data)
            else:
                console.show(event)
        if done.record:
            duration = None if streaming else done.timings.get("duration")
            if as_json:
                compute = done.timings.get("compute")
                write_json_line(audio_json(done.record, done.path, plan.format, duration, compute))
            elif done.path is not None and plan.print_paths:
                progress.print_line(str(done.path))
    return done
