"""The wire protocol in-process: every setting a flag can set reaches the server's resolved settings (the
client's body is derived from the schema, no hand-kept list), and errors travel by code, not by text."""

from __future__ import annotations

import pytest

from aigc_cli.settings import SCHEMAS, Knob, knobs, resolve_settings

SPECIAL = {
    "model": "smollm2",
    "system": "Answer in French.",
    "stop": ["\n\n", "END"],
    "device": "cpu",
    "dtype": "float32",
    "lora": ["owner/some-lora:0.5"],
    "vae": "taesd",
    "voice": "alloy",
    "negative": "blurry",
    "width": 320,
    "height": 192,
}
MODELS = {"text": "smollm2", "image": "sd-turbo", "speech": "joe"}


def sample(name: str, knob: Knob) -> object:
    """A valid value for the knob that is not its default."""
    if name in SPECIAL:
        return SPECIAL[name]
    if knob.choices:
        return knob.choices[-1]
    if knob.kind is bool:
        return True
    if knob.kind in (int, float):
        low = knob.low if knob.low is not None else 0
        high = knob.high if knob.high is not None else low + 100
        value = (low + high) / 2 if knob.kind is float else int(low) + 1
        if knob.multiple_of:
            value = (int(low) // knob.multiple_of + 1) * knob.multiple_of
        return min(value, high) if knob.kind is float else int(min(value, high))
    return "x"


def flagged(modality: str) -> list[tuple[str, Knob]]:
    return [(name, k) for name, k in knobs(SCHEMAS[modality]).items() if k.flag]


def round_trip(modality: str, flags: dict) -> tuple[object, object]:
    """(the settings resolved here, the settings the server resolves from the client's body)."""
    from aigc_cli.server import protocol

    resolved = resolve_settings(modality, flags)
    if modality == "text":
        route, body = protocol.text_request(resolved, "Hello")
        parse = protocol.parse_completion if route == "/v1/completions" else protocol.parse_chat
        call = parse(body)
    elif modality == "image":
        call = protocol.parse_image(protocol.image_request(resolved, "a cat"))
    else:
        call = protocol.parse_speech(protocol.speech_request(resolved, "Hello.", "wav"))
    return resolved.values, call.resolved.values


@pytest.mark.parametrize("modality", ["text", "image", "speech"])
def test_every_flag_reaches_the_server(modality):
    from aigc_cli.server.protocol import NOT_SENT

    checked = []
    for name, knob in flagged(modality):
        if name == "trust_remote_code":  # refused by the server on purpose: such runs stay local
            continue
        flags = {name: sample(name, knob)}
        if name == "raw":
            flags["max_tokens"] = 7
        if name == "strength":  # the image rules need an init image for strength: checked apart
            continue
        here, there = round_trip(modality, flags)
        assert getattr(there, name) == getattr(here, name), (modality, name)
        checked.append(name)
    # Every flag of the schema is walked: a new one cannot be missed.
    assert set(checked) >= {n for n, _ in flagged(modality)} - {"trust_remote_code", "strength"}
    assert NOT_SENT[modality] <= set(knobs(SCHEMAS[modality]))


def test_strength_and_images_reach_the_server():
    from aigc_cli.server import protocol

    resolved = resolve_settings("image", {"strength": 0.4, "seed": 3})
    call = protocol.parse_image(protocol.image_request(resolved, "a cat", b"PNG...", b"MASK"))
    assert (call.resolved.values.strength, call.init_png, call.mask_png) == (0.4, b"PNG...", b"MASK")


def test_settings_left_to_the_server_are_not_sent(monkeypatch):
    """Alias defaults and unset settings are the server's to apply, as a local run applies them."""
    from aigc_cli.server.protocol import sent_settings

    monkeypatch.delenv("AIGC_TEXT_BACKEND")  # the test environment's own choice
    resolved = resolve_settings("text", {"temperature": 0.0})
    assert sent_settings("text", resolved) == {"temperature": 0.0}
    monkeypatch.setenv("AIGC_DEVICE", "cpu")
    assert sent_settings("text", resolve_settings("text", {})) == {"device": "cpu"}


def test_errors_travel_by_code():
    from aigc_cli.errors import ContextFull, ExitCode, UnknownModelError, WrongModalityError
    from aigc_cli.server.protocol import LOCAL_PATH, RefusedError, error_body, exit_code_for

    status, body = error_body(ContextFull("The prompt is 9000 tokens and the model reads 8192 in all"))
    assert (status, body["error"]["type"], body["error"]["code"]) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
    )
    assert exit_code_for(body["error"]) == ExitCode.USAGE
    status, body = error_body(RefusedError("'/x' is a local path", LOCAL_PATH))
    assert (status, body["error"]["code"]) == (403, LOCAL_PATH)
    status, body = error_body(UnknownModelError("No model 'x'"))
    assert (status, body["error"]["code"], body["error"]["param"]) == (404, "model_not_found", "model")
    assert exit_code_for(body["error"]) == ExitCode.MODEL_UNAVAILABLE
    wrong = WrongModalityError("'tiny-sd' is an image model, not a text model", found="image")
    status, body = error_body(wrong, "/v1/chat/completions")
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "model_not_supported", "model")
    assert body["error"]["message"].endswith("send it to /v1/images/generations, not /v1/chat/completions")
    assert exit_code_for(body["error"]) == ExitCode.MODEL_UNAVAILABLE
    assert exit_code_for({"type": "server_error", "code": None}) == ExitCode.FAILURE


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("parse", "body", "param", "code", "words"),
    [
        ("parse_chat", {"messages": []}, "messages", "invalid_value", "field 'messages' must be a non-empty"),
        ("parse_chat", {}, "messages", "missing_required_parameter", "field 'messages' is required"),
        ("parse_chat", {"messages": HI, "max_tokens": 0}, "max_tokens", "invalid_value", "at least 1"),
        (
            "parse_chat",
            {"messages": HI, "max_tokens": -1},
            "max_tokens",
            "invalid_value",
            "field 'max_tokens'",
        ),
        (
            "parse_chat",
            {"messages": HI, "max_completion_tokens": 0},
            "max_completion_tokens",
            "invalid_value",
            "",
        ),
        ("parse_chat", {"messages": HI, "n": 0}, "n", "invalid_value", "field 'n'"),
        ("parse_chat", {"messages": HI, "n": 17}, "n", "invalid_value", "at most 16"),
        ("parse_chat", {"messages": HI, "stop": ["x", 5]}, "stop", "invalid_value", "field 'stop'"),
        (
            "parse_chat",
            {"messages": HI, "temperature": -1},
            "temperature",
            "invalid_value",
            "field 'temperature'",
        ),
        ("parse_chat", {"messages": HI, "temperature": "hot"}, "temperature", "invalid_type", "a number"),
        (
            "parse_chat",
            {"messages": HI, "stream": "yes"},
            "stream",
            "invalid_type",
            'true or false (got "yes")',
        ),
        ("parse_chat", {"messages": HI, "nonsense": 1}, "nonsense", "unknown_parameter", "'nonsense'"),
        (
            "parse_chat",
            {"messages": HI, "tools": [{"type": "function"}]},
            "tools",
            "unsupported_parameter",
            "",
        ),
        (
            "parse_chat",
            {"messages": HI, "tools": [{"type": "function"}], "tool_choice": "required"},
            "tool_choice",
            "unsupported_value",
            "do not call tools",
        ),
        (
            "parse_chat",
            {"messages": HI, "response_format": {"type": "json_object"}},
            "response_format",
            "unsupported_value",
            "plain text only",
        ),
        (
            "parse_chat",
            {"messages": HI, "logprobs": True},
            "logprobs",
            "unsupported_value",
            "log probabilities",
        ),
        (
            "parse_chat",
            {"messages": HI, "frequency_penalty": 0.5},
            "frequency_penalty",
            "unsupported_value",
            "",
        ),
        (
            "parse_chat",
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
            "role must be",
        ),
        (
            "parse_chat",
            {"messages": [{"role": ["user"], "content": "x"}]},
            "messages[0].role",
            "invalid_value",
            "",
        ),
        (
            "parse_chat",
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
            "unsupported_value",
            "only text content parts",
        ),
        (
            "parse_chat",
            {"messages": [{"role": "user", "content": "hi", "tool_calls": [{"id": "1"}]}]},
            "messages[0].tool_calls",
            "unsupported_parameter",
            "",
        ),
        ("parse_completion", {"prompt": "  "}, "prompt", "invalid_value", "field 'prompt' is empty"),
        ("parse_completion", {"prompt": ["a", " "]}, "prompt", "invalid_value", "prompt[1] is empty"),
        ("parse_completion", {"prompt": [1, 2, 3]}, "prompt", "invalid_type", "token ids are not taken"),
        ("parse_completion", {}, "prompt", "missing_required_parameter", ""),
        ("parse_completion", {"prompt": "a", "logprobs": 0}, "logprobs", "unsupported_value", ""),
        ("parse_completion", {"prompt": ["a"] * 9, "n": 2}, "n", "invalid_value", "at most 16 (got 18)"),
        ("parse_image", {"prompt": "a cat", "size": "big"}, "size", "invalid_value", "must be WIDTHxHEIGHT"),
        ("parse_image", {"prompt": "a cat", "size": "12x12"}, "size", "invalid_value", "multiple of 8"),
        ("parse_image", {"prompt": ""}, "prompt", "invalid_value", "field 'prompt' is empty"),
        (
            "parse_image",
            {"prompt": "a cat", "strength": 0.5},
            "strength",
            "invalid_value",
            "needs 'init_image'",
        ),
        (
            "parse_image",
            {"prompt": "a", "response_format": "url"},
            "response_format",
            "unsupported_value",
            "",
        ),
        (
            "parse_image",
            {"prompt": "a cat", "n": 2, "seed": 4294967295},
            "seed",
            "invalid_value",
            "field 'seed' 4294967295 with field 'n' 2 needs seeds",
        ),
        (
            "parse_speech",
            {"input": "hi", "response_format": "au"},
            "response_format",
            "unsupported_value",
            "",
        ),
        ("parse_speech", {"input": "hi", "speed": 9}, "speed", "invalid_value", "field 'speed'"),
        ("parse_speech", {"voice": "alloy"}, "input", "missing_required_parameter", ""),
    ],
)
def test_bad_bodies_name_the_field(parse, body, param, code, words):
    """The API's validation, in-process (tests/test_server_security.py checks the HTTP side once): HTTP 400
    invalid_request_error with `param` naming the field and OpenAI's code for the kind of problem."""
    from aigc_cli.errors import UsageError
    from aigc_cli.server import protocol

    with pytest.raises(UsageError) as raised:
        getattr(protocol, parse)(body)
    assert words in raised.value.message
    status, answer = protocol.error_body(raised.value)
    assert (status, answer["error"]["type"]) == (400, "invalid_request_error")
    assert (answer["error"]["param"], answer["error"]["code"]) == (param, code)


