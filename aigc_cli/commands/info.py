"""`aigc info FILE`: read back what a generated file records."""

from __future__ import annotations

from pathlib import Path

from ..metadata import read_metadata
from ..output import write_json_line, write_text


def run_info(file: str, as_json: bool) -> None:
    record = read_metadata(Path(file))  # a missing file, or one aigc did not write: exit 2, saying which
    if as_json:
        write_json_line(record)
        return
    parameters = record.pop("parameters", None)
    width = max((len(key) for key in record), default=0)
    lines = [f"{key:<{width}}  {value}" for key, value in record.items() if value is not None]
    if parameters:
        lines += ["", parameters]
    write_text("\n".join(lines) + "\n")
