"""The library behind every entry point (the CLI, chat, the server, batch jobs, a Ray worker).

Per modality one `prepare(resolved, prompt, reporter, pool, ...) -> Job` (model, backend, checks, the seed,
the record) and one `run(job, engine) -> Iterator[Event]`; `MODALITIES` names them. The core imports no
Typer, Rich, FastAPI or Ray, never prints and never writes a file: edges render its events.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..settings import SCHEMAS


@dataclass(frozen=True)
class Modality:
    """One row of the modality table."""

    name: str
    settings: type
    """The settings dataclass (settings.py): every knob, its type, range and unit."""
    module: str
    """The core module with `prepare` and `run`."""
    sample_prompt: str
    """What `aigc serve --preload` loads a model with."""

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        return self._module().prepare(*args, **kwargs)

    def run(self, job: Any, engine: Any) -> Iterator[Any]:
        return self._module().run(job, engine)

    def _module(self) -> Any:
        return importlib.import_module(f"{__name__}.{self.module}")


MODALITIES: dict[str, Modality] = {
    "text": Modality("text", SCHEMAS["text"], "text", "Hello"),
    "image": Modality("image", SCHEMAS["image"], "image", "Hello"),
    "speech": Modality("speech", SCHEMAS["speech"], "speech", "Hello."),
}

__all__ = ["MODALITIES", "Modality"]
