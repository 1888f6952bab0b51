"""Steps every generating command shares."""

from __future__ import annotations

import secrets

from ..console import Console


def pick_seed(seed: int | None, console: Console) -> int:
    """The seed given, or one drawn at random and reported on stderr."""
    if seed is not None:
        return seed
    drawn = secrets.randbelow(2**32)
    report_seed(drawn, console)
    return drawn


def report_seed(seed: int, console: Console) -> None:
    console.info(f"aigc: seed {seed} (drawn at random; --seed {seed} repeats this run)")
