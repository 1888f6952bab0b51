"""The FastAPI app: OpenAI-compatible routes over the core.

Each route reads its body into aigc's settings (protocol.py), finds and loads the engine through the same
`core.*.prepare` step the CLI runs, leases the engine for one generation at a time (pool.py), and
answers in OpenAI's shapes with aigc's record added (`aigc`). Generation runs in worker threads, so that
/health, /v1/models and /api/ps answer while it runs; a client that goes away mid-stream stops its
generation at the next token or sentence.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import AigcError, failure_of
from .page import is_open
from .protocol import (
    MAX_BODY_BYTES,
    BodyError,
    error_body,
    error_json,
    media_type,
    notices_json,
    parse_chat,
    parse_completion,
    parse_image,
    parse_speech,
)
from .state import ServerState


def _json_error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


class Guard:
    """ASGI middleware in front of every route: the Host header (DNS rebinding), the API key (401,
    compared in constant time), and the declared body size (413)."""

    def __init__(self, app: Any, api_key: str | None, hosts: set[str] | None) -> None:
        self.app = app
        self.api_key = api_key
        self.hosts = hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.problem(headers, scope.get("path", ""))
        if problem is not None:
            status, message, kind, code = problem
            if "100-continue" not in headers.get("expect", "").lower():  # else the body is not on its way
                await _drop_body(receive, _declared(headers))
            extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            await _json_error(status, error_json(message, kind, code), extra)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def problem(self, headers: dict[str, str], path: str) -> tuple[int, str, str, str | None] | None:
        """(status, message, OpenAI error type, code) of a request refused before its route, else None.
        /health needs no key: a load balancer's probe carries none, and it says only that the server is up."""
        if self.hosts is not None:
            host = _hostname(headers.get("host", ""))
            if host not in self.hosts:
                return (
                    403,
                    f"Host '{headers.get('host', '')}' is not a name this server is bound to "
                    f"(it answers to {', '.join(sorted(self.hosts))})",
                    "permission_error",
                    None,
                )
        if self.api_key is not None and not is_open(path):  # /health, and the web page's files
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), self.api_key.encode()
            ):
                return (
                    401,
                    "This server needs an API key: send `Authorization: Bearer KEY` (the CLI: AIGC_API_KEY)",
                    "invalid_request_error",
                    "invalid_api_key",
                )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return (
                413,
                f"The request body is over {MAX_BODY_BYTES // 2**20} MB",
                "invalid_request_error",
                "request_too_large",
            )
        return None


DROP_BYTES = 4 * MAX_BODY_BYTES
"""A refused body up to this size is read and dropped before the answer: a client that sends the whole body
before it reads (urllib; any with `Connection: close`) then gets the error, not a connection reset (closing
a socket with unread bytes resets it). A larger one is not read: the connection is closed."""


def _declared(headers: dict[str, str]) -> int:
    """The body's declared size: Content-Length, or 0 when there is none (a chunked body)."""
    length = headers.get("content-length", "")
    return int(length) if length.isdigit() else 0


async def _drop_body(receive: Any, declared: int) -> None:
    """Read and drop the request body, up to DROP_BYTES (none if it declares more)."""
    if declared > DROP_BYTES:
        return
    size = 0
    while size <= DROP_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def read_body(request: Request) -> dict[str, Any]:
    """The JSON object of the body; 413 past MAX_BODY_BYTES even without a Content-Length."""
    from .protocol import parse_json

    raw = await _read_limited(request)
    if not raw:
        raise BodyError("The request body is empty: send a JSON object")
    return parse_json(raw)


