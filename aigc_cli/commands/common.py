"""Steps every generating command shares."""

from __future__ import annotations

import secrets

from ..console import Console


def pick_seed(seed: int | None, console: Console) -> int:
    """The seed given, or one drawn at random and reported on stderr."""
    if seed is not None:
        return seed
    drawn = secrets.randbelow(2**32)
    console.info(f"aigc: seed {drawn} (drawn at random; --seed {drawn} repeats this run)")
    return drawn
