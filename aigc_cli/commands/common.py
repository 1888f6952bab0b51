"""Steps every generating command shares."""

from __future__ import annotations

import secrets
from typing import Any

from ..config import configured
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


def setting(modality: str, key: str, flag: Any, fallback: Any = None) -> Any:
    """The flag when given, else the environment or config.toml, else `fallback` (the registry default)."""
    if flag is not None:
        return flag
    value, _ = configured(modality, key)
    return value if value is not None else fallback
