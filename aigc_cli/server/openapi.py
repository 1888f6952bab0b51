"""What `/openapi.json` says of each route: the request body (OpenAI's fields, and aigc's own settings
derived from the settings schema, so a new setting is described without anyone listing it), the answer
for 200, and every error status in OpenAI's error shape. The routes read their bodies themselves
(protocol.py checks them and names the field at fault); this is the description a client generator or a
fuzzer (schemathesis, in the tests) reads.
"""

from __future__ import annotations

from typing import Any

from ..settings import SCHEMAS, Knob, knobs
from .protocol import ADVISORY, MAX_N, NOT_SENT, SPEECH_FORMATS

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
"""OpenAI's error object."""

_ERRORS = {
    "400": "Bad input: `param` names the field, `code` the kind (invalid_value, invalid_type, "
    "unknown_parameter, missing_required_parameter, unsupported_value, unsupported_parameter, "
    "context_length_exceeded, model_not_supported)",
    "401": "No API key, or a wrong one (code invalid_api_key)",
    "403": "A Host this server is not bound to, or what a request may not ask (a local path)",
    "404": "No such model (code model_not_found)",
    "413": "The request body is over 20 MB",
    "500": "The generation failed (type server_error)",
}

_KIND = {int: "integer", float: "number", bool: "boolean", str: "string"}


DEVICE_PATTERN = r"^(auto|cpu|mps|xpu|cuda(:[0-9]+)?)$"
"""The devices device.pick_device takes."""


def knob_schema(name: str, k: Knob) -> dict[str, Any]:
    """A setting's JSON Schema: type, range, choices (only where no other spelling is accepted); null is
    allowed (not set). The API's bodies, A1111's and the MCP tools' arguments (mcp/tools.py) use it."""
    if k.kind is list:
        schema: dict[str, Any] = {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        }
    else:
        schema = {"type": [_KIND[k.kind], "null"]}
    if k.low is not None:
        schema["exclusiveMinimum" if k.low_open else "minimum"] = k.low
    if k.high is not None:
        schema["maximum"] = k.high
    if k.multiple_of is not None:
        schema.update(multipleOf=k.multiple_of, exclusiveMinimum=0)
    if k.choices:  # the canonical names (a normalized spelling such as fp16 is taken too)
        schema["enum"] = [*k.choices, None]
    if name == "device":  # its check takes cuda:N, which no enum lists
        schema["pattern"] = DEVICE_PATTERN
    description = k.help + (f" ({k.unit})" if k.unit else "")
    return {**schema, "description": description}


_knob = knob_schema


def _settings(modality: str, leave_out: set[str]) -> dict[str, Any]:
    """aigc's settings of `modality` that a body may hold under their own names."""
    skip = leave_out | NOT_SENT[modality]
    return {name: _knob(name, k) for name, k in knobs(SCHEMAS[modality]).items() if name not in skip}


def _advisory() -> dict[str, Any]:
    return {
        name: {"description": "Accepted and ignored (OpenAI's; changes nothing here)"} for name in ADVISORY
    }


_STRINGS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 16}]}
_TEXT_FIELDS: dict[str, Any] = {
    "model": {"type": "string", "description": "An alias, a Hub repo id, or a folder given to --preload"},
    "n": {"type": "integer", "minimum": 1, "maximum": MAX_N},
    "max_tokens": {"type": ["integer", "null"], "minimum": 1},
    "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
    "stop": {"oneOf": [{"type": "null"}, *_STRINGS["oneOf"]]},
    "stream": {"type": ["boolean", "null"]},
    "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean"}}},
    "frequency_penalty": {"enum": [0, None], "description": "Only 0: use repetition_penalty"},
    "presence_penalty": {"enum": [0, None], "description": "Only 0: use repetition_penalty"},
    "logit_bias": {"type": ["object", "null"], "maxProperties": 0},
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                    },
                },
            ]
        },
        "name": {"type": "string"},
    },
    "additionalProperties": False,
}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": properties, "additionalProperties": False}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _chat_body() -> dict[str, Any]:
    properties = {
        **_settings("text", {"stop", "max_tokens", "seed"}),
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**32 - 1},
        **_TEXT_FIELDS,
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "logprobs": {"enum": [False, None], "description": "Only false: aigc returns no log probabilities"},
        "top_logprobs": {"enum": [0, None]},
        "tools": {"type": ["array", "null"], "description": "Only with tool_choice none"},
        "tool_choice": {"enum": ["none", "auto", None]},
        "response_format": {
            "oneOf": [
                {"type": "null"},
                {"type": "object", "properties": {"type": {"const": "text"}}, "required": ["type"]},
            ]
        },
        **_advisory(),
    }
    return _body(properties, ["messages"])


