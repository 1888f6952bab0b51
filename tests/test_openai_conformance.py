"""`aigc serve` against what OpenAI's API does, through the official `openai` client (its exception class
for each error, models.retrieve, a list of prompts, the speech formats) and raw HTTP for the rest: a client
that goes away from an image request, /health while models load, a preload that fails."""

from __future__ import annotations

import io
import json
import subprocess
import time

import pytest
from conftest import AIGC
from inproc import run_cli
from server_helpers import http, server_env

openai = pytest.importorskip("openai")

HI = [{"role": "user", "content": "hi"}]


def local_text(*args: str) -> str:
    result = run_cli("text", *args, "--local")
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_bad_input_is_bad_request_error_naming_the_param(client, tiny):
    llama = str(tiny["llama"])
    cases = [
        ({"messages": []}, "messages", "invalid_value"),
        ({"messages": HI, "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"messages": HI, "n": 0}, "n", "invalid_value"),
        ({"messages": HI, "stop": ["x", 5]}, "stop", "invalid_value"),
        (
            {"messages": HI, "response_format": {"type": "json_object"}},
            "response_format",
            "unsupported_value",
        ),
        ({"messages": HI, "logprobs": True}, "logprobs", "unsupported_value"),
        ({"messages": HI, "temperature": "hot"}, "temperature", "invalid_type"),
        ({"messages": HI, "seed": 1.5}, "seed", "invalid_type"),
        (
            {"messages": HI, "tools": [{"type": "function", "function": {"name": "f"}}]},
            "tools",
            "unsupported_parameter",
        ),
    ]
    for body, param, code in cases:
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model=llama, **body)
        error = raised.value.body
        assert (raised.value.status_code, error["param"], error["code"]) == (400, param, code), body
        assert error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model="unused", prompt="a cat", size="12x")
    assert raised.value.body["param"] == "size"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=HI)
    assert (missing.value.body["code"], missing.value.body["param"]) == ("model_not_found", "model")


def test_fields_clients_send_by_default_are_accepted(client, tiny):
    llama = str(tiny["llama"])
    plain = client.chat.completions.create(model=llama, messages=HI, max_tokens=5, temperature=0)
    advised = client.chat.completions.create(
        model=llama,
        messages=HI,
        max_tokens=5,
        temperature=0,
        user="user-1",
        metadata={"app": "test"},
        store=False,
        service_tier="auto",
        parallel_tool_calls=False,
        reasoning_effort="low",
        stream_options=None,
        tools=[{"type": "function", "function": {"name": "f"}}],
        tool_choice="none",
        extra_body={"prediction": None},
    )
    assert advised.choices[0].message.content == plain.choices[0].message.content
    # the reply sent back as the official client gives it (refusal, tool_calls, audio: null)
    echoed = [*HI, plain.choices[0].message.model_dump(), {"role": "user", "content": "and?"}]
    assert echoed[1]["refusal"] is None and "tool_calls" in echoed[1]
    again = client.chat.completions.create(model=llama, messages=echoed, max_tokens=3)
    assert again.choices[0].message.role == "assistant"
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model=llama, messages=[*HI, {"role": "assistant", "content": "x", "tool_calls": [{"id": "1"}]}]
        )
    assert raised.value.body["param"] == "messages[1].tool_calls"
    streamed = client.chat.completions.create(
        model=llama,
        messages=HI,
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        plain.choices[0].message.content
    )
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_models_retrieve_and_a_missing_model(client, tiny):
    llama = str(tiny["llama"])
    listed = {m.id for m in client.models.list()}
    assert llama in listed
    got = client.models.retrieve(llama)
    assert (got.id, got.object, got.owned_by) == (llama, "model", "aigc")
    for alias, listed_as in [("smollm2-135m", "smollm2"), ("JOE", "piper-joe")]:  # as the routes take them
        assert listed_as in listed
        got = client.models.retrieve(alias)
        assert (got.id, got.model_extra["modality"]) == (
            alias,
            "text" if listed_as == "smollm2" else "speech",
        )
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("no-such-model")
    assert raised.value.body["code"] == "model_not_found"


def test_a_list_of_prompts_gets_a_choice_per_prompt_each_as_its_own_request(client, tiny):
    gpt2 = str(tiny["gpt2"])
    prompts = ["Once upon a time", "The weather today"]
    answer = client.completions.create(model=gpt2, prompt=prompts, n=2, max_tokens=6, temperature=0)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    for number, prompt in enumerate(prompts):
        expected = local_text(prompt, "-m", gpt2, "--raw", "--max-tokens", "6", "--temperature", "0")
        assert [c.text + "\n" for c in answer.choices[2 * number : 2 * number + 2]] == [expected] * 2
    assert answer.usage.completion_tokens == sum(
        c.model_extra["aigc"]["completion_tokens"] for c in answer.choices
    )


