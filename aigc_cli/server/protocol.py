"""The wire protocol of `aigc serve`, in one module: request bodies of the OpenAI-compatible API read into
aigc's settings (and the body the CLI's client sends, derived from the same schema), how the record and the
notices travel, and errors in OpenAI's shape with a code the client maps back by type, never by text.

A body holds OpenAI's fields (what the official clients send) and aigc's own settings under the schema's
names (settings.py: the names of the flags and config.toml keys). Both are checked as flags are: an unknown
field, a wrong type or a value out of range is a UsageError naming the field (HTTP 422); nothing here
imports FastAPI, so the rules can be tested without a server.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import AigcError, ExitCode, ModelUnavailableError, UsageError
from ..settings import SCHEMAS, Resolved, check_value, knobs, resolve_settings

MAX_N = 16
"""Most results one request may ask for (`n`): one request must not hold a model for hours."""
MAX_BODY_BYTES = 20 * 1024 * 1024
"""Largest request body (an init image in base64 fits); larger is HTTP 413."""

# OpenAI's voices: a client must name one (the official client requires `voice`); a voice with no speaker of
# that name speaks with its own default speaker.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
    | {"marin", "cedar"}
)
SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class BodyError(UsageError):
    """A body that is not JSON, or not an object (HTTP 400)."""


class RefusedError(AigcError):
    """What the server will not do for a client, whatever the body says (HTTP 403)."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, code: str = "usage") -> None:
        super().__init__(message)
        self.code = code
        """LOCAL_PATH when the request names a path on the client's machine: the CLI runs it there."""


LOCAL_PATH = "local_path"
"""The error code of a refusal that the CLI's client answers by running the request in-process."""

# The settings that travel in a body under their schema names; the rest travel otherwise (model and n under
# OpenAI's names, raw as the route taken) or never (trust_remote_code: the server runs no model's code).
NOT_SENT = {
    "text": {"model", "count", "raw", "trust_remote_code"},
    "image": {"model", "count"},
    "speech": {"model"},
}


def sent_settings(modality: str, resolved: Resolved) -> dict[str, Any]:
    """The settings the client sends: every schema field but NOT_SENT's that this machine's flags,
    environment or config.toml set (defaults and alias defaults are the server's to apply, as a local run
    applies them). Derived from the schema, so a new setting travels without anyone listing it."""
    out = {}
    for name in knobs(SCHEMAS[modality]):
        source = resolved.sources.get(name, "default")
        if name in NOT_SENT[modality] or source == "default" or source.startswith("alias"):
            continue
        out[name] = getattr(resolved.values, name)
    return out


def local_name(name: str) -> str:
    """A model named by a local folder as an absolute path (the server runs elsewhere), else as given."""
    from pathlib import Path

    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def text_request(
    resolved: Resolved, prompt: str, messages: tuple[tuple[str, str], ...] = ()
) -> tuple[str, dict[str, Any]]:
    """(route, body) the client sends for a text run: /v1/completions for a raw prompt, else
    /v1/chat/completions with the conversation (messages, prompt last); streamed."""
    s = resolved.values
    body: dict[str, Any] = {"model": local_name(s.model), "stream": True, **sent_settings("text", resolved)}
    if s.count:
        body["n"] = s.count
    if s.raw:
        body.pop("system", None)  # a configured system message does not apply to a raw prompt
        body["prompt"] = prompt
        return "/v1/completions", body
    turns = messages or (("user", prompt),)
    body["messages"] = [{"role": role, "content": content} for role, content in turns]
    return "/v1/chat/completions", body


def image_request(
    resolved: Resolved, prompt: str, init: bytes | None = None, mask: bytes | None = None
) -> dict[str, Any]:
    """The body the client sends to /v1/images/generations; init and mask: image files, sent as base64."""
    s = resolved.values
    body: dict[str, Any] = {
        "model": local_name(s.model),
        "prompt": prompt,
        "response_format": "b64_json",
        **sent_settings("image", resolved),
    }
    if s.count:
        body["n"] = s.count
    if init is not None:
        body["init_image"] = base64.b64encode(init).decode("ascii")
    if mask is not None:
        body["mask"] = base64.b64encode(mask).decode("ascii")
    return body


