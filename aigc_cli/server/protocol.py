"""The wire protocol of `aigc serve`, in one module: request bodies of the OpenAI-compatible API read into
aigc's settings (and the body the CLI's client sends, derived from the same schema), how the record and the
notices travel, and errors in OpenAI's shape with a code the client maps back by type, never by text.

A body holds OpenAI's fields (what the official clients send) and aigc's own settings under the schema's
names (settings.py: the names of the flags and config.toml keys). Both are checked as flags are: an unknown
field, a wrong type or a value out of range is a UsageError naming the field (HTTP 400, OpenAI's
`invalid_request_error` with `param` set); nothing here imports FastAPI, so the rules can be tested
without a server.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import AigcError, ExitCode, ModelUnavailableError, UsageError, WrongModalityError
from ..settings import SCHEMAS, Resolved, check_value, knobs, resolve_settings
from ..streams import lone_surrogate, surrogate_problem

MAX_N = 16
"""Most results one request may ask for (`n`): one request must not hold a model for hours."""
MAX_BODY_BYTES = 20 * 1024 * 1024
"""Largest request body (an init image in base64 fits); larger is HTTP 413."""

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class BodyError(UsageError):
    """A body that is not JSON, or not an object (HTTP 400)."""


class RefusedError(AigcError):
    """What the server will not do for a client, whatever the body says (HTTP 403)."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        """LOCAL_PATH when the request names a path on the client's machine: the CLI runs it there."""
        self.param = param


class UnavailableError(AigcError):
    """The server cannot run this now, and a retry soon may (HTTP 503 with Retry-After): on Ray Serve, the
    replica running the request was lost (server/ray_state.py)."""

    code = "replica_lost"
    retry_after = 2
    """Seconds a client is asked to wait: about the time Ray Serve takes to start a replacement."""


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
        "stream": True,  # with progress: the steps as they go, for the CLI's bar
        "progress": True,
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


def media_type(fmt: str) -> str:
    """Content-Type of a /v1/audio/speech response_format (OpenAI's; opus in an Ogg container)."""
    from ..output import AUDIO_MEDIA_TYPES

    return "audio/pcm" if fmt == "pcm" else AUDIO_MEDIA_TYPES[fmt]


def notices_json(events: list[Any]) -> list[dict[str, str]]:
    """The notices among a job's prepare events, as they travel in the `aigc` object (core.events)."""
    from ..core.events import Notice

    return [event.as_json() for event in events if isinstance(event, Notice)]


ADVISORY = {
    "user",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "reasoning_effort",
    "prediction",
    "safety_identifier",
    "prompt_cache_key",
    "moderation",
}
"""OpenAI fields that clients send by default and that do not change what a model makes here (an end user's
id, storage and billing hints, a latency hint): accepted and ignored (the server's log names them with -v)."""


@dataclass(frozen=True)
class TextCall:
    resolved: Resolved
    prompt: str
    """The raw prompt (/v1/completions; the first of `prompts`), or the last user message (for records)."""
    messages: tuple[tuple[str, str], ...]
    """The conversation (/v1/chat/completions); empty for a raw prompt."""
    stream: bool
    include_usage: bool
    prompts: tuple[str, ...] = ()
    """/v1/completions: every prompt of the list, in order (choice index = prompt index * n + i)."""
    ignored: tuple[str, ...] = ()
    """The advisory fields the body held (ADVISORY), ignored."""


@dataclass(frozen=True)
class ImageCall:
    resolved: Resolved
    prompt: str
    init_png: bytes | None
    """The init image's bytes (an image file), for image-to-image."""
    mask_png: bytes | None = None
    """The inpainting mask's bytes (an image file, white repaints), with init_png."""
    ignored: tuple[str, ...] = ()
    fields: tuple[str, str] = ("init_image", "mask")
    """The API fields the two images came in, as errors about them name them."""
    stream: bool = False
    """Server-sent events: partial images (previews) as they come, then each image when done."""
    partial_images: int = 0
    """Previews per image while streaming (0-3), as OpenAI's partial_images."""
    progress: bool = False
    """aigc's own, with stream: an aigc.image.step event per denoising step and the notices as
    aigc.notices events, the stream ending with [DONE] (what `aigc image` through a server reads)."""


@dataclass(frozen=True)
class SpeechCall:
    resolved: Resolved
    text: str
    response_format: str
    """One of SPEECH_FORMATS: pcm is 16-bit little-endian mono, streamed sentence by sentence."""
    ignored: tuple[str, ...] = ()
    sse: bool = False
    """stream_format "sse": the pcm as OpenAI's speech.audio.delta events (base64), then speech.audio.done."""


SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm", "ogg")
"""OpenAI's response formats for /v1/audio/speech (mp3 its default), and ogg (Vorbis), aigc's own."""


@contextmanager
def field_named(param: str) -> Iterator[None]:
    """A UsageError raised inside is about API field `param` (when it names none yet)."""
    try:
        yield
    except UsageError as exc:
        if exc.param is None:
            exc.param = param
        if exc.code is None:
            exc.code = "invalid_value"
        raise


def _invalid(message: str, param: str, code: str = "invalid_value") -> UsageError:
    return UsageError(message, param=param, code=code)


@dataclass
class _Body:
    """A body's fields, taken one by one; what is left at the end is unknown."""

    data: dict[str, Any]
    taken: set[str] = field(default_factory=set)

    def take(self, name: str, kinds: tuple[type, ...] | type | None = None, what: str = "") -> Any:
        self.taken.add(name)
        value = self.data.get(name)
        if value is not None and kinds is not None and not _is(value, kinds):
            raise _invalid(f"field '{name}' must be {what} (got {_json(value)})", name, "invalid_type")
        return value

    def advisory(self, names: set[str] = ADVISORY) -> tuple[str, ...]:
        """Take the advisory fields present; their names."""
        present = tuple(sorted(n for n in names if n in self.data))
        self.taken.update(present)
        return present

    def unknown(self) -> list[str]:
        return [name for name in self.data if name not in self.taken]


def _json(value: Any) -> str:
    """A value as the client wrote it (JSON: true, null, "text"), cut at 80 characters."""
    import json

    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
    bad = lone_surrogate(data)
    if bad is not None:
        raise BodyError(f"field {surrogate_problem(*bad)}", param=bad[0], code="invalid_value")
    return data


def _settings(modality: str, body: _Body, excluded: set[str], renamed: dict[str, str]) -> dict[str, Any]:
    """The body's aigc settings as the resolver's `flags`, each checked under the name the client sent.
    renamed: OpenAI field -> schema field."""
    schema = knobs(SCHEMAS[modality])
    values: dict[str, Any] = {}
    for name in schema:
        if name in excluded:
            continue
        value = body.take(name)
        if value is not None:
            with field_named(name):
                values[name] = check_value(name, schema[name], value, f"field '{name}'")
    for api_name, name in renamed.items():
        value = body.take(api_name)
        if value is None:
            continue
        with field_named(api_name):
            value = check_value(name, schema[name], value, f"field '{api_name}'")
        if values.get(name) is not None and values[name] != value:
            raise _invalid(f"fields '{api_name}' and '{name}' disagree: give one", api_name)
        values[name] = value
    if body.take("trust_remote_code") is True:
        raise RefusedError("trust_remote_code cannot be turned on by a request", param="trust_remote_code")
    return values


def _check_unknown(body: _Body, endpoint: str) -> None:
    unknown = body.unknown()
    if unknown:
        names = ", ".join(f"'{n}'" for n in unknown)
        raise _invalid(
            f"Unknown field{'s' if len(unknown) > 1 else ''} {names} for {endpoint} (the README's "
            "compatibility table lists the fields aigc takes)",
            unknown[0],
            "unknown_parameter",
        )


def _only_default(body: _Body, name: str, default: Any, instead: str = "") -> None:
    """An OpenAI field aigc does not implement: taken at its default (clients send it), refused otherwise
    (it would change the result, so it is never silently dropped)."""
    value = body.take(name)
    if value is not None and value != default:
        also = f": {instead}" if instead else ""
        raise _invalid(
            f"field '{name}' is not supported (only {_json(default)}; got {_json(value)}){also}",
            name,
            "unsupported_value",
        )


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) <= 16:
        return value
    raise _invalid(
        f"field 'stop' must be a string or a list of up to 16 strings (got {_json(value)})", "stop"
    )