async def _read_limited(request: Request) -> bytes:
    """The body's bytes; _TooLarge (413) past MAX_BODY_BYTES, even without a Content-Length (the rest is
    read and dropped, up to DROP_BYTES)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DROP_BYTES:
            break
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
    if size > MAX_BODY_BYTES:
        raise _TooLarge()
    return b"".join(chunks)


async def read_form(request: Request) -> tuple[dict[str, str], bytes | None, bytes | None]:
    """A multipart/form-data body (POST /v1/images/edits, as OpenAI's images.edit sends it): (its text
    fields, the `image` file's bytes, the `mask` file's bytes); 413 past MAX_BODY_BYTES, BodyError (400) for
    a body that is not multipart or cannot be parsed."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BodyError(
            "Send the edit as multipart/form-data (image, mask, prompt...), as OpenAI's images.edit does"
        )
    raw = await _read_limited(request)

    async def body() -> AsyncIterator[bytes]:
        yield raw

    try:
        form = await MultiPartParser(request.headers, body(), max_files=4, max_fields=200).parse()
    except (MultiPartException, UnicodeDecodeError, ValueError) as exc:
        raise BodyError(
            f"The multipart body cannot be read ({exc}): send the fields as OpenAI's images.edit does"
        ) from None
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for name, value in form.multi_items():
        key = name.removesuffix("[]")  # image[] as gpt-image clients send it
        if isinstance(value, UploadFile):
            if key in files:
                raise BodyError(f"Send one '{key}' file (got several)", param=key)
            files[key] = await value.read()
        elif key in fields:
            raise BodyError(f"Send field '{key}' once (got it twice)", param=key)
        else:
            fields[key] = value
    unknown = sorted(set(files) - {"image", "mask"})
    if unknown:
        raise BodyError(
            f"field '{unknown[0]}' is not a file this route takes: image and mask", param=unknown[0]
        )
    return fields, files.get("image"), files.get("mask")


class _TooLarge(Exception):
    pass


_END = object()
_QUIET = object()
_CHECK_EVERY = 0.5
"""Seconds between checks that the client is still there, while a generation runs."""


