"""The CLI's side of the server: send `aigc text|image|speak` to a running `aigc serve` and write the result
here, as a local run writes it (same bytes for the same seed and settings).

Standard library HTTP only (http.client): this path imports no torch, transformers, diffusers or httpx.
Each `remote_*` returns a false value when the request should run locally after all (a stale server
record, a local folder the server does not load), after saying so on stderr.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..console import Console, StepBar
from ..errors import AigcError, ExitCode, GenerationError, UsageError
from ..interrupts import raising
from ..settings import Resolved
from .discovery import ServerRef

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


CODES = {
    "usage": ExitCode.USAGE,
    "model_unavailable": ExitCode.MODEL_UNAVAILABLE,
    "generation_failed": ExitCode.FAILURE,
}


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
    headers = {"Accept": "*/*"}
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
        message, kind, code = str(error["message"]), error.get("type"), error.get("code")
    except (ValueError, KeyError, TypeError):
        message, kind, code = f"HTTP {response.status} {response.reason}", None, None
    if response.status == 401:
        if server.api_key:
            return UsageError(f"The server at {server.url} refused the API key in AIGC_API_KEY")
        return UsageError(
            f"The server at {server.url} needs an API key: set AIGC_API_KEY (or run with --local)"
        )
    if kind == "permission_error" and response.status == 403 and "local path" in message:
        return RunHere(message)
    return RemoteError(f"{message} (from the server at {server.url})", CODES.get(code, ExitCode.FAILURE))


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


def _error_event(server: ServerRef, error: dict[str, Any]) -> RemoteError:
    code = CODES.get(error.get("code"), ExitCode.FAILURE)
    return RemoteError(f"{error.get('message')} (from the server at {server.url})", code)


def _sent(resolved: Resolved, names: tuple[str, ...]) -> dict[str, Any]:
    """The settings this machine's flags, environment and config.toml set (alias defaults are the server's
    to apply, as a local run applies them)."""
    out = {}
    for name in names:
        source = resolved.sources.get(name, "default")
        if source == "default" or source.startswith("alias"):
            continue
        out[name] = getattr(resolved.values, name)
    return out


def _model_name(name: str) -> str:
    """A local folder as an absolute path (the server runs elsewhere), else the name as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def _run(server: ServerRef, console: Console, call: Callable[[], Any], model: str) -> Any:
    """Run `call` against the server; None when it should run here after all (said on stderr)."""
    try:
        return call()
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


# --- text ---------------------------------------------------------------------------------------------------

TEXT_FIELDS = (
    "system",
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "stop",
    "seed",
    "device",
    "dtype",
    "backend",
    "precision",
)


def remote_text(
    server: ServerRef,
    resolved: Resolved,
    prompt: str,
    stream: bool,
    as_json: bool,
    console: Console,
    messages: tuple[tuple[str, str], ...] = (),
) -> list[dict[str, Any]] | None:
    """Generate through the server, writing to stdout as `aigc text` does: the completions' records
    (`--json` lines), or None to run here instead. messages: a conversation to continue (prompt last)."""
    from ..output import end_text, write_json_line, write_text

    s = resolved.values
    if s.trust_remote_code:
        console.note("aigc: --trust-remote-code runs here: the server never runs a model's own code")
        return None
    body: dict[str, Any] = {"model": _model_name(s.model), "stream": True, **_sent(resolved, TEXT_FIELDS)}
    if s.raw:
        body.pop("system", None)  # a configured system message does not apply to a raw prompt
        path, body["prompt"] = "/v1/completions", prompt
    else:
        turns = messages or (("user", prompt),)
        path = "/v1/chat/completions"
        body["messages"] = [{"role": role, "content": content} for role, content in turns]
    if s.count:
        body["n"] = s.count
    console.note(f"aigc: generating on the server at {server.url} ({server.source}); --local runs here")

    def call() -> list[dict[str, Any]]:
        response = request(server, "POST", path, body)
        texts: dict[int, str] = {}
        records: list[dict[str, Any]] = []
        reported = False

        def begin(index: int) -> None:
            """Completions after the first start on a line of their own, as a local run prints them."""
            if index not in texts:
                texts[index] = ""
                if index > 0 and not as_json:
                    write_text("\n")

        with raising():
            for event in _events(server, response):
                for choice in event.get("choices", []):
                    index = choice["index"]
                    piece = (
                        choice.get("delta", {}).get("content") if "delta" in choice else choice.get("text")
                    )
                    if piece and stream:
                        begin(index)
                        texts[index] += piece
                        if not as_json:
                            write_text(piece)
                    record = choice.get("aigc")
                    if record is None:
                        continue
                    records.append(record)
                    if s.seed is None and record.get("seed") is not None and not reported:
                        from ..commands.common import report_seed

                        report_seed(record["seed"], console)
                        reported = True
                    if as_json:
                        write_json_line(record)
                        continue
                    begin(index)
                    if not stream:
                        write_text(record["text"])
                    end_text(record["text"])
        return records

    return _run(server, console, call, s.model)


# --- images -------------------------------------------------------------------------------------------------

IMAGE_FIELDS = (
    "negative",
    "steps",
    "guidance",
    "width",
    "height",
    "scheduler",
    "strength",
    "low_memory",
    "lora",
    "vae",
    "seed",
    "device",
    "dtype",
    "backend",
)
TIMINGS = ("seconds", "step_seconds", "decode_seconds", "vae_retried")