def _tools(body: _Body) -> None:
    """Tools (and the older functions) only with a choice of none: aigc's models do not call tools, and a
    client that offers them expects a call or an answer that knows of them."""
    for tools_name, choice_name in (("tools", "tool_choice"), ("functions", "function_call")):
        tools = body.take(tools_name)
        choice = body.take(choice_name)
        if choice is not None and choice != "none" and choice != "auto":
            raise _invalid(
                f"field '{choice_name}' is not supported (got {_json(choice)}): aigc's models do not call "
                f"tools; send \"none\" or leave '{tools_name}' out",
                choice_name,
                "unsupported_value",
            )
        if tools and choice != "none":
            raise _invalid(
                f"field '{tools_name}' is not supported: aigc's models do not call tools; leave it out, or "
                f"send '{choice_name}': \"none\"",
                tools_name,
                "unsupported_parameter",
            )


def _common_text(body: _Body, chat: bool) -> tuple[dict[str, Any], bool, bool]:
    flags = _settings(
        "text",
        body,
        excluded={"raw", "count", "model", "stop", "max_tokens"},
        renamed={"n": "count"},
    )
    flags["model"] = body.take("model", str, "a string")
    tokens = body.take("max_completion_tokens")
    legacy = body.take("max_tokens")
    schema = knobs(SCHEMAS["text"])
    if tokens is not None:  # checked under the name the client sent
        with field_named("max_completion_tokens"):
            tokens = check_value("max_tokens", schema["max_tokens"], tokens, "field 'max_completion_tokens'")
    if legacy is not None:
        with field_named("max_tokens"):
            legacy = check_value("max_tokens", schema["max_tokens"], legacy, "field 'max_tokens'")
    if tokens is not None and legacy is not None and tokens != legacy:
        raise _invalid("fields 'max_tokens' and 'max_completion_tokens' disagree: give one", "max_tokens")
    flags["max_tokens"] = tokens if tokens is not None else legacy
    flags["stop"] = _stop(body.take("stop"))
    stream = body.take("stream", bool, "true or false") or False
    options = body.take("stream_options", dict, "an object") or {}
    # include_obfuscation pads chunks against a network side channel (OpenAI's): nothing to hide on a
    # chunk aigc sends, so it is taken and ignored
    if stream and set(options) - {"include_usage", "continuous_usage_stats", "include_obfuscation"}:
        raise _invalid(f"field 'stream_options' takes include_usage (got {_json(options)})", "stream_options")
    include_usage = stream and options.get("include_usage") is True
    for name in ("frequency_penalty", "presence_penalty"):
        _only_default(body, name, 0, "use 'repetition_penalty', aigc's own")
    _only_default(body, "logit_bias", {})
    if chat:
        _only_default(body, "logprobs", False, "aigc returns no log probabilities")
        _only_default(body, "top_logprobs", 0, "aigc returns no log probabilities")
        _tools(body)
        _response_format(body)
        _only_default(body, "modalities", ["text"])
        _only_default(body, "audio", None)
        _only_default(body, "web_search_options", None)
    else:
        _only_default(body, "logprobs", None, "aigc returns no log probabilities")
    return flags, stream, include_usage


def _response_format(body: _Body) -> None:
    value = body.take("response_format")
    if value is not None and value != {"type": "text"}:
        raise _invalid(
            f"field 'response_format' is not supported (got {_json(value)}): aigc answers plain text only; "
            'send {"type": "text"} or leave it out',
            "response_format",
            "unsupported_value",
        )


