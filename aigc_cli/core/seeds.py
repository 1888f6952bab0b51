"""Seeds: one rule for every modality. A seed is drawn in `prepare` when none is given (so that every run
has one, recorded and reported), kept in the job, and item i of a run uses seed + i."""

from __future__ import annotations

import secrets

from ..errors import UsageError
from ..settings import SEED_MAX, Resolved, knobs, subject


def check_seeds(resolved: Resolved, modality: str) -> None:
    """Refuse, before any work, a run whose last seed would not be a seed (the libraries take
    0..2**32-1), rather than wrap it into a seed another run already used. The message names the seed and
    the count as the user gave them (flags, config keys, API fields). Raises UsageError (exit 2)."""
    s = resolved.values
    seed, count = s.seed, getattr(s, "count", None) or 1
    if seed is None or seed + count - 1 <= SEED_MAX:
        return
    schema = knobs(type(s))
    seed_name = subject("seed", schema["seed"], resolved.sources.get("seed", "flag"), modality)
    count_source = resolved.sources.get("count", "flag")
    count_name = subject("count", schema["count"], count_source, modality)
    if count_source.startswith("flag"):
        count_name = "-n"
    elif count_source.startswith("request"):
        count_name = "field 'n'"  # OpenAI's name for it
    raise UsageError(
        f"{seed_name} {seed} with {count_name} {count} needs seeds up to {seed + count - 1}, past the "
        f"largest ({SEED_MAX}): use {seed_name} {SEED_MAX - count + 1} or lower"
    )


def draw_seed(seed: int | None, count: int = 1) -> tuple[int, bool]:
    """(the seed given, False), or (one drawn at random so that seed + count - 1 is still a seed, True)."""
    if seed is not None:
        return seed, False
    return secrets.randbelow(SEED_MAX + 2 - count), True
