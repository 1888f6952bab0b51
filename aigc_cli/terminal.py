"""Which standard streams are terminals: every TTY check goes through `terminal`, one seam for tests."""

from __future__ import annotations

import os
import sys
from typing import IO, Any


class Terminal:
    """Which standard streams are terminals."""

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