def _check_seeds(resolved: Resolved, modality: str, results: int | None = None) -> None:
    """At most MAX_N results; item i of `n` uses seed + i, so an `n` whose seeds would run past the largest
    is refused before any model loads (core.seeds, naming the fields as the client sent them)."""
    from ..core.seeds import check_seeds

    count = results if results is not None else resolved.values.count or 1
    if count > MAX_N:
        raise _invalid(f"field 'n' must be at most {MAX_N} (got {count}): send several requests", "n")
    with field_named("seed"):
        check_seeds(resolved, modality)


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    param = f"messages[{index}].content"
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
            if not isinstance(text, str):
                raise _invalid(
                    f"messages[{index}]: only text content parts are supported (aigc's text models read "
                    "no images or audio)",
                    param,
                    "unsupported_value",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise _invalid(
        f"messages[{index}] needs 'content', a string or a list of text parts", param, "invalid_type"
    )


def parse_chat(data: dict[str, Any]) -> TextCall:
    """POST /v1/chat/completions."""
    body = _Body(data)
    ignored = body.advisory()
    flags, stream, include_usage = _common_text(body, chat=True)
    messages = body.take("messages")
    if messages is None:
        raise _invalid("field 'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise _invalid("field 'messages' must be a non-empty list of {role, content} objects", "messages")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(
                f"messages[{index}] must be an object with 'role' and 'content'",
                f"messages[{index}]",
                "invalid_type",
            )
        role = message.get("role")
        role = "system" if role == "developer" else role
        if not isinstance(role, str) or role not in ("system", "user", "assistant"):
            raise _invalid(
                f"messages[{index}]: role must be system, developer, user or assistant (got {_json(role)})",
                f"messages[{index}].role",
            )
        # an assistant turn echoed back from a response carries refusal, tool_calls, audio... as null or []
        extra = sorted(k for k in set(message) - {"role", "content", "name"} if message[k] not in (None, []))
        if extra:
            raise _invalid(
                f"messages[{index}]: only role, content and name are supported (got '{extra[0]}')",
                f"messages[{index}].{extra[0]}",
                "unsupported_parameter",
            )
        turns.append((role, _content(message, index)))
    if flags.get("system") is not None and any(role == "system" for role, _ in turns):
        raise _invalid("Give the system message once: in 'messages' or in 'system', not both", "system")
    _check_unknown(body, "/v1/chat/completions")
    resolved = resolve_settings("text", flags, given_in="request")
    _check_seeds(resolved, "text")
    # The record's prompt: the last user message (a conversation may end with another role, as OpenAI's
    # may: the model answers it; a template that refuses that says so, HTTP 400 naming messages).
    prompt = next((text for role, text in reversed(turns) if role == "user"), turns[-1][1])
    return TextCall(resolved, prompt, tuple(turns), stream, include_usage, ignored=ignored)


def _prompts(value: Any) -> tuple[str, ...]:
    """/v1/completions' `prompt`: a string or a list of strings (token ids are refused: aigc takes text)."""
    if value is None:
        raise _invalid("field 'prompt' is required", "prompt", "missing_required_parameter")
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise _invalid(
            f"field 'prompt' must be a string or a list of strings (got {_json(value)}); token ids are not "
            "taken: send text",
            "prompt",
            "invalid_type",
        )
    for index, prompt in enumerate(prompts):
        if not prompt.strip():
            where = "field 'prompt'" if isinstance(value, str) else f"prompt[{index}]"
            raise _invalid(f"{where} is empty: send the text to continue", "prompt")
    return tuple(prompts)


def parse_completion(data: dict[str, Any]) -> TextCall:
    """POST /v1/completions: each prompt as it is, no chat template."""
    body = _Body(data)
    ignored = body.advisory()
    flags, stream, include_usage = _common_text(body, chat=False)
    prompts = _prompts(body.take("prompt"))
    _only_default(body, "echo", False)
    _only_default(body, "best_of", 1)
    _only_default(body, "suffix", None)
    _check_unknown(body, "/v1/completions")
    if flags.get("system") is not None:
        raise _invalid("field 'system' needs the chat template: use /v1/chat/completions", "system")
    flags["raw"] = True
    resolved = resolve_settings("text", flags, given_in="request")
    _check_seeds(resolved, "text", len(prompts) * (resolved.values.count or 1))
    return TextCall(resolved, prompts[0], (), stream, include_usage, prompts=prompts, ignored=ignored)


def parse_image(data: dict[str, Any]) -> ImageCall:
    """POST /v1/images/generations."""
    return _image_call(_Body(data), "/v1/images/generations")


_EDIT_TEXT = {
    "prompt", "negative_prompt", "size", "quality", "response_format", "style", "user", "background",
    "output_format", "moderation", "input_fidelity",
}  # fmt: skip
"""The form fields of /v1/images/edits that are text whatever they look like (OpenAI's and aigc's string
settings, added from the schema)."""


def parse_image_edit(form: dict[str, str], image: bytes | None, mask: bytes | None) -> ImageCall:
    """POST /v1/images/edits (multipart, as OpenAI's): `image` (the file to start from), `mask` (optional:
    OpenAI's PNG whose fully transparent pixels mark what to repaint, or a plain grayscale mask as `aigc
    image --mask` takes it, white repaints), and the other fields as form values: text, which is read as
    JSON where it is a JSON number or boolean (`n=2`, `strength=0.6`), else as the string it is; a text field
    (_EDIT_TEXT: `prompt=42`) stays text."""
    import json

    if image is None:
        raise _invalid(
            "field 'image' is required: the image file to edit", "image", "missing_required_parameter"
        )
    text = _EDIT_TEXT | {n for n, k in knobs(SCHEMAS["image"]).items() if k.kind in (str, list)}
    data: dict[str, Any] = {}
    for name, value in form.items():
        try:
            parsed = json.loads(value) if name not in text else value  # a prompt "42" is text
        except ValueError:
            parsed = value
        data[name] = parsed if isinstance(parsed, (int, float, bool)) else value
    mask_png = openai_mask(mask) if mask is not None else None
    return _image_call(_Body(data), "/v1/images/edits", (image, mask_png))


def openai_mask(data: bytes) -> bytes:
    """A mask as aigc takes it (a grayscale image file, white repaints) from one as a request sends it: a
    PNG with an alpha channel where fully transparent pixels mark what to repaint (OpenAI's), or a plain
    grayscale or RGB mask, kept as it is. UsageError (param mask) for bytes that are not an image."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            if "A" not in opened.getbands() and opened.mode != "P":
                return data
            rgba = opened.convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _invalid(f"field 'mask' is not an image file ({exc})", "mask") from None
    alpha = rgba.getchannel("A")
    if alpha.getextrema() == (255, 255):  # an alpha channel that marks nothing: the colours are the mask
        return data
    repaint = alpha.point(lambda a: 255 if a == 0 else 0)
    out = io.BytesIO()
    repaint.save(out, format="PNG")
    return out.getvalue()


def _image_call(body: _Body, route: str, files: tuple[bytes, bytes | None] | None = None) -> ImageCall:
    """The image route's fields (generations: JSON; edits: a form, with its files given)."""
    ignored = body.advisory()
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
    if prompt is None:
        raise _invalid("field 'prompt' is required", "prompt", "missing_required_parameter")
    if not prompt.strip():
        raise _invalid("field 'prompt' is empty: say what the image should show", "prompt")
    size = body.take("size", str, "a string such as 512x512")
    if size is not None and size != "auto":
        match = SIZE.match(size)
        if match is None:
            raise _invalid(
                f"field 'size' must be WIDTHxHEIGHT in pixels, such as 512x512 (got {_json(size)})", "size"
            )
        for name, value in zip(("width", "height"), map(int, match.groups()), strict=True):
            if flags.get(name) is not None and flags[name] != value:
                raise _invalid(f"fields 'size' and '{name}' disagree: give one", "size")
            with field_named("size"):
                flags[name] = check_value(name, knobs(SCHEMAS["image"])[name], value, "field 'size'")
    response_format = body.take("response_format", str, "a string") or "b64_json"
    if response_format != "b64_json":
        raise _invalid(
            f"field 'response_format' must be b64_json (got {_json(response_format)}): this server does "
            "not host image URLs",
            "response_format",
            "unsupported_value",
        )
    _only_default(body, "output_format", "png")
    _only_default(body, "background", "auto")
    _only_default(body, "output_compression", 100)
    for name in ("quality", "style"):  # DALL-E's; these pipelines have steps and guidance instead
        _only_default(
            body,
            name,
            "auto" if name == "quality" else None,
            "set 'num_inference_steps' and 'guidance_scale'",
        )
    stream = body.take("stream", bool, "true or false") or False
    partial = body.take("partial_images", int, "an integer from 0 to 3")
    if partial is not None and not 0 <= partial <= 3:
        raise _invalid(f"field 'partial_images' must be 0 to 3 (got {partial})", "partial_images")
    if partial and not stream:
        raise _invalid("field 'partial_images' needs 'stream': true", "partial_images")
    progress = body.take("progress", bool, "true or false") or False
    if progress and not stream:
        raise _invalid("field 'progress' needs 'stream': true", "progress")
    if files is None:
        init_png, mask_png = (_base64(body, name) for name in ("init_image", "mask"))
        fields = ("init_image", "mask")
    else:
        (init_png, mask_png), fields = files, ("image", "mask")
    _check_unknown(body, route)
    resolved = resolve_settings("image", flags, given_in="request")
    _check_seeds(resolved, "image")
    if resolved.values.strength is not None and init_png is None:
        raise _invalid("field 'strength' needs 'init_image'", "strength")
    if mask_png is not None and init_png is None:
        raise _invalid("field 'mask' needs 'init_image': the image to repaint", "mask")
    return ImageCall(resolved, prompt, init_png, mask_png, ignored, fields, stream, partial or 0, progress)


def _base64(body: _Body, name: str) -> bytes | None:
    """The bytes of an image file sent as a base64 field, or None when absent."""
    text = body.take(name, str, "a base64 string (an image file)")
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"field '{name}' must be base64 (an image file's bytes)", name) from None


