"""The `aigc` console script: Ctrl-C is handled before anything else is imported (see interrupts.py)."""

from __future__ import annotations


def main() -> None:
    from .interrupts import exit_at_once

    exit_at_once()
    from .cli import main as run

    run()
