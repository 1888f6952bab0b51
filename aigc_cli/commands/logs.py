"""`aigc logs`: list and search the log of generations, show one, run one again, switch the log off and on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..console import Console
from ..errors import UsageError
from ..output import write_json_line, write_text
from ..terminal import terminal
from .table import Column, render

MODALITIES = ("text", "image", "speech")


def run_list(
    count: int, modality: str | None, query: str | None, as_json: bool, console: Console | None = None
) -> None:
    """The newest `count` generations (of one modality; matching a full-text query), newest first: a table
    (table.py: fitted to a terminal, whole in a pipe) or JSON lines. `console` says when there are none."""
    from .. import logs

    console = console or Console()
    if modality is not None and modality not in MODALITIES:
        raise UsageError(f"Unknown modality '{modality}': use text, image or speech")
    if not logs.log_path().exists():
        console.info(f"aigc: no generations logged yet ({logs.log_path()})")
        return
    rows = logs.search(count, modality, query)
    if as_json:
        for row in rows:
            write_json_line(row)
        return
    if not rows:
        console.info("aigc: no generations logged" + (f" match '{query}'" if query else ""))
        return
    lines = render(COLUMNS, [_cells(row) for row in rows], terminal.columns())
    write_text("".join(f"{line}\n" for line in lines))


COLUMNS = (
    Column("ID", right=True),
    Column("TIME"),
    Column("COMMAND"),
    Column("MODEL", give=1),
    Column("CONVERSATION"),
    Column("PROMPT", give=2),
    Column("OUTPUT", give=2),
)
"""The list's columns: on a terminal, the model, prompt and output give way; the id, time, command and
conversation (the id `--cid` takes, for a row of one; else -) stay whole."""
INTERRUPTED = "[interrupted] "


def _cells(row: Any) -> tuple[object, ...]:
    """One row of the list: the time without its year and seconds (UTC), the model and a file by their
    names; a reply stopped part way (status interrupted) starts with [interrupted]. `logs show` has it all."""
    output = Path(row["path"]).name if row["path"] else row["output"]
    if row["status"] == "interrupted":
        output = INTERRUPTED + (output or "")
    model = Path(row["model"] or "").name or row["model"] or "-"
    when = (row["time"] or "")[5:16].replace("T", " ")
    return (row["id"], when, row["command"], model, row["conversation"] or "-", row["prompt"], output)


def _one(entry: str) -> dict[str, Any]:
    from .. import logs

    if not entry.isdigit():
        raise UsageError(f"'{entry}' is not a log id: `aigc logs` lists them")
    with logs.reading():  # no log yet: says so
        row = logs.find(int(entry))
    if row is None:
        raise UsageError(f"No generation {entry} in the log: `aigc logs` lists them")
    return row


def run_show(entry: str, as_json: bool) -> None:
    row = _one(entry)
    if as_json:
        write_json_line(row)
        return
    for name, value in row.items():
        if value is None:
            continue
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
        write_text(f"{name}: {shown}\n")


def run_rerun(entry: str, out: str | None, console: Console) -> None:
    """The same generation again: the same model, settings and seed (so the same text, pixels, samples)."""
    row = _one(entry)
    flags = dict(row["settings"]["flags"])
    flags.pop("count", None)  # a row is one result
    if row["modality"] == "text":
        from .text import TextOptions, run_text

        turns = tuple(tuple(m) for m in row["messages"] or ())[:-1]
        if out is not None:
            raise UsageError("-o is for images and audio: text goes to stdout")
        run_text(TextOptions(row["prompt"], flags, local=True, history=turns or None), console)
    elif row["modality"] == "image":
        from .image import ImageOptions, run_image

        if row["settings"]["record"].get("init_image"):
            masked = " --mask MASK" if row["settings"]["record"].get("mask") else ""
            raise UsageError(
                f"Generation {entry} started from an init image, which the log does not keep: "
                f"run `aigc image --from {row['path']} --init-image FILE{masked}`"
            )
        run_image(ImageOptions(row["prompt"], flags, out, local=True), console)
    else:
        from .speak import SpeakOptions, run_speak

        run_speak(SpeakOptions(row["prompt"], flags, out, local=True), console)


def run_switch(state: str) -> None:
    """`aigc logs on|off|status`."""
    from .. import logs

    marker = logs.off_marker()
    if state == "off":
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("Logging is off: `aigc logs on` turns it on again.\n")
    elif state == "on":
        marker.unlink(missing_ok=True)
    path = logs.log_path()
    count = 0
    if path.exists():
        with logs.reading() as db:
            count = db.execute("SELECT count(*) FROM generations").fetchone()[0]
    write_text(f"logging {'on' if logs.enabled() else 'off'}: {path} ({count} generations)\n")