@pytest.mark.parametrize(
    ("raw", "param", "escape", "at"),
    [
        (rb'{"prompt": "ab\ud800"}', "prompt", "\\ud800", 3),
        (
            rb'{"messages": [{"role": "user", "content": "ok"}, {"content": "\udfffx"}]}',
            "messages[1].content",
            "\\udfff",
            1,
        ),
        (rb'{"metadata": {"k\udc00": 1}}', "metadata.k\\udc00", "\\udc00", 2),
    ],
)
def test_a_lone_surrogate_anywhere_is_named_by_its_path(raw, param, escape, at):
    from aigc_cli.server import protocol

    with pytest.raises(protocol.BodyError) as raised:
        protocol.parse_json(raw)
    assert (raised.value.param, raised.value.code) == (param, "invalid_value")
    assert f"({escape} at character {at})" in raised.value.message
    assert protocol.parse_json(rb'{"prompt": "\ud83d\ude00"}') == {"prompt": "\U0001f600"}  # a pair is text


ADVISORY_BODY = {
    "user": "u-1",
    "metadata": {"k": "v"},
    "store": False,
    "service_tier": "auto",
    "parallel_tool_calls": True,
    "reasoning_effort": "low",
    "prediction": None,
    "stream_options": {"include_usage": True},
}