def speech_request(resolved: Resolved, text: str, fmt: str) -> dict[str, Any]:
    """The body the client sends to /v1/audio/speech; fmt: wav, flac, ogg or raw (sent as pcm)."""
    body = {"model": local_name(resolved.values.model), "input": text, "response_format": fmt}
    return {**body, "response_format": "pcm" if fmt == "raw" else fmt, **sent_settings("speech", resolved)}


def notices_json(events: list[Any]) -> list[dict[str, str]]:
    """The notices among a job's prepare events, as they travel in the `aigc` object (core.events)."""
    from ..core.events import Notice

    return [event.as_json() for event in events if isinstance(event, Notice)]


@dataclass(frozen=True)
class TextCall:
    resolved: Resolved
    prompt: str
    """The raw prompt (/v1/completions), or the last user message (for records)."""
    messages: tuple[tuple[str, str], ...]
    """The conversation (/v1/chat/completions); empty for a raw prompt."""
    stream: bool
    include_usage: bool


@dataclass(frozen=True)
class ImageCall:
    resolved: Resolved
    prompt: str
    init_png: bytes | None
    """The init image's bytes (an image file), for image-to-image."""
    mask_png: bytes | None = None
    """The inpainting mask's bytes (an image file), with init_png."""


@dataclass(frozen=True)
class SpeechCall:
    resolved: Resolved
    text: str
    response_format: str
    """wav, flac, ogg, or pcm (16-bit little-endian mono, streamed sentence by sentence)."""


@dataclass
class _Body:
    """A body's fields, taken one by one; what is left at the end is unknown."""

    data: dict[str, Any]
    taken: set[str] = field(default_factory=set)

    def take(self, name: str, kinds: tuple[type, ...] | type | None = None, what: str = "") -> Any:
        self.taken.add(name)
        value = self.data.get(name)
        if value is not None and kinds is not None and not _is(value, kinds):
            raise UsageError(f"field '{name}' must be {what} (got {value!r})")
        return value

    def unknown(self) -> list[str]:
        return [name for name in self.data if name not in self.taken]