def test_speech_formats_clients_ask_for_decode(client, vits):
    import av
    import soundfile

    default = client.audio.speech.create(model=str(vits), voice="alloy", input="Hello there.")
    assert default.response.headers["content-type"] == "audio/mpeg"  # OpenAI's default: mp3
    samples, rate = soundfile.read(io.BytesIO(default.content))
    assert len(samples) > 0 and rate > 0
    opus = client.audio.speech.create(
        model=str(vits), voice="alloy", input="Hello there.", response_format="opus"
    )
    samples, rate = soundfile.read(io.BytesIO(opus.content))
    assert rate in (8000, 12000, 16000, 24000, 48000) and len(samples) > 0  # Opus's rates
    aac = client.audio.speech.create(
        model=str(vits), voice="alloy", input="Hello there.", response_format="aac"
    )
    assert aac.response.headers["content-type"] == "audio/aac"
    assert aac.content[:2] in (b"\xff\xf1", b"\xff\xf9")  # an ADTS frame header
    with av.open(io.BytesIO(aac.content), format="aac") as container:
        assert sum(frame.samples for frame in container.decode(audio=0)) > 0


def test_voices_are_listed_and_checked(server, client, vits):
    """GET /v1/audio/voices lists each speech model's voices; OpenAI's names speak with the default voice and
    say so in a notice; any other unknown voice is 400 naming `voice`."""
    status, _, raw = http(f"{server.url}/v1/audio/voices")
    listed = json.loads(raw)
    assert status == 200 and "default" in listed["voices"]
    assert {"id": "default", "object": "voice", "model": str(vits), "language": None} in listed["data"]
    status, _, raw = http(f"{server.url}/v1/audio/voices?model={vits}")
    assert {v["model"] for v in json.loads(raw)["data"]} == {str(vits)}
    status, _, raw = http(f"{server.url}/v1/audio/voices?model=no-such-voice")
    assert (status, json.loads(raw)["error"]["code"]) == (404, "model_not_found")
    same = {"model": str(vits), "input": "Hi.", "response_format": "wav", "extra_body": {"seed": 5}}
    alloy = client.audio.speech.create(voice="alloy", **same)
    plain = client.audio.speech.create(voice="default", **same)
    assert alloy.content == plain.content
    (notice,) = json.loads(alloy.response.headers["x-aigc-notices"])
    assert notice["code"] == "voice_fallback" and "has no voice 'alloy'" in notice["message"]
    assert json.loads(plain.response.headers["x-aigc-notices"]) == []
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.speech.create(model=str(vits), voice="nobody", input="Hi.")
    assert raised.value.body["param"] == "voice"


def test_speech_as_server_sent_events_equals_the_pcm_stream(server, client, vits):
    import base64

    body = {"model": str(vits), "voice": "default", "input": "Hello there. How are you?"}
    status, _, pcm = http(
        f"{server.url}/v1/audio/speech", "POST", {**body, "response_format": "pcm", "seed": 3}
    )
    assert status == 200
    streamed = client.audio.speech.with_streaming_response.create(
        **body, stream_format="sse", extra_body={"seed": 3}
    )
    with streamed as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * (len(events) - 1) + ["speech.audio.done"]
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == pcm
    assert events[-1]["aigc"]["sample_rate"] > 0
    status, _, raw = http(
        f"{server.url}/v1/audio/speech",
        "POST",
        {**body, "stream_format": "sse", "response_format": "mp3"},
    )
    assert (status, json.loads(raw)["error"]["param"]) == (400, "response_format")


