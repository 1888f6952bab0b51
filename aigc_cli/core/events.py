"""What the core reports while it works: small event dataclasses, and the Reporter that collects them.

`prepare` reports through a Reporter (notices, the seed chosen); `run` yields events. Edges render them:
the CLI as stderr lines, a progress bar and the stdout payload (commands/render.py), the server as JSON or
SSE (server/protocol.py). Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Notice:
    """Something a user should read: a setup note, a fact to reproduce the run, or a warning."""

    level: str
    """note (setup chatter: which backend, which folder), info (a fact: an export is being made), warning
    (something ran differently than asked)."""
    code: str
    """A stable name for what happened (prompt_truncated, max_tokens_capped, backend_fallback...)."""
    message: str
    """One line in the user's words, naming the flag, API field or config key by where the value came from
    (settings.subject)."""
    settings: tuple[str, ...] = ()
    """The settings the message names (schema names), so that an edge can name them its own way: the CLI
    says `--max-tokens` where the server it sent the request to said `field 'max_tokens'`."""

    def as_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "code": self.code,
            "message": self.message,
            "settings": list(self.settings),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notice:
        names = tuple(str(n) for n in data.get("settings") or () if isinstance(n, str))
        level, code = str(data.get("level", "warning")), str(data.get("code", ""))
        return cls(level, code, str(data.get("message", "")), names)


@dataclass(frozen=True)
class SeedChosen:
    """The seed a run uses (item i of a run uses seed + i)."""

    seed: int
    drawn: bool
    """No seed was given: this one was drawn at random in prepare."""
    matters: bool = True
    """Whether the seed plays a part (greedy text decoding ignores it)."""


@dataclass(frozen=True)
class TextDelta:
    """New text of completion `index` (streamed as tokens come)."""

    index: int
    text: str
    tokens: int
    """Tokens generated so far in this completion."""


@dataclass(frozen=True)
class ImageStep:
    """Denoising step `step` of `total` for image `index` is done."""

    index: int
    step: int
    total: int
    preview: Any = None
    """A small PIL image of the latents at this step, when one was asked for; else None."""


@dataclass(frozen=True)
class AudioChunk:
    """The audio of one sentence, in order."""

    index: int
    samples: Any
    """float32 mono samples in [-1, 1], a numpy array."""
    sample_rate: int
    """Samples per second."""
    seconds: float
    """Compute time for this chunk."""


@dataclass(frozen=True)
class Result:
    """One finished output (completion, image or audio) and its record."""

    index: int
    record: dict[str, Any]
    """What the output records (the --json line's fields, the file's metadata); the seed included."""
    payload: Any = None
    """The output: a Completion (text), a PIL image, or float32 samples (speech)."""
    timings: dict[str, Any] = field(default_factory=dict)
    """Seconds spent: seconds, step_seconds, decode_seconds (images), compute (speech)."""
    data: bytes | None = None
    """The output already encoded as a file (a server's WAV/FLAC/OGG), to be written as it is."""


Event = Notice | SeedChosen | TextDelta | ImageStep | AudioChunk | Result


class Reporter:
    """Where prepare (and the loading code under it) reports: every event is kept in `events`, in order,
    and handed to `on_event` at once when one is given (the CLI prints as it goes; the server keeps them for
    the response). `chatty` and `verbose` say whether the edge shows library progress bars and library
    warnings; `status` makes the context shown while something slow runs (a spinner), if any.

    The loading code calls `note`, `info`, `warn` and `status` as it once called a console's.
    """

    def __init__(
        self,
        on_event: Callable[[Event], None] | None = None,
        status: Callable[[str], AbstractContextManager[Any]] | None = None,
        chatty: bool = False,
        verbose: bool = False,
    ) -> None:
        self.events: list[Event] = []
        self._on_event = on_event
        self._status = status
        self.chatty = chatty
        self.verbose = verbose

    def emit(self, event: Event) -> None:
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def note(self, message: str, code: str = "note") -> None:
        self.emit(Notice("note", code, message))

    def info(self, message: str, code: str = "info") -> None:
        self.emit(Notice("info", code, message.removeprefix("aigc: ")))

    def warn(self, message: str, code: str = "warning", settings: tuple[str, ...] = ()) -> None:
        self.emit(Notice("warning", code, message, settings))

    def status(self, text: str) -> AbstractContextManager[Any]:
        """The edge's context while something slow runs (loading a model); nothing by default."""
        return self._status(text) if self._status is not None else nullcontext()

    def notices(self) -> list[Notice]:
        return [e for e in self.events if isinstance(e, Notice)]
