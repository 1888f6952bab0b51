"""The command line's own numbers (`aigc logs -n`, `aigc serve --port`, `aigc batch --workers`...) checked
in the words settings.py checks a setting in: one line naming the flag, "--count must be at least 1 (got
0)", exit 2 (a UsageError, which cli.main prints). Typer's own min/max answer in pydantic's words ("Input
should be greater than or equal to 1"), and an option with them is converted through pydantic
(cli._light_conversion converts the others)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from .errors import UsageError


def in_range(low: int | None = None, high: int | None = None) -> Callable[[typer.CallbackParam, Any], Any]:
    """A Typer option callback that lets a value within [low, high] (None: no bound) through."""

    def check(param: typer.CallbackParam, value: Any) -> Any:
        if value is None:
            return value
        flag = max(param.opts, key=len)  # the long name, as settings.py names a flag whichever was typed
        if low is not None and value < low:
            raise UsageError(f"{flag} must be at least {low} (got {value})")
        if high is not None and value > high:
            raise UsageError(f"{flag} must be at most {high} (got {value})")
        return value

    return check


def ranged_option(*names: str, low: int | None = None, high: int | None = None, **kwargs: Any) -> Any:
    """A typer.Option (names and keywords as typer.Option takes them) for an integer within [low, high]: a
    value outside it is a usage error naming the flag. The help says a range only where it is worth saying,
    as a setting's does."""
    return typer.Option(*names, callback=in_range(low, high), **kwargs)