def test_image_edits_equal_the_cli_with_and_without_a_mask(client, pipes, tmp_path):
    """images.edit (multipart) is `aigc image --init-image [--mask]` with the same seed: pixel-equal. The
    mask as OpenAI's (transparent pixels repaint) and as aigc's (white repaints) give the same image."""
    import base64

    from PIL import Image

    sd = str(pipes["sd"])
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "start.png")
    openai_mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    openai_mask.paste((0, 0, 0, 0), (0, 0, 32, 64))  # the left half transparent: repainted
    openai_mask.save(tmp_path / "openai-mask.png")
    grey = Image.new("L", (64, 64), 0)
    grey.paste(255, (0, 0, 32, 64))
    grey.save(tmp_path / "grey-mask.png")
    settings = {"seed": 4, "num_inference_steps": 2, "strength": 0.7}
    local = ["-m", sd, "--seed", "4", "--steps", "2", "--strength", "0.7", "--width", "64", "--height", "64"]

    def edit(**files) -> Image.Image:
        opened = {name: open(tmp_path / path, "rb") for name, path in files.items()}  # noqa: SIM115
        try:
            answer = client.images.edit(model=sd, prompt="a cat", size="64x64", extra_body=settings, **opened)
        finally:
            for handle in opened.values():
                handle.close()
        assert answer.data[0].model_extra["aigc"]["seed"] == 4
        return Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json)))

    for files, flags in [
        ({"image": "start.png"}, ["--init-image", "start.png"]),
        (
            {"image": "start.png", "mask": "openai-mask.png"},
            ["--init-image", "start.png", "--mask", "grey-mask.png"],
        ),
        (
            {"image": "start.png", "mask": "grey-mask.png"},
            ["--init-image", "start.png", "--mask", "grey-mask.png"],
        ),
    ]:
        served = edit(**files)
        result = run_cli("image", "a cat", *local, *[str(tmp_path / f) if f.endswith(".png") else f for f in flags],
                         "-o", str(tmp_path / "local.png"), "--local")  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        assert list(served.getdata()) == list(Image.open(tmp_path / "local.png").getdata()), files
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.edit(model=sd, prompt="a cat", image=io.BytesIO(b"not an image"))
    assert raised.value.body["param"] == "image"
    with open(tmp_path / "start.png", "rb") as image:
        streamed = list(
            client.images.edit(
                model=sd,
                prompt="a cat",
                image=image,
                stream=True,
                partial_images=1,
                extra_body={**settings, "num_inference_steps": 8},  # 5 steps at strength 0.7: one preview
            )
        )
    assert [e.type for e in streamed] == ["image_edit.partial_image", "image_edit.completed"]


def test_a_model_sent_to_another_modalitys_route_names_the_route(client, vits, pipes):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=str(vits), messages=HI)
    assert raised.value.body["param"] == "model"
    assert "send it to /v1/audio/speech, not /v1/chat/completions" in raised.value.body["message"]
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.speech.create(model=str(pipes["sd"]), voice="alloy", input="Hello.")
    assert "/v1/images/generations" in raised.value.body["message"]


def test_a_chat_template_that_refuses_the_conversation_is_400_naming_messages(client, strict_llama):
    strict = str(strict_llama)
    assert client.chat.completions.create(model=strict, messages=HI, max_tokens=2).choices
    for messages, rule in [
        ([{"role": "system", "content": "Be brief"}, *HI], "System role not supported"),
        ([*HI, *HI], "Conversation roles must alternate"),
    ]:
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model=strict, messages=messages, max_tokens=2)
        assert raised.value.body["param"] == "messages"
        message = raised.value.body["message"]
        assert message.startswith(f"The model's chat template refuses this conversation: {rule}")


def test_an_image_request_whose_client_goes_away_stops_at_the_next_step(server, pipes):
    import http.client as httplib
    from urllib.parse import urlsplit

    parts = urlsplit(server.url)
    before = len(server.log)
    connection = httplib.HTTPConnection(parts.hostname, parts.port, timeout=60)
    body = {
        "model": str(pipes["sd"]),
        "prompt": "a cat",
        "n": 16,
        "num_inference_steps": 100,
        "size": "128x128",
    }
    connection.request(
        "POST", "/v1/images/generations", json.dumps(body), {"Content-Type": "application/json"}
    )
    time.sleep(1.0)
    connection.close()
    line = server.wait_for_line("went away: stopped", " at step ", since=before)
    assert int(line.rsplit(" at step ", 1)[1]) < 100
    small = {"model": str(pipes["sd"]), "prompt": "a dog", "num_inference_steps": 2, "size": "64x64"}
    status, _, raw = http(server.url + "/v1/images/generations", "POST", small)
    assert status == 200, raw


