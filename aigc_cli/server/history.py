"""The log on `aigc serve`: every generation the server serves becomes one row of AIGC_HOME/logs.db, and
the routes that read it back (the web page's History) and say what a file records (its "What is this
file?").

Logged once: the CLI logs its own runs, through a server too (it keeps the output file's path and hash),
so it sends `X-Aigc-Log: off` and the server leaves those out; every other request (the web page, OpenAI's
and A1111's clients) is logged here, by the server, as command `serve`. A page's chat sends its
conversation's id in `X-Aigc-Conversation`, so that its turns share one, as `aigc chat`'s do.
"""

from __future__ import annotations

import base64
import binascii
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import UsageError
from .protocol import BodyError, error_json
from .state import ServerState

LOG_HEADER = "x-aigc-log"
"""`off`: the client logs this generation itself (the CLI does); the server does not."""
CONVERSATION_HEADER = "x-aigc-conversation"
"""A chat's conversation id (letters, digits, - and _; up to 32), kept in the rows of its turns."""
_CONVERSATION = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MAX_LISTED = 200
"""The most rows one GET /api/logs answers."""


def log_served(
    request: Request,
    modality: str,
    call: Any,
    result: Any,
    data: bytes | None = None,
    prompt: str | None = None,
) -> None:
    """Log one result the server made (a worker thread calls it at each Result): unless the client logs it
    (X-Aigc-Log: off). data: the image's PNG bytes (their size and SHA-256 are kept); prompt: the text
    job's own prompt (one of a /v1/completions list). Never raises: the log's own failures are one warning
    in the server's log (logs.record_entry)."""
    from .. import logs

    if request.headers.get(LOG_HEADER, "").strip().lower() == "off":
        return
    timings = getattr(result, "timings", None) or {}
    seconds = timings.get("seconds", timings.get("compute"))  # speech: the seconds spent synthesizing
    if modality != "text":
        logs.log_generation(
            "serve", modality, result.record, call.resolved.values, seconds=seconds, data=data
        )
        return
    system = call.resolved.values.system
    turns = []
    for role, content in call.messages:
        if role == "system":
            system = content if system is None else system
        else:
            turns.append((role, content))
    given = request.headers.get(CONVERSATION_HEADER, "")
    logs.log_generation(
        "serve",
        "text",
        result.record,
        call.resolved.values,
        prompt=prompt if prompt is not None else call.prompt,
        messages=tuple(turns) if len(turns) > 1 else None,
        conversation=given if _CONVERSATION.match(given) else None,
        turn=sum(1 for role, _ in turns if role == "user") or 1,
        system=system,
        seconds=seconds,
    )


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A row as a client gets it: a file by its name (the path on this machine stays here)."""
    path = row.pop("path", None)
    return {**row, "file": Path(path).name if path else None}


def list_rows(params: dict[str, str]) -> dict[str, Any]:
    """GET /api/logs: {"object": "list", "data": rows newest first, "more": whether older ones match}.
    Query: search (prompts and outputs, as a phrase), modality, limit (1..200, default 50), before (an id:
    rows older than it)."""
    from .. import logs

    modality = params.get("modality") or None
    if modality is not None and modality not in ("text", "image", "speech"):
        raise BodyError(f"modality must be text, image or speech (got '{modality}')", param="modality")
    limit = _number(params, "limit", 50, 1, MAX_LISTED)
    before = _number(params, "before", None, 1, 2**62)
    search = (params.get("search") or "").strip() or None
    rows = logs.search(limit + 1, modality, search, before)
    return {"object": "list", "data": [_shown(r) for r in rows[:limit]], "more": len(rows) > limit}


def _number(params: dict[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise BodyError(f"{name} must be a whole number from {low} to {high} (got '{text[:40]}')", param=name)
    return int(text)


def one_row(log_id: str) -> dict[str, Any] | None:
    """GET /api/logs/{id}: the row, or None (404)."""
    from .. import logs

    return _shown(row) if log_id.isdigit() and (row := logs.find(int(log_id))) is not None else None


_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", 0, ".png"),
    (b"\xff\xd8\xff", 0, ".jpg"),
    (b"WEBP", 8, ".webp"),
    (b"WAVE", 8, ".wav"),
    (b"fLaC", 0, ".flac"),
    (b"OggS", 0, ".ogg"),
    (b"ID3", 0, ".mp3"),
]
"""File kinds by their first bytes: (signature, offset, suffix)."""


def describe_file(body: dict[str, Any]) -> dict[str, Any]:
    """POST /api/describe {"file": base64 (or a data: URL), "name": optional}: {"name", "kind" (image or
    speech...), "record"}: what the file records (metadata.read_metadata, as `aigc info` reads it). A
    file that records nothing of aigc's, or is no image or audio, is a 400 saying so."""
    from ..metadata import read_metadata

    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise BodyError("field 'name' must be a string (the file's name)", param="name")
    name = Path(name).name[:200] if name else "the file"
    text = body.get("file")
    if not isinstance(text, str):
        raise BodyError("field 'file' is required: the file's bytes in base64", param="file")
    unknown = sorted(set(body) - {"file", "name"})
    if unknown:
        raise BodyError(f"Unknown field '{unknown[0]}': send file and name", param=unknown[0])
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BodyError("field 'file' is not base64: send the file's bytes in base64", param="file") from None
    if not data:
        raise BodyError(f"{name} is empty", param="file")
    suffix = next((s for magic, at, s in _MAGIC if data[at : at + len(magic)] == magic), Path(name).suffix)
    with tempfile.TemporaryDirectory(prefix="aigc-describe-") as folder:
        path = Path(folder) / f"upload{suffix[:8]}"
        path.write_bytes(data)
        try:
            record = read_metadata(path)
        except UsageError as exc:
            raise BodyError(exc.message.replace(str(path), name), param="file") from None
    return {"name": name, "kind": record.get("kind"), "record": record}


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Register GET /api/logs, GET /api/logs/{id} and POST /api/describe (create_app calls it; the Guard
    covers them as every route)."""
    from .app import read_body

    @app.get("/api/logs", **describe("logs"))
    async def logs_list(request: Request) -> JSONResponse:
        params = dict(request.query_params)
        return JSONResponse(await run_in_threadpool(list_rows, params))

    @app.get("/api/logs/{log_id}", **describe("log"))
    async def logs_one(log_id: str) -> JSONResponse:
        row = await run_in_threadpool(one_row, log_id)
        if row is None:
            message = f"No generation {log_id} in the log: GET /api/logs lists them"
            return JSONResponse(error_json(message, "invalid_request_error", "not_found"), status_code=404)
        return JSONResponse(row)

    @app.post("/api/describe", **describe("describe"))
    async def describe_route(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(describe_file, await read_body(request)))


_SUMMARIES = {
    "logs": "The generation log, newest first (aigc's own: the web page's History)",
    "log": "One row of the generation log",
    "describe": "What an image or audio file records (aigc's own, as `aigc info`)",
}


def describe(name: str) -> dict[str, Any]:
    """The keyword arguments of route `name`'s registration (as openapi.describe gives the OpenAI routes')."""
    from .openapi import _ERRORS, ERROR, _json

    errors = {"logs": ("400", "401", "403"), "log": ("401", "403", "404"), "describe": ("400", "401", "403")}
    row = {"type": "object", "required": ["id", "time", "command", "modality", "settings"]}
    ok = {
        "logs": {
            "type": "object",
            "required": ["object", "data", "more"],
            "properties": {"data": {"type": "array", "items": row}},
        },
        "log": row,
        "describe": {"type": "object", "required": ["name", "kind", "record"]},
    }[name]
    responses: dict[str | int, Any] = {"200": _json(ok)}
    for status in errors[name]:
        text = "No such row" if (name, status) == ("log", "404") else _ERRORS[status]
        responses[status] = _json(ERROR, text)
    extra: dict[str, Any] | None = None
    if name == "logs":
        query = [
            ("search", {"type": "string"}),
            ("modality", {"enum": ["text", "image", "speech"]}),
            ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LISTED}),
            ("before", {"type": "integer", "minimum": 1}),
        ]
        extra = {"parameters": [{"name": n, "in": "query", "required": False, "schema": s} for n, s in query]}
    if name == "describe":
        body = {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "description": "The file's bytes, base64 (or a data: URL)"},
                "name": {"type": "string", "description": "The file's name, used in messages"},
            },
            "additionalProperties": False,
        }
        extra = {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}
    return {
        "summary": _SUMMARIES[name],
        "responses": responses,
        "openapi_extra": extra,
        "response_model": None,
    }