def _is(value: Any, kinds: tuple[type, ...] | type) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; BodyError (400) otherwise."""
    import json

    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(f"The request body is not valid JSON ({exc}): send a JSON object") from None
    except RecursionError:
        raise BodyError(
            "The request body nests arrays or objects too deeply: send a flat JSON object"
        ) from None
    if not isinstance(data, dict):
        raise BodyError(f"The request body must be a JSON object (got {type(data).__name__})")
    return data


def _settings(modality: str, body: _Body, excluded: set[str], renamed: dict[str, str]) -> dict[str, Any]:
    """The body's aigc settings as the resolver's `flags`. renamed: OpenAI field -> schema field (checked
    under the OpenAI name, so the error names what the client sent)."""
    schema = knobs(SCHEMAS[modality])
    values: dict[str, Any] = {}
    for api_name, name in renamed.items():
        value = body.take(api_name)
        if value is not None:
            if values.get(name) is not None and values[name] != value:
                raise UsageError(f"fields '{api_name}' and '{name}' disagree: give one")
            values[name] = check_value(name, schema[name], value, f"field '{api_name}'")
    for name in schema:
        if name in excluded or name in values:
            continue
        value = body.take(name)
        if value is not None:
            values[name] = value
    if body.take("trust_remote_code") is True:
        raise RefusedError("trust_remote_code cannot be turned on by a request")
    return values


def _check_unknown(body: _Body, endpoint: str) -> None:
    unknown = body.unknown()
    if unknown:
        names = ", ".join(f"'{n}'" for n in unknown)
        raise UsageError(f"Unknown field{'s' if len(unknown) > 1 else ''} {names} for {endpoint}")


def _only_default(body: _Body, name: str, default: Any) -> None:
    """An OpenAI field aigc does not implement: taken at its default (clients send it), refused otherwise."""
    value = body.take(name)
    if value is not None and value != default:
        raise UsageError(f"field '{name}' is not supported (only {default!r})")


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) <= 16:
        return value
    raise UsageError(f"field 'stop' must be a string or a list of up to 16 strings (got {value!r})")


def _common_text(body: _Body) -> tuple[dict[str, Any], bool, bool]:
    flags = _settings(
        "text",
        body,
        excluded={"raw", "count", "model", "stop", "max_tokens"},
        renamed={"n": "count"},
    )
    flags["model"] = body.take("model", str, "a string")
    tokens = body.take("max_completion_tokens")
    legacy = body.take("max_tokens")
    if tokens is not None:  # checked under the name the client sent
        tokens = check_value(
            "max_tokens", knobs(SCHEMAS["text"])["max_tokens"], tokens, "field 'max_completion_tokens'"
        )
    if tokens is not None and legacy is not None and tokens != legacy:
        raise UsageError("fields 'max_tokens' and 'max_completion_tokens' disagree: give one")
    flags["max_tokens"] = tokens if tokens is not None else legacy
    flags["stop"] = _stop(body.take("stop"))
    stream = body.take("stream", bool, "true or false") or False
    options = body.take("stream_options", dict, "an object") or {}
    if set(options) - {"include_usage", "continuous_usage_stats"}:
        raise UsageError(f"field 'stream_options' takes include_usage (got {options!r})")
    include_usage = options.get("include_usage") is True
    body.take("user", str, "a string")
    for name in ("frequency_penalty", "presence_penalty"):
        _only_default(body, name, 0)
    _only_default(body, "logprobs", False)
    _only_default(body, "logit_bias", {})
    return flags, stream, include_usage


def _check_seeds(resolved: Resolved, modality: str) -> None:
    """At most MAX_N results; item i of `n` uses seed + i, so an `n` whose seeds would run past the largest
    is refused before any model loads (core.seeds, naming the fields as the client sent them)."""
    from ..core.seeds import check_seeds

    count = resolved.values.count or 1
    if count > MAX_N:
        raise UsageError(f"field 'n' must be at most {MAX_N} (got {count}): send several requests")
    check_seeds(resolved, modality)


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
            if not isinstance(text, str):
                raise UsageError(f"messages[{index}]: only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise UsageError(f"messages[{index}] needs 'content', a string or a list of text parts")


def parse_chat(data: dict[str, Any]) -> TextCall:
    """POST /v1/chat/completions."""
    body = _Body(data)
    flags, stream, include_usage = _common_text(body)
    messages = body.take("messages")
    if not isinstance(messages, list) or not messages:
        raise UsageError("field 'messages' must be a non-empty list of {role, content} objects")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise UsageError(f"messages[{index}] must be an object with 'role' and 'content'")
        role = {"developer": "system"}.get(message.get("role"), message.get("role"))
        if role not in ("system", "user", "assistant"):
            raise UsageError(f"messages[{index}]: role must be system, user or assistant (got {role!r})")
        if set(message) - {"role", "content", "name"}:
            raise UsageError(f"messages[{index}]: only role and content are supported")
        turns.append((role, _content(message, index)))
    if turns[-1][0] != "user":
        raise UsageError("The last message must be the user's")
    if flags.get("system") is not None and any(role == "system" for role, _ in turns):
        raise UsageError("Give the system message once: in 'messages' or in 'system', not both")
    _only_default(body, "response_format", {"type": "text"})
    _check_unknown(body, "/v1/chat/completions")
    resolved = resolve_settings("text", flags, given_in="request")
    _check_seeds(resolved, "text")
    return TextCall(resolved, turns[-1][1], tuple(turns), stream, include_usage)


def parse_completion(data: dict[str, Any]) -> TextCall:
    """POST /v1/completions: the prompt as it is, no chat template."""
    body = _Body(data)
    flags, stream, include_usage = _common_text(body)
    prompt = body.take("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError("field 'prompt' must be a non-empty string")
    _only_default(body, "echo", False)
    _only_default(body, "best_of", 1)
    _only_default(body, "suffix", None)
    _check_unknown(body, "/v1/completions")
    if flags.get("system") is not None:
        raise UsageError("field 'system' needs the chat template: use /v1/chat/completions")
    flags["raw"] = True
    resolved = resolve_settings("text", flags, given_in="request")
    _check_seeds(resolved, "text")
    return TextCall(resolved, prompt, (), stream, include_usage)


def parse_image(data: dict[str, Any]) -> ImageCall:
    """POST /v1/images/generations."""
    body = _Body(data)
    flags = _settings(
        "image",
        body,
        excluded={"count", "model"},
        renamed={
            "n": "count",
            "negative_prompt": "negative",
            "num_inference_steps": "steps",
            "guidance_scale": "guidance",
        },
    )
    flags["model"] = body.take("model", str, "a string")
    prompt = body.take("prompt", str, "a string")
    if not prompt or not prompt.strip():
        raise UsageError("field 'prompt' must be a non-empty string")
    size = body.take("size", str, "a string such as 512x512")
    if size is not None and size != "auto":
        match = SIZE.match(size)
        if match is None:
            raise UsageError(f"field 'size' must be WIDTHxHEIGHT in pixels, such as 512x512 (got {size!r})")
        for name, value in zip(("width", "height"), map(int, match.groups()), strict=True):
            if flags.get(name) is not None and flags[name] != value:
                raise UsageError(f"fields 'size' and '{name}' disagree: give one")
            flags[name] = check_value(name, knobs(SCHEMAS["image"])[name], value, "field 'size'")
    response_format = body.take("response_format", str, "a string") or "b64_json"
    if response_format != "b64_json":
        raise UsageError("field 'response_format' must be b64_json: this server does not host image URLs")
    _only_default(body, "output_format", "png")
    body.take("user", str, "a string")
    for name in ("quality", "style"):  # DALL-E's; these pipelines have steps and guidance instead
        _only_default(body, name, "auto" if name == "quality" else None)
    init_png, mask_png = (_base64(body, name) for name in ("init_image", "mask"))
    _check_unknown(body, "/v1/images/generations")
    resolved = resolve_settings("image", flags, given_in="request")
    _check_seeds(resolved, "image")
    if resolved.values.strength is not None and init_png is None:
        raise UsageError("field 'strength' needs 'init_image'")
    if mask_png is not None and init_png is None:
        raise UsageError("field 'mask' needs 'init_image': the image to repaint")
    return ImageCall(resolved, prompt, init_png, mask_png)


def _base64(body: _Body, name: str) -> bytes | None:
    """The bytes of an image file sent as a base64 field, or None when absent."""
    text = body.take(name, str, "a base64 string (an image file)")
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"field '{name}' must be base64 (an image file's bytes)") from None


def parse_speech(data: dict[str, Any]) -> SpeechCall:
    """POST /v1/audio/speech."""
    body = _Body(data)
    voice = body.take("voice", str, "a string")
    flags = _settings("speech", body, excluded={"model", "voice"}, renamed={})
    flags["model"] = body.take("model", str, "a string")
    text = body.take("input", str, "a string")
    if not text or not text.strip():
        raise UsageError("field 'input' must be a non-empty string")
    fmt = body.take("response_format", str, "a string") or "wav"
    if fmt not in ("wav", "flac", "ogg", "pcm"):
        raise UsageError(f"field 'response_format' must be wav, flac, ogg or pcm (got {fmt!r})")
    _only_default(body, "stream_format", "audio")
    _only_default(body, "instructions", None)
    _check_unknown(body, "/v1/audio/speech")
    if voice is not None and ("/" in voice or "\\" in voice or voice.endswith(".npy")):
        raise RefusedError("field 'voice' names a file: the server reads no paths a request gives")
    flags["voice"] = voice
    resolved = resolve_settings("speech", flags, given_in="request")
    return SpeechCall(resolved, text, fmt)


ERROR_STATUS: list[tuple[type[AigcError], int, str]] = [
    (BodyError, 400, "invalid_request_error"),
    (RefusedError, 403, "permission_error"),
    (UsageError, 422, "invalid_request_error"),
    (ModelUnavailableError, 404, "not_found_error"),
]
EXIT_CODES = {
    ExitCode.USAGE: "usage",
    ExitCode.MODEL_UNAVAILABLE: "model_unavailable",
    ExitCode.FAILURE: "generation_failed",
    ExitCode.OUTPUT: "generation_failed",
}


def error_body(exc: AigcError) -> tuple[int, dict[str, Any]]:
    """(HTTP status, OpenAI's error JSON) for an aigc error. `code` names aigc's exit code, so that the CLI
    fails as a local run would."""
    status, kind = next(((s, k) for cls, s, k in ERROR_STATUS if isinstance(exc, cls)), (500, "server_error"))
    code = getattr(exc, "code", None) or EXIT_CODES.get(exc.exit_code, "generation_failed")
    return status, error_json(exc.message, kind, code)


def error_json(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
