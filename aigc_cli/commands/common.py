"""Steps every generating command shares: the seed, the model's folder and device, errors named after it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..console import Console
from ..device import DeviceChoice, pick_device, pick_dtype
from ..errors import AigcError, UsageError, map_exception
from ..loading import locate
from ..registry import ModelRef, resolve
from ..settings import SEED_MAX


def check_seeds(seed: int | None, count: int) -> None:
    """Item i of a run uses seed + i: refuse, before any work, a run whose last seed would not be a seed
    (the libraries take 0..2**32-1), rather than wrap it into a seed another run already used."""
    if seed is not None and seed + count - 1 > SEED_MAX:
        raise UsageError(
            f"--seed {seed} with -n {count} needs seeds up to {seed + count - 1}, past the largest "
            f"({SEED_MAX}): use --seed {SEED_MAX - count + 1} or lower"
        )


def pick_seed(seed: int | None, console: Console, count: int = 1) -> int:
    """The seed given, or one drawn at random (so that seed + count - 1 is still a seed) and reported."""
    if seed is not None:
        return seed
    drawn = secrets.randbelow(SEED_MAX + 2 - count)
    report_seed(drawn, console)
    return drawn


def report_seed(seed: int, console: Console) -> None:
    console.info(f"aigc: seed {seed} (drawn at random; --seed {seed} repeats this run)")


@dataclass(frozen=True)
class Target:
    """The model a command runs and where: resolved and located before anything heavy loads."""

    ref: ModelRef
    folder: Path
    device: DeviceChoice
    dtype: str
    """float32, float16 or bfloat16."""


def find_model(
    modality: str,
    name: str,
    device: str | None,
    dtype: str | None,
    console: Console,
    trust_remote_code: bool = False,
    source: str = "",
) -> Target:
    """Resolve the name, find (or fetch) its folder with its modality and weights checked, pick device
    and dtype. Raises ModelUnavailableError (exit 3) or UsageError (exit 2)."""
    ref, folder = find_folder(modality, name, console, trust_remote_code, source)
    choice = pick_device(device or "auto")
    chosen, _ = pick_dtype(choice.device, dtype or "auto")
    return Target(ref, folder, choice, chosen)


def find_folder(
    modality: str, name: str, console: Console, trust_remote_code: bool = False, source: str = ""
) -> tuple[ModelRef, Path]:
    """The model's registry entry and local folder, checked (see loading.locate); Hub errors name it.
    `source` (the resolver's, for the model setting) is named in the error when the name came from the
    environment or config.toml, where the user may not think to look."""
    try:
        ref = resolve(name, modality)
        with model_errors(name):
            return ref, locate(ref, modality, console, trust_remote_code)
    except AigcError as exc:
        if source.startswith(("environment", "config file")):
            exc.message = f"{exc.message} [the model comes from the {source}]"
        raise


def loading(console: Console, pool: Any, key: Any, text: str) -> AbstractContextManager[None]:
    """The console's status line while `key` loads into `pool`; nothing when it is loaded already."""
    return console.status(text) if pool.peek(key) is None else nullcontext()


@contextmanager
def model_errors(model: str) -> Iterator[None]:
    """Library exceptions raised while loading or running `model` become AigcErrors that name it."""
    try:
        yield
    except AigcError:
        raise
    except Exception as exc:
        mapped = map_exception(exc, model)
        if mapped is None:
            raise
        raise mapped from exc