def parse_speech(data: dict[str, Any]) -> SpeechCall:
    """POST /v1/audio/speech."""
    body = _Body(data)
    ignored = body.advisory()
    voice = body.take("voice", str, "a string")
    flags = _settings("speech", body, excluded={"model", "voice"}, renamed={})
    flags["model"] = body.take("model", str, "a string")
    text = body.take("input", str, "a string")
    if text is None:
        raise _invalid("field 'input' is required", "input", "missing_required_parameter")
    if not text.strip():
        raise _invalid("field 'input' is empty: send the text to speak", "input")
    stream_format = body.take("stream_format", str, "a string") or "audio"
    if stream_format not in ("audio", "sse"):
        raise _invalid(
            f"field 'stream_format' must be audio or sse (got {_json(stream_format)})",
            "stream_format",
            "unsupported_value",
        )
    sse = stream_format == "sse"
    fmt = body.take("response_format", str, "a string") or ("pcm" if sse else "mp3")
    if sse and fmt != "pcm":
        raise _invalid(
            f"field 'stream_format' sse sends 16-bit PCM deltas: give response_format pcm, or leave it out "
            f"(got {_json(fmt)})",
            "response_format",
            "unsupported_value",
        )
    if fmt not in SPEECH_FORMATS:
        raise _invalid(
            f"field 'response_format' must be one of {', '.join(SPEECH_FORMATS)} (got {_json(fmt)})",
            "response_format",
            "unsupported_value",
        )
    _only_default(body, "instructions", None, "these voices take no instructions")
    _check_unknown(body, "/v1/audio/speech")
    if voice is not None and ("/" in voice or "\\" in voice or voice.endswith(".npy")):
        raise RefusedError(
            "field 'voice' names a file: the server reads no paths a request gives", param="voice"
        )
    flags["voice"] = voice
    resolved = resolve_settings("speech", flags, given_in="request")
    return SpeechCall(resolved, text, fmt, ignored=ignored, sse=sse)


