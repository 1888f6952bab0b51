"""Prompt input (argument, "-", stdin) and stdout handling, closed pipes included."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .terminal import terminal

if TYPE_CHECKING:
    from .console import Console


def read_prompt(argument: str | None, use_stdin: bool = True, console: Console | None = None) -> str:
    """stdin first (when it is "-" or not a terminal), then the argument, joined by a newline.

    use_stdin False (--no-stdin, or AIGC_NO_STDIN=1: for loops such as `while read f; do aigc text "$f";
    done < list`, where stdin is the loop's file): the argument alone. With `console`, reading stdin is
    said with -v, and a spinner shows on a terminal while a pipe stays silent past a second.
    An empty result is a usage error.
    """
    from .settings import FALSEHOOD, TRUTH

    setting = os.environ.get("AIGC_NO_STDIN", "").strip().lower()
    if setting and setting not in TRUTH | FALSEHOOD:
        raise UsageError(f"AIGC_NO_STDIN must be 1 or 0 (true/false, yes/no, on/off; got '{setting}')")
    use_stdin = use_stdin and setting not in TRUTH
    if argument == "-" and not use_stdin:
        raise UsageError("The prompt '-' means stdin, which --no-stdin (or AIGC_NO_STDIN) turns off")
    parts: list[str] = []
    if not use_stdin:
        reads_stdin = False
    elif argument == "-":
        reads_stdin = True
    elif argument is None:
        reads_stdin = not terminal.stdin()
    else:  # both: stdin first, but only from a pipe or a file, never an idle inherited one
        reads_stdin = not terminal.stdin() and _stdin_has_data()
    if reads_stdin:
        if console is not None and argument not in (None, "-"):
            console.note("aigc: reading stdin first, then the prompt argument (--no-stdin skips stdin)")
        parts.append(_read_stdin(console))
    if argument is not None and argument != "-":
        parts.append(as_text(argument))
    prompt = "\n".join(p for p in parts if p.strip())
    if not prompt.strip():
        if not use_stdin and not terminal.stdin():
            raise UsageError(
                "The prompt is empty: give it as an argument (stdin is left alone: --no-stdin, AIGC_NO_STDIN)"
            )
        raise UsageError("The prompt is empty: give it as an argument, or pipe it in on stdin")
    return prompt


def read_bytes(source: str, what: str) -> bytes:
    """The bytes of a file, or of stdin for '-'; UsageError naming `what` (the flag or field) when the file
    is missing or cannot be read."""
    from pathlib import Path

    if source != "-" and not Path(source).is_file():
        raise UsageError(f"No such file: {source} ({what})")
    try:
        return sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read {source} ({what}): {exc.strerror or exc}") from exc


def as_text(argument: str) -> str:
    """An argument with bytes that are not UTF-8 (Python keeps them as lone surrogates) decoded as stdin
    is: each bad byte becomes U+FFFD."""
    return argument.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")


def _read_stdin(console: Console | None = None) -> str:
    if sys.stdin is None:
        return ""
    if not hasattr(sys.stdin, "buffer"):  # replaced by a test or an embedding program
        return sys.stdin.read().rstrip("\n")
    waiting = contextlib.nullcontext()
    # a pipe that stays silent (`sleep 20 | aigc text hi`); not a terminal, where the user is typing
    if console is not None and console.live and not terminal.stdin() and not _ready(sys.stdin, 1.0):
        waiting = console.status("Waiting for stdin (--no-stdin or AIGC_NO_STDIN=1 skips it)")
    with waiting:
        data = sys.stdin.buffer.read()
    return data.decode("utf-8", errors="replace").rstrip("\n")


def _ready(stream: Any, seconds: float) -> bool:
    """Whether `stream` has data (or its end) within `seconds`; True when that cannot be told."""
    import select

    try:
        return bool(select.select([stream], [], [], seconds)[0])
    except (OSError, ValueError, TypeError):
        return True


def _stdin_has_data() -> bool:
    """With a prompt argument, read stdin only when it is a pipe or a file, not an idle inherited one."""
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def silence_stdout() -> None:
    """After the reader closed the pipe: point stdout at /dev/null so the final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def lone_surrogate(data: Any) -> tuple[str, str, int] | None:
    """The first string in parsed JSON (keys too) holding half a UTF-16 pair (a `"\\ud800"` escape alone:
    Python keeps it, and it is no character: it cannot be encoded, tokenized or logged), as (its path,
    `messages[0].content`, with a key that is itself not text spelled with its escape; the escape, `\\ud800`;
    its index in the text); None when all is text. Iterative: JSON nests as deep as json.loads allows."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if (found := _SURROGATE.search(value)) is not None:
                return path, f"\\u{ord(found.group()):04x}", found.start()
        elif isinstance(value, dict):
            for key in value:
                if (found := _SURROGATE.search(key)) is not None:
                    shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                    return _joined(path, shown), f"\\u{ord(found.group()):04x}", found.start()
            stack.extend((_joined(path, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{path}[{n}]", v) for n, v in reversed(list(enumerate(value))))
    return None


def surrogate_problem(path: str, escape: str, at: int) -> str:
    """What lone_surrogate found, in words: `'prompt' is not text: ...` and the remedy."""
    return (
        f"'{path}' is not text: it holds a lone surrogate ({escape} at character {at + 1}), half of a UTF-16 "
        "pair; write the character itself, or both halves of its pair"
    )


def _joined(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_SURROGATE = re.compile("[\ud800-\udfff]")