async def from_thread(request: Request, produce: Callable[[Callable[[Any], None], threading.Event], None]):
    """Items `produce(emit, cancelled)` emits from a worker thread, as an async iterator. When the client
    goes away (the iterator is closed or cancelled), `cancelled` is set: produce stops at its next item."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancelled = threading.Event()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (the server is stopping)
            cancelled.set()

    def run() -> None:
        try:
            produce(put, cancelled)
        except BaseException as exc:
            put(exc)
        finally:
            put(_END)

    threading.Thread(target=run, name="aigc-generation", daemon=True).start()
    checked = loop.time()
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=_CHECK_EVERY)
            except TimeoutError:
                item = _QUIET
            # checked by the clock, not only when the queue is quiet: tokens come faster than _CHECK_EVERY
            if loop.time() - checked >= _CHECK_EVERY:
                checked = loop.time()
                if await request.is_disconnected():
                    return
            if item is _QUIET:
                continue
            if item is _END:
                return
            yield item
    finally:
        cancelled.set()


def create_app(
    state: ServerState,
    api_key: str | None = None,
    hosts: set[str] | None = None,
    cors_origins: list[str] | None = None,
    mcp_out_dir: str | None = None,
) -> FastAPI:
    """The app over `state`. hosts: the Host names accepted (None: any); cors_origins: origins a browser
    page may call from (none by default: no Access-Control-Allow-Origin is sent); mcp_out_dir: where the MCP
    tools at /mcp save files (None: AIGC_HOME/outputs)."""
    from .openapi import describe

    app = FastAPI(title="aigc", version=__version__, docs_url=None, redoc_url=None)

    @app.exception_handler(AigcError)
    async def aigc_error(request: Request, exc: AigcError) -> JSONResponse:
        status, body = error_body(exc, request.url.path)
        wait = getattr(exc, "retry_after", None)  # 503: when to try again
        return _json_error(status, body, {"Retry-After": str(wait)} if wait else None)

    @app.exception_handler(_TooLarge)
    async def too_large(request: Request, exc: _TooLarge) -> JSONResponse:
        message = f"The request body is over {MAX_BODY_BYTES // 2**20} MB"
        return _json_error(413, error_json(message, "invalid_request_error", "request_too_large"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        path = request.url.path
        message = {
            404: f"No route {request.method} {path} (GET /openapi.json lists them)",
            405: f"{request.method} is not allowed on {path}",
        }
        body = error_json(message.get(exc.status_code, str(exc.detail)), "invalid_request_error")
        return _json_error(exc.status_code, body, exc.headers)  # 405: Allow, the methods the route takes

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error = failure_of(exc, None)
        state.console.info(f"aigc: error: {error.message}")
        status, body = error_body(error, request.url.path)
        return _json_error(status, body)

    @app.api_route("/health", methods=["GET", "HEAD"], **describe("health"))  # probes may send HEAD
    async def health() -> JSONResponse:
        if state.loading.is_set():
            return JSONResponse({"status": "loading", "version": __version__}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/v1/models", **describe("models"))
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": await run_in_threadpool(_model_list, state)}

    @app.get("/v1/models/{model_id:path}", **describe("model"))
    async def model(model_id: str) -> dict[str, Any]:
        return await run_in_threadpool(_one_model, state, model_id)

    @app.get("/v1/audio/voices", **describe("voices"))
    async def voices(model: str | None = None) -> dict[str, Any]:
        from .voices import voice_list

        return await run_in_threadpool(voice_list, state.loaded(), model)

    @app.get("/api/ps", **describe("ps"))
    async def ps() -> dict[str, Any]:
        return {
            "models": await run_in_threadpool(state.loaded),
            "keep_alive": state.keep_alive,
            "batches": await run_in_threadpool(state.batch_sizes),
            **await run_in_threadpool(state.cluster),
        }

    @app.post("/v1/chat/completions", **describe("chat"))
    async def chat(request: Request) -> Response:
        return await _text(state, request, parse_chat(await read_body(request)), chat=True)

    @app.post("/v1/completions", **describe("completions"))
    async def completions(request: Request) -> Response:
        return await _text(state, request, parse_completion(await read_body(request)), chat=False)

    @app.post("/v1/images/generations", **describe("images"))
    async def images(request: Request) -> Response:
        return await _images(state, request, parse_image(await read_body(request)))

    @app.post("/v1/images/edits", **describe("edits"))
    async def edits(request: Request) -> Response:
        from .protocol import parse_image_edit

        return await _images(state, request, parse_image_edit(*await read_form(request)))

    @app.post("/v1/audio/speech", **describe("speech"))
    async def speech(request: Request) -> Response:
        return await _speech(state, request, parse_speech(await read_body(request)))

    from .a1111 import add_routes  # AUTOMATIC1111's /sdapi/v1 routes

    add_routes(app, state)
    from . import history, page  # the log's routes and "what is this file"; the web page at /

    history.add_routes(app, state)
    page.add_routes(app)
    from pathlib import Path

    from ..mcp.server import mount  # MCP's streamable HTTP at /mcp, where the mcp SDK is installed

    mount(app, state, Path(mcp_out_dir) if mcp_out_dir else None)

    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(Guard, api_key=api_key, hosts=hosts)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    else:
        app.add_middleware(Guard, api_key=api_key, hosts=hosts)
    return app


def _model_list(state: ServerState) -> list[dict[str, Any]]:
    """/v1/models' rows: ServerState.models() in OpenAI's shape."""
    created = int(time.time())
    return [{**row, "object": "model", "created": created, "owned_by": "aigc"} for row in state.models()]


def _one_model(state: ServerState, model_id: str) -> dict[str, Any]:
    """GET /v1/models/{id} (the client's models.retrieve): the row of /v1/models with that id, or with the
    name an alias stands for (`joe` is piper-joe, as the routes take it), under the id asked for; 404
    model_not_found naming the list otherwise."""
    from ..errors import UnknownModelError
    from ..registry import lookup

    spec = lookup(model_id)
    for row in _model_list(state):
        if row["id"] == model_id or (spec is not None and row["id"] == spec.name):
            return {**row, "id": model_id}
    raise UnknownModelError(
        f"No model '{model_id}' on this server: GET /v1/models lists the ones it serves", model_id
    )


def request_reporter(state: ServerState) -> Any:
    """A request's Reporter (ServerState.reporter)."""
    return state.reporter()


def _log_ignored(state: ServerState, route: str, ignored: tuple[str, ...]) -> None:
    """The advisory fields a body held (protocol.ADVISORY), named in the server's log with -v."""
    if ignored:
        state.console.note(
            f"aigc: {route}: ignored field{'s' if len(ignored) > 1 else ''} {', '.join(ignored)}"
        )


async def _collect(
    request: Request, produce: Callable[[Callable[[Any], None], threading.Event], None]
) -> list:
    """Every item `produce` emits (from_thread), for a response sent whole; the first exception is raised.
    A client that goes away stops the work at its next step (token, image step, sentence)."""
    items = []
    async for item in from_thread(request, produce):
        if isinstance(item, BaseException):
            raise item
        items.append(item)
    return items


# --- text ---------------------------------------------------------------------------------------------------


async def _text(state: ServerState, request: Request, call: Any, chat: bool) -> Response:
    from ..core.events import Result, TextDelta
    from .history import log_served

    _log_ignored(state, request.url.path, call.ignored)
    state.check_model(call.resolved)
    reporter = request_reporter(state)
    prompts = call.prompts or (call.prompt,)
    runs = []
    for prompt in prompts:
        runs.append(
            await run_in_threadpool(
                partial(state.start, "text", call.resolved, prompt, reporter, messages=call.messages)
            )
        )
    jobs = [run.job for run in runs]
    per_prompt = jobs[0].count
    # the seed up front (the records carry it at the end): a client shows it before the text, as a local run
    seed = jobs[0].request.seed if jobs[0].sampling else None
    notices = {"notices": notices_json(reporter.events), "seed": seed}
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    label = jobs[0].label
    base = {"id": ident, "created": created, "model": label, "system_fingerprint": f"aigc-{__version__}"}

    def produce(emit: Callable[[Any], None], cancelled: threading.Event) -> None:
        """(choice index, event) for every event of every prompt's job, in order."""
        made = 0
        try:
            for number, (job, run) in enumerate(zip(jobs, runs, strict=True)):
                with run.events() as events:
                    for event in events:
                        if cancelled.is_set():
                            state.console.info(
                                f"aigc: the client went away: stopped {job.label} after {made} tokens"
                            )
                            return
                        if isinstance(event, TextDelta):
                            made = event.tokens
                        elif isinstance(event, Result):
                            log_served(request, "text", call, event, prompt=prompts[number])
                        index = number * per_prompt + getattr(event, "index", 0)
                        emit((index, event))
        finally:
            state.after_request()

    if not call.stream:
        results = [(i, e) for i, e in await _collect(request, produce) if isinstance(e, Result)]
        choices = [
            {
                "index": index,
                **(
                    {"message": {"role": "assistant", "content": r.payload.text, "refusal": None}}
                    if chat
                    else {"text": r.payload.text}
                ),
                "finish_reason": r.payload.finish_reason,
                "logprobs": None,
                "aigc": r.record,
            }
            for index, r in results
        ]
        return JSONResponse(
            {
                **base,
                "object": "chat.completion" if chat else "text_completion",
                "choices": choices,
                "usage": _usage(r.payload for _, r in results),
                "aigc": notices,
            }
        )

    kind = "chat.completion.chunk" if chat else "text_completion"

    async def events() -> AsyncIterator[bytes]:
        done = []
        for index in range(len(jobs) * per_prompt):
            first = {"role": "assistant", "content": ""} if chat else ""
            chunk = {**base, "object": kind, "choices": [_choice(index, first, None, chat)]}
            yield _sse({**chunk, "aigc": notices} if index == 0 else chunk)
        async for item in from_thread(request, produce):
            if isinstance(item, BaseException):
                yield _sse_failure(state, request, item, label)
                break
            index, event = item
            if isinstance(event, TextDelta):
                delta = {"content": event.text} if chat else event.text
                yield _sse({**base, "object": kind, "choices": [_choice(index, delta, None, chat)]})
            elif isinstance(event, Result):
                done.append(event.payload)
                last = _choice(index, {} if chat else "", event.payload.finish_reason, chat)
                yield _sse({**base, "object": kind, "choices": [{**last, "aigc": event.record}]})
        else:
            if call.include_usage:
                yield _sse({**base, "object": kind, "choices": [], "usage": _usage(done)})
            yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _choice(index: int, delta: Any, finish: str | None, chat: bool) -> dict[str, Any]:
    if chat:
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {"index": index, "text": delta, "finish_reason": finish, "logprobs": None}


def _usage(completions: Any) -> dict[str, int]:
    done = list(completions)
    prompt = sum(c.prompt_tokens for c in done)
    generated = sum(c.completion_tokens for c in done)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def _sse_failure(state: ServerState, request: Request, exc: BaseException, model: str | None) -> bytes:
    """The event that ends a stream cut by a failure (mid-stream there is no status to send): OpenAI's
    error JSON, the failure said in the server's log too."""
    error = failure_of(exc, model)
    state.console.info(f"aigc: error: {error.message}")
    return _sse(error_body(error, request.url.path)[1])


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


# --- images -------------------------------------------------------------------------------------------------


async def _images(state: ServerState, request: Request, call: Any) -> Response:
    from ..core import image as core_image
    from ..core.events import ImageStep, Notice, Result
    from ..output import encode_image, image_file
    from .history import log_served

    _log_ignored(state, request.url.path, call.ignored)
    state.check_model(call.resolved)
    inputs = core_image.ImageInputs(
        init=call.init_png,
        init_name="request body" if call.init_png is not None else None,
        init_what=f"field '{call.fields[0]}'",
        mask=call.mask_png,
        mask_name="request body" if call.mask_png is not None else None,
        mask_what=f"field '{call.fields[1]}'",
        fields=(f"'{call.fields[0]}'", f"field '{call.fields[1]}'"),
        params=call.fields,
    )
    reporter = request_reporter(state)
    previews = call.partial_images or 0
    run = await run_in_threadpool(
        partial(state.start, "image", call.resolved, call.prompt, reporter, previews, inputs=inputs)
    )
    job = run.job

    def produce(emit: Callable[[Any], None], cancelled: threading.Event) -> None:
        """Each image's data entry as it is done; stops at the next denoising step once the client has gone
        (closing the events waits for that step, so the engine never runs two jobs), or once POST
        /sdapi/v1/interrupt stopped it (the images made are answered); /sdapi/v1/progress follows it."""
        from .a1111 import image_jobs

        kind = request.url.path.rsplit("/", 1)[-1]
        try:
            with (
                run.events() as events,
                image_jobs(state).track(kind, job, reporter, state.console) as tracked,
            ):
                for event in events:
                    if cancelled.is_set():
                        step = f" at step {event.step}" if isinstance(event, ImageStep) else ""
                        state.console.info(f"aigc: the client went away: stopped {job.label}{step}")
                        return
                    if tracked.stops(event):
                        return
                    if isinstance(event, Notice):
                        reporter.emit(event)
                    if isinstance(event, ImageStep) and event.preview is not None:
                        emit(("partial", event.index, encode_image(event.preview, "PNG", {})))
                    if isinstance(event, ImageStep) and call.progress:
                        emit(("step", event.index, (event.step, event.total)))
                    if not isinstance(event, Result):
                        continue
                    # marked, and signed when configured: the last write (clients keep these bytes)
                    png = image_file(event.payload, "PNG", event.record, call.init_png)
                    log_served(request, "image", call, event, png)
                    entry = {
                        "b64_json": base64.b64encode(png).decode("ascii"),
                        "revised_prompt": None,
                        "aigc": {**event.record, **event.timings},
                    }
                    emit(("image", event.index, entry))
        finally:
            state.after_request()

    if call.stream:
        return StreamingResponse(
            _image_events(state, request, produce, job, call, reporter), media_type="text/event-stream"
        )
    data = [item[2] for item in await _collect(request, produce) if item[0] == "image"]
    return JSONResponse(
        {"created": int(time.time()), "data": data, "aigc": {"notices": notices_json(reporter.events)}}
    )


async def _image_events(
    state: ServerState, request: Request, produce: Callable[..., None], job: Any, call: Any, reporter: Any
) -> AsyncIterator[bytes]:
    """OpenAI's image stream: `image_generation.partial_image` (image_edit.* on the edits route) for each
    preview, `...completed` with each final image (and its record in `aigc`). An error ends the stream with
    OpenAI's error JSON. With `progress` (aigc's own): `aigc.notices` first and last, an `aigc.image.step`
    per step, and [DONE] at the end."""
    told = len(reporter.events)
    if call.progress:
        yield _sse({"type": "aigc.notices", "notices": notices_json(reporter.events)})
    kind = "image_edit" if call.fields[0] == "image" else "image_generation"
    size = f"{job.request.width}x{job.request.height}" if job.request.width else "auto"
    common = {"background": "opaque", "output_format": "png", "quality": "auto", "size": size}
    partials: dict[int, int] = {}
    async for item in from_thread(request, produce):
        if isinstance(item, BaseException):
            yield _sse_failure(state, request, item, job.label)
            return
        what, index, payload = item
        now = int(time.time())
        if what == "step":
            yield _sse({"type": "aigc.image.step", "index": index, "step": payload[0], "total": payload[1]})
        elif what == "partial":
            number = partials.get(index, 0)
            partials[index] = number + 1
            b64 = base64.b64encode(payload).decode("ascii")
            yield _sse({"type": f"{kind}.partial_image", "b64_json": b64, "created_at": now,
                        "partial_image_index": number, **common})  # fmt: skip
        else:
            usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                     "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}  # fmt: skip
            yield _sse({"type": f"{kind}.completed", "b64_json": payload["b64_json"], "created_at": now,
                        "usage": usage, "aigc": payload["aigc"], **common})  # fmt: skip
    if call.progress:
        yield _sse({"type": "aigc.notices", "notices": notices_json(reporter.events[told:])})
        yield b"data: [DONE]\n\n"


# --- speech -------------------------------------------------------------------------------------------------


async def _speech(state: ServerState, request: Request, call: Any) -> Response:
    from ..core.events import AudioChunk, Result
    from ..output import check_encoder, encode_audio, pcm16
    from .history import log_served

    _log_ignored(state, request.url.path, call.ignored)
    state.check_model(call.resolved)
    if call.response_format != "pcm":
        check_encoder(call.response_format)  # aac needs PyAV: said before any work
    reporter = request_reporter(state)
    run = await run_in_threadpool(
        partial(state.start, "speech", call.resolved, call.text, reporter, fallback_said="note")
    )
    job = run.job
    # The record rides in a header without the text (the client has it; a header is no place for a book).
    headers = {
        "x-aigc-record": json.dumps({k: v for k, v in job.record.items() if k != "text"}, ensure_ascii=True),
        "x-aigc-sample-rate": str(job.record["sample_rate"]),
        "x-aigc-notices": json.dumps(notices_json(reporter.events), ensure_ascii=True),
    }
    streamed = call.response_format == "pcm"

    def produce(emit: Callable[[Any], None], cancelled: threading.Event) -> None:
        """pcm: 16-bit chunks sentence by sentence; else the one Result. Stops at the next sentence once the
        client has gone."""
        try:
            with run.events() as events:
                for event in events:
                    if cancelled.is_set():
                        return
                    if isinstance(event, Result):
                        log_served(request, "speech", call, event)
                    if streamed and isinstance(event, AudioChunk):
                        emit(pcm16(event.samples))
                    elif not streamed and isinstance(event, Result):
                        emit(event)
        finally:
            state.after_request()

    if call.sse:

        async def deltas() -> AsyncIterator[bytes]:
            async for item in from_thread(request, produce):
                if isinstance(item, BaseException):
                    yield _sse_failure(state, request, item, job.label)
                    return
                yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(item).decode("ascii")})
            # no `usage`: these voices count no tokens; the record (less the text) says what was made
            yield _sse(
                {"type": "speech.audio.done", "aigc": {k: v for k, v in job.record.items() if k != "text"}}
            )

        return StreamingResponse(
            deltas(), media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"}
        )

    if streamed:

        async def audio() -> AsyncIterator[bytes]:
            async for item in from_thread(request, produce):
                if isinstance(item, BaseException):
                    # Mid-stream there is no status to send: end the stream short, and say why in the log.
                    state.console.info(f"aigc: error: {failure_of(item, job.label).message}")
                    return
                yield item

        return StreamingResponse(audio(), media_type=media_type("pcm"), headers=headers)

    results = await _collect(request, produce)
    if not results:  # the client went away
        return Response(status_code=499)
    (result,) = results
    rate = result.record["sample_rate"]
    data = await run_in_threadpool(encode_audio, result.payload, rate, call.response_format, job.record)
    headers["x-aigc-compute-seconds"] = f"{result.timings['compute']:.4f}"
    headers["x-aigc-duration"] = f"{result.timings['duration']:.4f}"
    return Response(data, media_type=media_type(call.response_format), headers=headers)
