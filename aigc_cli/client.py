"""The CLI's side of the server: send `aigc text|image|speak` to a running `aigc serve` and return the
core's events (notices, the seed, text deltas, images, audio) as a local run yields them; the CLI renders
them with the same renderer and writes the files itself, so the bytes and the stderr lines are the same.
This module never writes to stdout or a file.

Standard library HTTP only (http.client): this path imports no torch, transformers, diffusers or httpx.
Each `remote_*` returns None when the request should run locally after all (a stale server record, a
local folder the server does not load), after saying so on stderr.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .console import Console
from .core.events import AudioChunk, Event, Notice, Result, SeedChosen, TextDelta
from .errors import AigcError, ContextFull, ExitCode, GenerationError, UsageError
from .server.discovery import ServerRef
from .server.protocol import LOCAL_PATH, MAX_N, exit_code_for, image_request, speech_request, text_request
from .settings import Resolved

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the server to accept the connection; generation itself has no time limit."""


class Unreachable(Exception):
    """The server does not answer (connection refused, no route)."""


class RunHere(Exception):
    """The server will not run this request (a local path it does not load): run it in-process."""


class RemoteError(AigcError):
    """An error the server answered with, carrying the exit code a local run would have given."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _connect(server: ServerRef) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=CONNECT_TIMEOUT)
    try:
        connection.connect()
    except OSError as exc:
        raise Unreachable(str(exc.strerror or exc)) from exc
    assert connection.sock is not None
    connection.sock.settimeout(None)
    return connection


def request(
    server: ServerRef, method: str, path: str, body: dict[str, Any] | None = None
) -> http.client.HTTPResponse:
    """Send one request; the response (status 200), else the server's error raised as RemoteError (or
    RunHere for a refusal). Raises Unreachable when nothing answers."""
    connection = _connect(server)
    # The CLI logs its own runs (or not: --no-log), with the file it writes: the server must not log them too.
    headers = {"Accept": "*/*", "X-Aigc-Log": "off"}
    if server.api_key:
        headers["Authorization"] = f"Bearer {server.api_key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        raise _died(server, exc) from exc
    if response.status != 200:
        raise _error(server, response)
    return response


def _died(server: ServerRef, exc: BaseException) -> GenerationError:
    why = str(exc) or type(exc).__name__
    return GenerationError(
        f"The server at {server.url} stopped mid-request ({why}): see its log, or run with --local"
    )


def _error(server: ServerRef, response: http.client.HTTPResponse) -> AigcError | RunHere:
    raw = response.read()
    try:
        error = json.loads(raw)["error"]
        message, code = str(error["message"]), error.get("code")
    except (ValueError, KeyError, TypeError):
        # not OpenAI's error JSON, which aigc serve answers with, unless uvicorn cut the request short as
        # the server stopped (a 500 of its own): else something other than aigc listens there
        if response.status == 500:
            return GenerationError(
                f"The server at {server.url} stopped mid-request (it answered HTTP {response.status} "
                f"{response.reason}): see its log, or run with --local"
            )
        remedy = "point AIGC_HOST at `aigc serve` or unset it" if server.source == "AIGC_HOST" else "stop it"
        return GenerationError(
            f"The server at {server.url} ({server.source}) is not an aigc server (it answered HTTP "
            f"{response.status} {response.reason}): {remedy}, or run with --local"
        )
    if response.status == 401:
        if server.api_key:
            return UsageError(f"The server at {server.url} refused the API key in AIGC_API_KEY")
        return UsageError(
            f"The server at {server.url} needs an API key: set AIGC_API_KEY (or run with --local)"
        )
    if code == LOCAL_PATH:
        return RunHere(message)
    if code == ContextFull.code:
        return ContextFull(f"{message} (from the server at {server.url})")
    return RemoteError(f"{message} (from the server at {server.url})", exit_code_for(error))


def get_json(server: ServerRef, path: str) -> Any:
    """GET a JSON document from the server."""
    response = request(server, "GET", path)
    try:
        return json.loads(response.read())
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise _died(server, exc) from exc


def _events(server: ServerRef, response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent event stream, up to `data: [DONE]`; a stream that ends before it
    (the server died) is a GenerationError."""
    try:
        while True:
            line = response.readline()
            if not line:
                raise _died(server, ConnectionError("the stream ended early"))
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                return
            event = json.loads(payload)
            if "error" in event:
                raise _error_event(server, event["error"])
            yield event
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _died(server, exc) from exc


def _error_event(server: ServerRef, error: dict[str, Any]) -> AigcError:
    message = f"{error.get('message')} (from the server at {server.url})"
    if error.get("code") == ContextFull.code:
        return ContextFull(message)
    return RemoteError(message, exit_code_for(error))


