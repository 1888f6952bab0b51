"""Which standard streams are terminals: every TTY check goes through `terminal`, one seam for tests."""

from __future__ import annotations

import os
import sys
from typing import IO, Any


class Terminal:
    """Which standard streams are terminals; and what a last line on one needs before an error line:
    `spinning` (a spinner is drawn on stderr: clear its line and show the cursor again) and `line_open`
    (text went to a terminal's stdout without its newline yet)."""

    spinning: bool = False
    line_open: bool = False

    def tidy(self) -> bytes:
        """The bytes to write to stderr before a last line (an error, Ctrl-C) so that it stands on a line
        of its own and the cursor shows: from a signal handler too (no locks, no allocation of note)."""
        if self.spinning:
            return b"\r\x1b[2K\x1b[?25h"
        return b"\n" if self.line_open else b""

    @staticmethod
    def isatty(stream: IO[Any]) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def stdin(self) -> bool:
        return self.isatty(sys.stdin)

    def stdout(self) -> bool:
        return self.isatty(sys.stdout)

    def stderr(self) -> bool:
        return self.isatty(sys.stderr)

    def columns(self) -> int | None:
        """How many columns the terminal that stdout is has (COLUMNS overrides it, as for every tool that
        asks; 80 when the terminal does not say); None when stdout is not a terminal (a pipe, a file)."""
        if not self.stdout():
            return None
        given = os.environ.get("COLUMNS", "")
        if given.isdigit() and int(given) > 0:
            return int(given)
        try:
            width = os.get_terminal_size(sys.stdout.fileno()).columns
        except (AttributeError, OSError, ValueError):
            width = 0
        return width or 80


terminal = Terminal()
