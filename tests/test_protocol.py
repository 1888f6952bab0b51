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
    from aigc_cli.errors import ContextFull
    from aigc_cli.server.protocol import LOCAL_PATH, RefusedError, error_body

    status, body = error_body(ContextFull("The prompt is 9000 tokens and the model reads 8192 in all"))
    assert (status, body["error"]["code"]) == (422, "context_length_exceeded")
    status, body = error_body(RefusedError("'/x' is a local path", LOCAL_PATH))
    assert (status, body["error"]["code"]) == (403, LOCAL_PATH)


@pytest.mark.parametrize(
    ("parse", "body", "words"),
    [
        ("parse_chat", {"messages": []}, "field 'messages' must be a non-empty list"),
        (
            "parse_chat",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
            "field 'max_tokens'",
        ),
        ("parse_chat", {"messages": [{"role": "user", "content": "hi"}], "stop": ["x", 5]}, "field 'stop'"),
        (
            "parse_chat",
            {"messages": [{"role": "user", "content": "hi"}], "temperature": -1},
            "field 'temperature'",
        ),
        ("parse_chat", {"messages": [{"role": "user", "content": "hi"}], "nonsense": 1}, "'nonsense'"),
        ("parse_completion", {"prompt": "  "}, "field 'prompt' must be a non-empty string"),
        ("parse_image", {"prompt": "a cat", "size": "big"}, "field 'size' must be WIDTHxHEIGHT"),
        ("parse_image", {"prompt": "a cat", "strength": 0.5}, "field 'strength' needs 'init_image'"),
        (
            "parse_image",
            {"prompt": "a cat", "n": 2, "seed": 4294967295},
            "field 'seed' 4294967295 with field 'n' 2 needs seeds",
        ),
        ("parse_speech", {"input": "hi", "response_format": "mp3"}, "field 'response_format' must be"),
        ("parse_speech", {"input": "hi", "speed": 9}, "field 'speed'"),
    ],
)
def test_bad_bodies_name_the_field(parse, body, words):
    """The API's validation, in-process (tests/test_server_security.py checks the HTTP side once)."""
    from aigc_cli.errors import UsageError
    from aigc_cli.server import protocol

    with pytest.raises(UsageError) as raised:
        getattr(protocol, parse)(body)
    assert words in raised.value.message