def remote_image(
    server: ServerRef,
    resolved: Resolved,
    prompt: str,
    images: tuple[Callable[[], Any] | None, str | None, Callable[[Any], Any] | None, str | None],
    plan: Any,
    as_json: bool,
    console: Console,
    log: Callable[..., None] | None = None,
) -> bool:
    """Generate through the server and write each image here, with its record, as `aigc image` does;
    log(record, path, seconds) for each (logs.py). images: (load_init, init_name, load_mask, mask_name)
    as prepare_image takes them. False (run here) for a LoRA or VAE given as a local path: the server
    loads those only from the Hub."""
    from ..commands.image import write_image

    load_init, init_name, load_mask, mask_name = images
    s = resolved.values
    from ..adapters import local_parts

    local = local_parts(s.lora, s.vae)
    if local:
        console.note(f"aigc: {local[0][1]} is on this machine: running here, not on the server")
        return False
    body: dict[str, Any] = {
        "model": _model_name(s.model),
        "prompt": prompt,
        "response_format": "b64_json",
        **_sent(resolved, IMAGE_FIELDS),
    }
    if s.count:
        body["n"] = s.count
    if load_init is not None:
        buffer = io.BytesIO()
        load_init().save(buffer, format="PNG")  # lossless: the server gets these very pixels
        body["init_image"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        if load_mask is not None:
            buffer = io.BytesIO()
            load_mask(load_init()).save(buffer, format="PNG")
            body["mask"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    console.note(f"aigc: generating on the server at {server.url} ({server.source}); --local runs here")

    def call() -> bool:
        from PIL import Image

        response = request(server, "POST", "/v1/images/generations", body)
        try:
            data = json.loads(response.read())["data"]
        except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:
            raise _died(server, exc) from exc
        for index, item in enumerate(data):
            record = dict(item["aigc"])
            timings = {name: record.pop(name) for name in TIMINGS if name in record}
            if timings.pop("vae_retried", False):
                console.warn("the VAE gave NaNs (a black image); decoded again in float32")
            if s.seed is None and index == 0:
                from ..commands.common import report_seed

                report_seed(record["seed"], console)
            record["init_image"] = init_name
            if record.get("mask") is not None:
                record["mask"] = mask_name
            image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
            with raising():
                write_image(image, index, record, plan, as_json, timings, StepBar(console, 0, ""), log)
        return True

    return bool(_run(server, console, call, s.model))


# --- speech -------------------------------------------------------------------------------------------------

SPEECH_FIELDS = ("voice", "speed", "sentence_silence", "seed", "device", "dtype")


def remote_speech(
    server: ServerRef, resolved: Resolved, text: str, plan: Any, as_json: bool, console: Console
) -> tuple[Path | None, bytes, dict[str, Any], float | None] | None:
    """Speak through the server and write the audio here as `aigc speak` does: (the path written or
    None, the encoded bytes, the record, compute seconds) for --play and the log; None to run here."""
    from ..commands.common import report_seed
    from ..commands.speak import report_audio
    from ..output import write_atomic, write_binary

    s = resolved.values
    fields = _sent(resolved, SPEECH_FIELDS)
    if isinstance(fields.get("voice"), str) and Path(fields["voice"]).expanduser().is_file():
        console.note("aigc: --voice names a file here: running here")
        return None
    fmt = "pcm" if plan.format == "raw" else plan.format
    body = {"model": _model_name(s.model), "input": text, "response_format": fmt, **fields}
    console.note(f"aigc: speaking on the server at {server.url} ({server.source}); --local runs here")

    def call() -> tuple[Path | None, bytes, dict[str, Any], float | None]:
        response = request(server, "POST", "/v1/audio/speech", body)
        try:
            header = json.loads(response.getheader("x-aigc-record") or "")
        except ValueError as exc:
            raise _died(server, exc) from exc
        record = {}
        for key, value in header.items():
            record[key] = value
            if key == "kind":
                record["text"] = text
        if s.seed is None:
            report_seed(record["seed"], console)
        rate = record["sample_rate"]
        path = plan.path(0, text, record["seed"])
        try:
            if fmt == "pcm":
                console.info(f"aigc: raw PCM: {rate} Hz, 16-bit signed little-endian (S16_LE), mono")
                chunks = []
                with raising():
                    while piece := response.read1(65536):
                        if plan.to_stdout:
                            write_binary(piece)
                        else:
                            chunks.append(piece)
                data = b"".join(chunks)
                duration = None if plan.to_stdout else len(data) / 2 / rate
                compute = None  # not timed apart from the streaming
            else:
                data = response.read()
                duration = float(response.getheader("x-aigc-duration") or 0)
                compute = float(response.getheader("x-aigc-compute-seconds") or 0)
        except (OSError, http.client.HTTPException) as exc:
            raise _died(server, exc) from exc
        with raising():
            if plan.to_stdout and fmt != "pcm":
                write_binary(data)
            elif path is not None:
                write_atomic(path, data)
        report_audio(plan, duration, record, path, compute, as_json, None)
        return path, data, record, compute

    return _run(server, console, call, s.model)


def ping(server: ServerRef) -> bool:
    """Whether the server answers /health."""
    try:
        get_json(server, "/health")
    except (TimeoutError, Unreachable, AigcError):
        return False
    return True