ERROR_STATUS: list[tuple[type[AigcError], int, str]] = [
    (RefusedError, 403, "permission_error"),
    (UsageError, 400, "invalid_request_error"),
    (WrongModalityError, 400, "invalid_request_error"),
    (ModelUnavailableError, 404, "invalid_request_error"),
    (UnavailableError, 503, "server_error"),
]
"""HTTP status and OpenAI's error type by aigc error class, first match wins (BodyError and ContextFull are
UsageErrors: 400)."""

ROUTES = {
    "text": "/v1/chat/completions (or /v1/completions)",
    "image": "/v1/images/generations",
    "speech": "/v1/audio/speech",
}
"""The route that serves each modality, named when a model is sent to another."""

MODEL_CODES = {"model_not_found", "model_not_supported"}
"""Error codes the CLI's client turns into exit 3, as a local run gives for a model it cannot run."""


def error_body(exc: AigcError, route: str | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, OpenAI's error JSON) for an aigc error: 400 invalid_request_error with `param` for bad
    input (code: OpenAI's invalid_value, invalid_type, unknown_parameter, missing_required_parameter,
    unsupported_value, context_length_exceeded), 404 model_not_found, 403 for a refusal, 500 server_error
    for a failed generation. route: the path the request came to, named when a model of another modality
    was sent there."""
    from ..errors import ModelUnavailableError as Unavailable

    status, kind = next(((s, k) for cls, s, k in ERROR_STATUS if isinstance(exc, cls)), (500, "server_error"))
    message, param, code = exc.message, getattr(exc, "param", None), getattr(exc, "code", None)
    if isinstance(exc, WrongModalityError):
        param, code = "model", "model_not_supported"
        if exc.found in ROUTES and route is not None:
            message = f"{exc.message}: send it to {ROUTES[exc.found]}, not {route}"
    elif isinstance(exc, Unavailable):
        param, code = "model", "model_not_found"
    elif isinstance(exc, UsageError) and code is None:
        code = "invalid_value"
    return status, error_json(message, kind, code, param)


def exit_code_for(error: dict[str, Any]) -> ExitCode:
    """The exit code a local run gives for what the server answered with (an error object of error_body):
    by OpenAI's type and code, never by the message."""
    if error.get("code") in MODEL_CODES:
        return ExitCode.MODEL_UNAVAILABLE
    if error.get("type") in ("invalid_request_error", "permission_error", "authentication_error"):
        return ExitCode.USAGE
    return ExitCode.FAILURE


def error_json(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
