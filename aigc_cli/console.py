"""stderr output: notes, warnings, progress. Every TTY check goes through `terminal.Terminal`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .terminal import Terminal, terminal  # noqa: F401 (the seam's old home)


class Console:
    """Everything aigc says that is not the payload goes through here, to stderr.

    note(): setup chatter (the backend chosen, the model's folder, the seed drawn): only with --verbose.
    info(): what the user must know (where a file went), shown unless --quiet.
    warn(): something went differently than asked, shown unless --quiet.
    status() and StepBar: one spinner or bar at a time, on a terminal only (`live`), unless --quiet.
    By default a run on a terminal shows its payload, its warnings and, while it waits, aigc's spinner.
    """

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self._rich = None

    @property
    def chatty(self) -> bool:
        """Whether notes (and library warnings) are shown: --verbose."""
        return self.verbose

    @property
    def live(self) -> bool:
        """Whether a spinner or a progress bar is drawn: stderr is a terminal and not --quiet."""
        return not self.quiet and terminal.stderr()

    def _write(self, text: str, style: str | None = None) -> None:
        if terminal.stderr():
            if self._rich is None:
                from rich.console import Console as RichConsole

                self._rich = RichConsole(stderr=True, highlight=False, soft_wrap=True)
            self._rich.print(text, style=style, markup=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.chatty:
            self._write(text, style="dim")

    def info(self, text: str) -> None:
        if not self.quiet:
            self._write(text)

    def warn(self, text: str) -> None:
        if not self.quiet:
            self._write(f"aigc: warning: {text}", style="yellow")

    @contextmanager
    def status(self, text: str):
        """A spinner while something slow runs, on a terminal; a plain note otherwise."""
        if self.live:
            from rich.console import Console as RichConsole
            from rich.text import Text

            # bound to the stderr of now: a library's output hushed meanwhile (redirect_stderr) is not ours;
            # one line, cut to the terminal's width (a long model path would wrap every frame)
            terminal.spinning = True
            try:
                with RichConsole(file=sys.stderr).status(Text(text, no_wrap=True, overflow="ellipsis")):
                    yield
            finally:
                terminal.spinning = False
        else:
            if self.verbose:
                self._write(text)
            yield

    def show(self, event: Any) -> None:
        """A core event on stderr (core/events.py): a notice by its level (notes only when chatty), a seed
        drawn at random when it plays a part; other events are not the console's."""
        from .core.events import Notice, SeedChosen

        if isinstance(event, Notice):
            if event.level == "note":
                self.note(event.message)
            elif event.level == "info":
                self.info(f"aigc: {event.message}")
            else:
                self.warn(event.message)
        elif isinstance(event, SeedChosen) and event.drawn and event.matters:
            # in the file's metadata, --json, the record and the log too
            self.note(f"aigc: seed {event.seed} (drawn at random; --seed {event.seed} repeats this run)")

    def reporter(self, seeds: bool = True, also: Callable[[str], None] | None = None) -> Any:
        """A core Reporter that shows each notice (and, with `seeds`, a drawn seed) as it comes, and this
        console's status (a spinner on a terminal) while a model loads; `also(text)` is told each status as
        it begins (an MCP progress notification)."""
        from .core.events import Reporter, SeedChosen

        def on_event(event: Any) -> None:
            if seeds or not isinstance(event, SeedChosen):
                self.show(event)

        status = self.status
        if also is not None:

            @contextmanager
            def status(text: str) -> Iterator[None]:
                also(text)
                with self.status(text):
                    yield

        return Reporter(on_event, status, self.chatty, self.verbose)


class LogConsole(Console):
    """Plain lines on stderr, safe from many threads and beside a progress bar: no spinners; notes only
    with --verbose (a server's log, a batch's jobs)."""

    def _write(self, text: str, style: str | None = None) -> None:
        print(text, file=sys.stderr, flush=True)

    @property
    def live(self) -> bool:
        return False

    @contextmanager
    def status(self, text: str):
        self.note(text)
        yield


class StepBar:
    """A transient progress bar on stderr when it is a terminal (and not --quiet); nothing otherwise.

    stdout is never redirected: it carries the payload.
    """

    def __init__(self, console: Console, total: int, label: str) -> None:
        self.enabled = console.live and total > 1
        self.total, self.label = total, label
        self.bar: Any = None

    def __enter__(self) -> StepBar:
        if self.enabled:
            from rich.console import Console as RichConsole
            from rich.progress import Progress

            self.bar = Progress(
                transient=True,
                console=RichConsole(file=sys.stderr),
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total)
        return self

    def advance(self, *_: Any) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def print_line(self, text: str) -> None:
        """A status line (a path written, on a terminal): on a line of its own above a running bar, on
        stdout when no bar runs."""
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
            return
        from .output import write_text

        write_text(f"{text}\n")

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def error_line(text: str) -> None:
    """The one line a failure prints: on a line of its own on a terminal (after a spinner or a reply cut
    short), the cursor shown."""
    tidy = terminal.tidy().decode()
    terminal.spinning = terminal.line_open = False
    print(f"{tidy}aigc: error: {text}", file=sys.stderr, flush=True)