def _completions_body() -> dict[str, Any]:
    properties = {
        **_settings("text", {"stop", "max_tokens", "system", "seed"}),
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**32 - 1},
        **_TEXT_FIELDS,
        "prompt": {
            "oneOf": [
                {"type": "string", "minLength": 1, "pattern": r"\S"},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "minLength": 1, "pattern": r"\S"},
                },
            ]
        },
        "logprobs": {"type": "null", "description": "Only null: aigc returns no log probabilities"},
        "echo": {"enum": [False, None]},
        "best_of": {"enum": [1, None]},
        "suffix": {"type": "null"},
        **_advisory(),
    }
    return _body(properties, ["prompt"])


def _images_body() -> dict[str, Any]:
    schema = knobs(SCHEMAS["image"])
    renamed = {"negative_prompt": "negative", "num_inference_steps": "steps", "guidance_scale": "guidance"}
    properties = {
        **_settings("image", {"seed"}),
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**32 - 1},
        **{api: _knob(name, schema[name]) for api, name in renamed.items()},
        "model": _TEXT_FIELDS["model"],
        "prompt": {"type": "string", "minLength": 1, "pattern": r"\S"},
        "n": {"type": "integer", "minimum": 1, "maximum": MAX_N},
        "size": {"type": "string", "pattern": r"^(auto|\d{1,5}x\d{1,5})$", "description": "WIDTHxHEIGHT"},
        "response_format": {"enum": ["b64_json", None]},
        "stream": {"type": ["boolean", "null"], "description": "Server-sent events: previews, then images"},
        "partial_images": {"type": ["integer", "null"], "minimum": 0, "maximum": 3},
        "progress": {
            "type": ["boolean", "null"],
            "description": "aigc's: with stream, a step event per step",
        },
        "output_format": {"enum": ["png", None]},
        "quality": {"enum": ["auto", None]},
        "init_image": {"type": "string", "contentEncoding": "base64", "description": "An image file"},
        "mask": {"type": "string", "contentEncoding": "base64", "description": "White: repaint"},
        **_advisory(),
    }
    return _body(properties, ["prompt"])


def _edits_body() -> dict[str, Any]:
    """multipart/form-data, as OpenAI's images.edit sends it: the files, and the generation fields as text."""
    fields = _images_body()["requestBody"]["content"]["application/json"]["schema"]["properties"]
    properties = {
        "image": {"type": "string", "format": "binary", "description": "The image file to start from"},
        "mask": {
            "type": "string",
            "format": "binary",
            "description": "PNG: transparent pixels are repainted (OpenAI's); or grayscale: white repaints",
        },
        **{name: value for name, value in fields.items() if name not in ("init_image", "mask")},
    }
    schema = {"type": "object", "required": ["image", "prompt"], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _speech_body() -> dict[str, Any]:
    properties = {
        **_settings("speech", set()),
        "model": _TEXT_FIELDS["model"],
        "input": {"type": "string", "minLength": 1, "pattern": r"\S"},
        "voice": {"type": "string", "description": "OpenAI's names speak with the model's own voice"},
        "response_format": {"enum": [*SPEECH_FORMATS, None], "description": "mp3 by default, as OpenAI's"},
        "stream_format": {"enum": ["audio", "sse", None]},
        **_advisory(),
    }
    return _body(properties, ["input"])


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_OBJECT = {"type": "object"}
_MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}
_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {"choices": {"type": "array", "items": {"type": "object", "required": ["index"]}}},
}
_STREAM = {
    "description": "Server-sent events when `stream` is true: each `data` a chunk (JSON), then [DONE]",
    "schema": {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}},
}