def _notices(aigc: Any, resolved: Resolved, modality: str) -> Iterator[Event]:
    """The notices a response's `aigc` object carries (protocol.notices_json), as events; the settings a
    notice names are named as this run's user gave them (a flag, not the request field the server saw)."""
    from dataclasses import replace

    from .settings import knobs, subject

    schema = knobs(type(resolved.values))
    for data in (aigc or {}).get("notices", []) if isinstance(aigc, dict) else []:
        notice = Notice.from_json(data)
        message = notice.message
        for name in notice.settings:
            if name in schema:
                here = subject(name, schema[name], resolved.sources.get(name, "flag"), modality)
                message = message.replace(f"field '{name}'", here)
        yield replace(notice, message=message)


def _send(
    server: ServerRef, console: Console, path: str, body: dict[str, Any], resolved: Resolved
) -> http.client.HTTPResponse | None:
    """Send the request; its response, or None when it should run here after all (said on stderr). A
    model the server cannot find is named with where its name came from, as a local run names it."""
    model, source = resolved.values.model, resolved.sources.get("model", "")
    count = getattr(resolved.values, "count", None) or 1
    if count > MAX_N:  # the server's limit is for clients it does not know; this run is the user's own
        console.note(f"aigc: -n {count} is more than one server request takes ({MAX_N}); running here")
        return None
    try:
        return request(server, "POST", path, body)
    except RemoteError as exc:
        if exc.exit_code == ExitCode.MODEL_UNAVAILABLE and source.startswith(("environment", "config file")):
            exc.message = f"{exc.message} [the model comes from the {source}]"
        raise
    except Unreachable as exc:
        if server.source == "AIGC_HOST":
            raise GenerationError(
                f"Cannot reach the server at {server.url} (AIGC_HOST): {exc}; start it with `aigc serve`, "
                "unset AIGC_HOST, or run with --local"
            ) from None
        console.note(f"aigc: the server in {server.source} does not answer ({exc}); running here")
        return None
    except RunHere:
        console.note(
            f"aigc: the server does not load {model} (a folder it was not started with); running here"
        )
        return None


