"""`aigc info FILE`: read back what a generated file records."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..metadata import read_metadata
from ..output import write_json_line, write_text


def run_info(file: str, as_json: bool) -> None:
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"No such file: {file}")
    record = read_metadata(path)
    if as_json:
        write_json_line(record)
        return
    parameters = record.pop("parameters", None)
    width = max(len(key) for key in record)
    lines = [f"{key:<{width}}  {value}" for key, value in record.items() if value is not None]
    if parameters:
        lines += ["", parameters]
    write_text("\n".join(lines) + "\n")
