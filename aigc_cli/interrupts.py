"""Ctrl-C at any moment: exit 130 with one line.

Until generation starts (imports, resolving, loading weights, an export), SIGINT ends the process at once:
a KeyboardInterrupt raised there can land inside a library's C++ callback (abort, exit 134), inside a
`__del__` (printed and ignored: the run went on to the end), or inside class creation (a RuntimeError).
Nothing is being written then, so nothing is left half. While generating and writing, SIGINT raises
KeyboardInterrupt as usual (`raising()`), so that temp files are removed and the reader's pipe is closed
cleanly. A SIGINT that the parent set to be ignored (a background job) stays ignored.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def exit_now(signum: int, frame: Any) -> None:
    from .terminal import terminal

    os.write(2, terminal.tidy() + b"aigc: error: interrupted\n")  # after a spinner: its line cleared
    os._exit(130)


def exit_at_once() -> None:
    """SIGINT ends the process at once from now on (unless SIGINT is ignored)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, exit_now)


@contextmanager
def raising() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt inside the block (generation and writing)."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is exit_now:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is exit_now:
            signal.signal(signal.SIGINT, exit_now)
