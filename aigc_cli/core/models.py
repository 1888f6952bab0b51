"""The model a job runs: its registry entry, local folder (checked), device and dtype; library errors named
after it; the engine loaded from the pool with the edge's status shown while it loads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..device import DeviceChoice, pick_device, pick_dtype
from ..errors import AigcError, map_exception
from ..registry import ModelRef, resolve
from .events import Reporter


@dataclass(frozen=True)
class Target:
    """The model a job runs and where: resolved and located before anything heavy loads."""

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
    reporter: Reporter,
    trust_remote_code: bool = False,
    source: str = "",
) -> Target:
    """Resolve the name, find (or fetch) its folder with its modality and weights checked, pick device
    and dtype. Raises ModelUnavailableError (exit 3) or UsageError (exit 2)."""
    ref, folder = find_folder(modality, name, reporter, trust_remote_code, source)
    choice = pick_device(device or "auto")
    chosen, _ = pick_dtype(choice.device, dtype or "auto")
    return Target(ref, folder, choice, chosen)


def find_folder(
    modality: str, name: str, reporter: Reporter, trust_remote_code: bool = False, source: str = ""
) -> tuple[ModelRef, Path]:
    """The model's registry entry and local folder, checked (see loading.locate); Hub errors name it.
    `source` (the resolver's, for the model setting) is named in the error when the name came from the
    environment or config.toml, where the user may not think to look."""
    from ..loading import locate

    try:
        ref = resolve(name, modality)
        with model_errors(name):
            return ref, locate(ref, modality, reporter, trust_remote_code)  # type: ignore[arg-type]
    except AigcError as exc:
        if source.startswith(("environment", "config file")):
            exc.message = f"{exc.message} [the model comes from the {source}]"
        raise


def load(pool: Any, key: Any, reporter: Reporter, text: str, label: str) -> Any:
    """The engine for `key` from `pool`, with the edge's status (`text`) shown while it loads; library
    errors name the model (`label`)."""
    if pool.peek(key) is not None:
        with model_errors(label):
            return pool.get(key)
    with reporter.status(text), model_errors(label):
        return pool.get(key)


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
