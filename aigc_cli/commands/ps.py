"""`aigc ps`: what a running server holds, as `ollama ps` shows it."""

from __future__ import annotations

from typing import Any

from ..errors import GenerationError
from ..output import write_json_line, write_text
from ..server.discovery import find_server
from ..terminal import terminal
from .table import Column, render


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return "-"


def _until(row: dict[str, Any]) -> str:
    if row["in_use"]:
        return "in use"
    if row["unloads_in"] is None:
        return "never"
    return f"in {row['unloads_in']:g} s"


def run_ps(as_json: bool) -> None:
    from ..client import Unreachable, get_json

    server = find_server()
    if server is None:
        raise GenerationError(
            "No aigc server is running here (start one with `aigc serve`, or set AIGC_HOST)"
        )
    try:
        answer = get_json(server, "/api/ps")
    except Unreachable as exc:
        raise GenerationError(f"The server at {server.url} does not answer ({exc})") from None
    rows, replicas = answer["models"], answer.get("replicas")  # replicas: on Ray Serve (aigc serve --ray)
    if as_json:
        for row in [*rows, *(replicas or [])]:
            write_json_line(row)
        return
    if replicas is not None:
        write_text(_replica_table(replicas))
    columns = [
        Column("NAME", give=1, least=12, tail=True),
        Column("MODALITY"),
        Column("BACKEND"),
        Column("DEVICE"),
        Column("DTYPE"),
        Column("SIZE", right=True),
        Column("IDLE", right=True),
        Column("UNLOADS"),
    ]
    if replicas is not None:
        columns.insert(1, Column("REPLICA"))
    cells = []
    for row in rows:
        idle = "-" if row["in_use"] else f"{row['idle_seconds']:.0f} s"
        where = (row["replica"],) if replicas is not None else ()
        cells.append(
            (
                row["model"],
                *where,
                row["modality"],
                row["backend"],
                row["device"],
                row["dtype"],
                _size(row["memory_bytes"]),
                idle,
                _until(row),
            )
        )
    # a terminal's width (a model's folder path cut at its start, keeping its name); whole in a pipe
    write_text("".join(f"{line}\n" for line in render(columns, cells, terminal.columns())))


def _replica_table(replicas: list[dict[str, Any]]) -> str:
    """Ray Serve's replicas per deployment, where each runs, and what it has served (then a blank line)."""
    columns = [
        Column("DEPLOYMENT"),
        Column("REPLICA"),
        Column("NODE"),
        Column("PID", right=True),
        Column("SERVED", right=True),
        Column("RUNNING", right=True),
    ]
    cells = [
        (r["deployment"], r["replica"], r["node"], str(r["pid"]), str(r["served"]), str(r["active"]))
        for r in replicas
    ]
    if not cells:
        return "No replica is running (a deployment scaled to zero starts one on its next request)\n\n"
    return "".join(f"{line}\n" for line in render(columns, cells, terminal.columns())) + "\n"
