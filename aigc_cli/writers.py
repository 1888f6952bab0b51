"""Payload output: text streamed to stdout, JSON lines."""

from __future__ import annotations

import json
import sys
from typing import Any

from .errors import PipeClosed


def write_text(text: str) -> None:
    """Write and flush at once, so that a pipe sees each token as it comes."""
    if text:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError as exc:
            raise PipeClosed() from exc


def end_text(text: str) -> None:
    """Finish one completion with a newline unless it ends with one."""
    if not text.endswith("\n"):
        write_text("\n")


def write_json_line(record: dict[str, Any]) -> None:
    write_text(json.dumps(record, ensure_ascii=False) + "\n")