def _read(server: ServerRef, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:
        raise _died(server, exc) from exc


# --- text ---------------------------------------------------------------------------------------------------


def remote_text(
    server: ServerRef,
    resolved: Resolved,
    prompt: str,
    console: Console,
    messages: tuple[tuple[str, str], ...] = (),
) -> Iterator[Event] | None:
    """Generate through the server (streamed): the events of core.text.run, notices and the seed first; or
    None to run here instead. messages: a conversation to continue (prompt last)."""
    s = resolved.values
    if s.trust_remote_code:
        console.note("aigc: --trust-remote-code runs here: the server never runs a model's own code")
        return None
    path, body = text_request(resolved, prompt, messages)
    console.note(f"aigc: generating on the server at {server.url} ({server.source}); --local runs here")
    response = _send(server, console, path, body, resolved)
    return None if response is None else _text_events(server, response, resolved)


def _text_events(
    server: ServerRef, response: http.client.HTTPResponse, resolved: Resolved
) -> Iterator[Event]:
    seeded, drawn = False, resolved.values.seed is None
    for event in _events(server, response):
        yield from _notices(event.get("aigc"), resolved, "text")
        if not seeded and isinstance(event.get("aigc"), dict) and "seed" in event["aigc"]:
            seeded, seed = True, event["aigc"]["seed"]  # the first chunk's: before the text, as here
            yield SeedChosen(seed or 0, drawn, matters=seed is not None)
        for choice in event.get("choices", []):
            index = choice["index"]
            piece = choice.get("delta", {}).get("content") if "delta" in choice else choice.get("text")
            if piece:
                yield TextDelta(index, piece, 0)
            record = choice.get("aigc")
            if record is None:
                continue
            if not seeded:
                seeded = True
                seed = record.get("seed")
                yield SeedChosen(seed or 0, drawn, matters=seed is not None)
            yield Result(index, record, None, {"seconds": record.get("seconds")})


# --- images -------------------------------------------------------------------------------------------------

TIMINGS = ("seconds", "step_seconds", "decode_seconds")


def remote_image(
    server: ServerRef, resolved: Resolved, prompt: str, inputs: Any, console: Console
) -> Iterator[Event] | None:
    """Generate through the server: the events of core.image.run (but the steps), each Result with a PIL
    image and the record the file will carry; or None to run here (a LoRA or VAE given as a local path:
    the server loads those only from the Hub). inputs: core.image.ImageInputs; the files go as they are,
    and the server decodes them as a local run does."""
    from .adapters import local_parts

    s = resolved.values
    local = local_parts(s.lora, s.vae)
    if local:
        console.note(f"aigc: {local[0][1]} is on this machine: running here, not on the server")
        return None
    if inputs.init is not None:
        from .core.image import decode_init_image, decode_mask

        # Checked here first, so that a file that is not an image fails as a local run fails (named by
        # its path); the server decodes the same bytes the same way.
        init = decode_init_image(inputs.init, inputs.init_what, s.width, s.height)
        if inputs.mask is not None:
            decode_mask(inputs.mask, inputs.mask_what, init)
    body = image_request(resolved, prompt, inputs.init, inputs.mask)
    console.note(f"aigc: generating on the server at {server.url} ({server.source}); --local runs here")
    response = _send(server, console, "/v1/images/generations", body, resolved)
    if response is None:
        return None
    return _image_events(server, response, inputs, resolved)


def _image_events(
    server: ServerRef, response: http.client.HTTPResponse, inputs: Any, resolved: Resolved
) -> Iterator[Event]:
    """The server's image stream (stream with progress) as core.image.run's events: the notices, an
    ImageStep per denoising step (the CLI's bar shows them), a Result per image."""
    from PIL import Image

    from .core.events import ImageStep
    from .credentials import signed_png

    drawn = resolved.values.seed is None
    index = 0
    for event in _events(server, response):
        kind = event.get("type", "")
        if kind == "aigc.notices":
            yield from _notices({"notices": event["notices"]}, resolved, "image")
        elif kind == "aigc.image.step":
            yield ImageStep(event["index"], event["step"], event["total"])
        elif kind.endswith(".completed"):
            record = dict(event["aigc"])
            timings = {name: record.pop(name) for name in TIMINGS if name in record}
            record.pop("vae_retried", None)
            if index == 0:
                yield SeedChosen(record["seed"], drawn)
            record["init_image"] = inputs.init_name if record.get("init_image") is not None else None
            if record.get("mask") is not None:
                record["mask"] = inputs.mask_name
            png = _read(server, lambda e=event: base64.b64decode(e["b64_json"]))
            image = _read(server, lambda png=png: Image.open(io.BytesIO(png)))
            # A signed PNG is written as the server made it: encoding it again would break its credential.
            yield Result(index, record, image, timings, png if signed_png(png) else None)
            index += 1


# --- speech -------------------------------------------------------------------------------------------------


def remote_speech(
    server: ServerRef, resolved: Resolved, text: str, fmt: str, console: Console
) -> Iterator[Event] | None:
    """Speak through the server: notices, the seed, AudioChunks (raw PCM bytes, as it streams), and one
    Result holding the file the server encoded (Result.data); or None to run here. fmt: wav, flac, ogg or
    raw."""
    body = speech_request(resolved, text, fmt)
    if isinstance(body.get("voice"), str) and Path(body["voice"]).expanduser().is_file():
        console.note("aigc: --voice names a file here: running here")
        return None
    wire = body["response_format"]
    console.note(f"aigc: speaking on the server at {server.url} ({server.source}); --local runs here")
    response = _send(server, console, "/v1/audio/speech", body, resolved)
    return None if response is None else _speech_events(server, response, text, wire, resolved)


def _speech_events(
    server: ServerRef, response: http.client.HTTPResponse, text: str, wire: str, resolved: Resolved
) -> Iterator[Event]:
    from .engines.speech import clean_text

    drawn = resolved.values.seed is None
    header = _read(server, lambda: json.loads(response.getheader("x-aigc-record") or ""))
    notices = _read(server, lambda: json.loads(response.getheader("x-aigc-notices") or "[]"))
    yield from _notices({"notices": notices}, resolved, "speech")
    record = {}
    for key, value in header.items():
        record[key] = value
        if key == "kind":
            record["text"] = clean_text(text)[0]  # what the voice read, as a local run records it
    yield SeedChosen(record["seed"], drawn)
    rate = record["sample_rate"]
    if wire == "pcm":
        pieces = []
        while piece := _read(server, lambda: response.read1(65536)):
            pieces.append(piece)
            yield AudioChunk(len(pieces) - 1, piece, rate, 0.0)
        data = b"".join(pieces)
        yield Result(0, record, None, {"duration": len(data) / 2 / rate, "compute": None}, data)
        return
    data = _read(server, response.read)
    timings = {
        "duration": float(response.getheader("x-aigc-duration") or 0),
        "compute": float(response.getheader("x-aigc-compute-seconds") or 0),
    }
    yield Result(0, record, None, timings, data)


def ping(server: ServerRef) -> bool:
    """Whether the server answers /health."""
    try:
        get_json(server, "/health")
    except (TimeoutError, Unreachable, AigcError):
        return False
    return True
