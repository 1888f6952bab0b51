"""Which standard streams are terminals: every TTY check goes through `terminal`, one seam for tests."""

from __future__ import annotations

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


terminal = Terminal()