def test_a_text_request_sent_whole_whose_client_goes_away_stops(server, tiny):
    """Not streamed: tokens come faster than the server's check, which still runs (by the clock)."""
    import http.client as httplib
    from urllib.parse import urlsplit

    parts = urlsplit(server.url)
    before = len(server.log)
    connection = httplib.HTTPConnection(parts.hostname, parts.port, timeout=60)
    body = {
        "model": str(tiny["llama"]),
        "prompt": ["Go on and on"] * 16,
        "max_tokens": 480,
        "temperature": 1.0,
        "seed": 2,
        "backend": "torch",  # as the test server runs text; the onnx backend makes all 7680 tokens in ~1 s
    }
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    time.sleep(1.0)
    connection.close()
    server.wait_for_line("went away: stopped", " tokens", since=before)  # not all 16 x 480 tokens made


def test_a_lone_surrogate_in_any_field_is_400_naming_it(server, tiny):
    llama = str(tiny["llama"])
    for route, body, param in [
        (
            "chat/completions",
            {"model": llama, "messages": [{"role": "user", "content": "a\ud800"}]},
            "messages[0].content",
        ),
        ("completions", {"model": llama, "prompt": "\udfff"}, "prompt"),
        ("chat/completions", {"model": "x\ud800", "messages": HI}, "model"),
        ("audio/speech", {"model": "x", "input": "hi\ud800", "voice": "a"}, "input"),
    ]:
        status, _, raw = http(f"{server.url}/v1/{route}", "POST", body)
        error = json.loads(raw)["error"]
        assert (status, error["param"], error["code"]) == (400, param, "invalid_value"), raw
        assert error["message"].startswith(f"field '{param}' is not text: it holds a lone surrogate")


def test_health_answers_at_once_while_models_load():
    """/health is 503 "loading" while --preload loads, then 200 (in-process: the app over a state)."""
    from fastapi.testclient import TestClient

    from aigc_cli import __version__
    from aigc_cli.console import LogConsole
    from aigc_cli.server.app import create_app
    from aigc_cli.server.state import ServerState

    state = ServerState(None, [], LogConsole(verbose=False))
    app = TestClient(create_app(state, api_key="sekrit"))
    state.loading.set()
    answer = app.get("/health")
    assert (answer.status_code, answer.json()) == (503, {"status": "loading", "version": __version__})
    state.loading.clear()
    assert app.get("/health").json() == {"status": "ok", "version": __version__}
    assert app.head("/health").status_code == 200  # a probe that sends HEAD
    assert app.get("/v1/models").status_code == 401  # only /health is open


def test_a_preload_that_fails_stops_the_server_with_its_exit_code(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    done = subprocess.run(
        [AIGC, "serve", "--port", "0", "--preload", str(empty)],
        capture_output=True,
        env=server_env(tmp_path),
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 3, done.stderr.decode()
    errors = [line for line in done.stderr.decode().splitlines() if line.startswith("aigc: error:")]
    assert len(errors) == 1 and "not-a-model" in errors[0]
    assert "Traceback" not in done.stderr.decode()


def test_openapi_describes_every_route_with_its_body(server):
    status, _, raw = http(server.url + "/openapi.json")
    assert status == 200
    spec = json.loads(raw)
    routes = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert {
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{model_id}"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/images/generations"),
        ("POST", "/v1/audio/speech"),
    } <= routes
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    fields = chat["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"messages", "temperature", "top_p", "max_tokens", "seed", "user"} <= set(fields)
    assert fields["temperature"]["minimum"] == 0
    assert "400" in chat["responses"] and "param" in json.dumps(chat["responses"]["400"])


def test_streamed_images_send_partial_previews_then_the_image_the_cli_makes(client, pipes, tmp_path):
    """stream with partial_images: the official client reads image_generation.partial_image events (cheap
    latent previews at evenly spaced steps) and then image_generation.completed with the same image a
    non-streamed request (and the CLI) makes with the same seed."""
    import base64

    from PIL import Image

    sd = str(pipes["sd"])
    settings = {"seed": 9, "num_inference_steps": 8}
    events = list(
        client.images.generate(
            model=sd, prompt="a cat", size="64x64", stream=True, partial_images=2, extra_body=settings
        )
    )
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    previews = [Image.open(io.BytesIO(base64.b64decode(e.b64_json))) for e in events[:2]]
    assert all(p.size == (64, 64) for p in previews) and previews[0].tobytes() != previews[1].tobytes()
    whole = client.images.generate(model=sd, prompt="a cat", size="64x64", extra_body=settings)
    assert events[-1].b64_json == whole.data[0].b64_json
    assert events[-1].model_extra["aigc"]["seed"] == 9
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(model=sd, prompt="a cat", partial_images=2)
    assert raised.value.body["param"] == "partial_images"