def test_fields_clients_send_by_default_are_accepted_and_ignored():
    from aigc_cli.server import protocol

    call = protocol.parse_chat({"messages": HI, **ADVISORY_BODY, "tools": [], "tool_choice": "none"})
    assert set(call.ignored) == set(ADVISORY_BODY) - {"prediction", "stream_options"} | {"prediction"}
    assert call.include_usage is False  # stream_options only matter to a streamed call
    call = protocol.parse_chat(
        {"messages": HI, "tools": [{"type": "function"}], "tool_choice": "none", "response_format": None}
    )
    assert call.stream is False
    call = protocol.parse_completion({"prompt": ["one", "two"], "n": 2, "user": "x", "logprobs": None})
    assert (call.prompts, call.ignored) == (("one", "two"), ("user",))
    image = protocol.parse_image({"prompt": "a cat", "user": "x", "moderation": "low", "quality": "auto"})
    assert image.ignored == ("moderation", "user")
    speech = protocol.parse_speech({"input": "hi", "voice": "alloy"})
    assert speech.response_format == "mp3"  # OpenAI's default


def test_an_edit_form_reads_numbers_as_numbers_and_text_fields_as_text():
    """/v1/images/edits is a form: every value arrives as text. `n=2` is a number; a prompt (or a negative
    prompt, a scheduler) that looks like one stays text."""
    from aigc_cli.server import protocol

    form = {"prompt": "42", "negative_prompt": "7", "n": "2", "strength": "0.5", "model": "123"}
    call = protocol.parse_image_edit(form, b"PNG...", None)
    assert call.prompt == "42" and call.resolved.values.negative == "7"
    assert call.resolved.values.count == 2 and call.resolved.values.strength == 0.5
    assert call.resolved.values.model == "123"