def _ok(name: str) -> dict[str, Any]:
    """The 200 answer of each route."""
    if name == "health":
        health = {"type": "object", "required": ["status", "version"]}
        return {"200": _json(health, "Up"), "503": _json(health, "Loading the --preload models")}
    if name == "models":
        listed = {"type": "object", "properties": {"data": {"type": "array", "items": _MODEL}}}
        return {"200": _json(listed)}
    if name == "model":
        return {"200": _json(_MODEL)}
    if name in ("chat", "completions"):
        ok = _json(_COMPLETION)
        ok["content"]["text/event-stream"] = _STREAM
        return {"200": ok}
    if name in ("images", "edits"):
        images = {
            "type": "object",
            "required": ["created", "data"],
            "properties": {"data": {"type": "array", "items": {"type": "object", "required": ["b64_json"]}}},
        }
        ok = _json(images)
        ok["content"]["text/event-stream"] = _STREAM
        return {"200": ok}
    if name == "speech":
        from .protocol import media_type

        audio = {media_type(f): {"schema": {"type": "string", "format": "binary"}} for f in SPEECH_FORMATS}
        audio["text/event-stream"] = {
            "schema": _STREAM["schema"],
            "description": "stream_format sse: speech.audio.delta (base64 PCM), then speech.audio.done",
        }
        return {"200": {"description": "The audio file (pcm: streamed)", "content": audio}}
    if name == "voices":
        voice = {
            "type": "object",
            "required": ["id", "object", "model"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "voice"},
                "model": {"type": "string"},
            },
        }
        listed = {
            "type": "object",
            "required": ["object", "data", "voices"],
            "properties": {
                "data": {"type": "array", "items": voice},
                "voices": {"type": "array", "items": {"type": "string"}},
            },
        }
        return {"200": _json(listed)}
    return {"200": _json(_OBJECT)}


_BODIES = {
    "chat": _chat_body,
    "completions": _completions_body,
    "images": _images_body,
    "edits": _edits_body,
    "speech": _speech_body,
}
_SUMMARIES = {
    "health": "Up, and the version (no API key needed)",
    "models": "The models this server can run",
    "model": "One model of /v1/models",
    "ps": "The loaded engines, as `aigc ps` shows them",
    "chat": "OpenAI's chat completions",
    "completions": "OpenAI's (legacy) completions: the prompt as it is, no chat template",
    "images": "OpenAI's image generation (and image-to-image, inpainting: init_image, mask)",
    "edits": "OpenAI's image edits: image-to-image, or inpainting with a mask (multipart)",
    "speech": "OpenAI's text to speech",
    "voices": "The voices of the speech models here (?model= narrows it), as Speaches lists them",
}


def describe(name: str) -> dict[str, Any]:
    """The keyword arguments of route `name`'s decorator: summary, request body, answers (FastAPI's
    `openapi_extra` and `responses`)."""
    responses: dict[str | int, Any] = {**_ok(name)}
    errors = ("401", "403", "500") if name in ("models", "ps") else ("401", "403")
    if name in ("model", "voices"):
        errors = ("401", "403", "404")
    if name in _BODIES:
        errors = tuple(_ERRORS)
    if name == "health":
        errors = ("403",)
    for status in errors:
        responses[status] = _json(ERROR, _ERRORS[status])
    extra = _BODIES[name]() if name in _BODIES else None
    return {
        "summary": _SUMMARIES[name],
        "responses": responses,
        "openapi_extra": extra,
        "response_model": None,
    }
