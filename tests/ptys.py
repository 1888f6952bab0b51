"""Real terminals for tests: a pty with a window size (rows and columns set, as a user's terminal has; a
0x0 pty hides what libraries draw only on a sized one)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
import unicodedata
from collections.abc import Callable


def sized_pty(rows: int = 24, columns: int = 80) -> tuple[int, int]:
    """(leader, follower) of a new pty whose window is rows x columns."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return leader, follower


def sigint_as_a_terminal_gives_it() -> None:
    """A foreground job on a terminal gets SIGINT at its default, whatever the test runner inherited: a runner
    started in the background of a script has SIGINT ignored, children inherit that, and a Ctrl-C a test sends
    would then never reach Python."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_in_pty(
    args: list[str],
    expect: int = 0,
    answer: tuple[bytes, bytes] | None = None,
    rows: int = 24,
    columns: int = 80,
    env: dict[str, str] | None = None,
    stdin: int | None = None,
    react: Callable[[bytes, subprocess.Popen], None] | None = None,
) -> str:
    """Run with stdout and stderr (and stdin, unless given) on a terminal of rows x columns; return what
    the terminal showed, CRLF as LF. With `answer` (prompt, reply), type the reply once the prompt shows;
    `react(shown so far, process)` runs after each read (to send a signal once something shows)."""
    leader, follower = sized_pty(rows, columns)
    process = subprocess.Popen(
        args,
        stdin=follower if stdin is None else stdin,
        stdout=follower,
        stderr=follower,
        close_fds=True,
        env=env,
        preexec_fn=sigint_as_a_terminal_gives_it,
    )
    os.close(follower)
    chunks, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
        if react is not None:
            react(b"".join(chunks), process)
        if answer is not None and answer[0] in b"".join(chunks):
            os.write(leader, answer[1])
            answer = None
    os.close(leader)
    shown = b"".join(chunks).decode("utf-8", errors="replace").replace("\r\n", "\n")
    assert process.wait(timeout=120) == expect, shown
    return shown


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def screen_lines(shown: str) -> list[str]:
    """What a terminal showed as its lines, without ANSI escape sequences."""
    return [ANSI.sub("", line) for line in shown.splitlines()]


def cells(line: str) -> int:
    """How many columns a terminal gives a line: two for a wide character (CJK, most emoji), none for a
    combining mark (unicodedata's East Asian Width, not the code under test's own count)."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line
    )


def plain_env(**extra: str) -> dict[str, str]:
    """This process's environment without COLUMNS and LINES (they would override the window's size)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return {**env, **extra}
