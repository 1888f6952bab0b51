"""`aigc serve` as a client meets it over raw HTTP: bad input gets OpenAI's error shape and the right status,
a request cannot reach local folders, remote code or voice files, the API key, the exposure rules, the Host
check (DNS rebinding) and CORS, and the server record in AIGC_HOME. Real server processes, no mocks."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from inproc import run_cli
from server_helpers import Server, http, server_env, start_server

MB = 2**20
MAX_BODY = 20 * MB
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
JSON = {"Content-Type": "application/json"}


def header(headers: dict[str, str], name: str) -> str | None:
    """A response header, whatever its case."""
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def error_of(answer: tuple[int, dict[str, str], bytes], status: int, kind: str | None = None) -> str:
    """The message of an error answer, checked: this status, OpenAI's shape, a JSON content type, one line
    with no traceback or exception class name."""
    got, headers, raw = answer
    assert got == status, raw
    assert header(headers, "content-type") == "application/json"
    body = json.loads(raw)
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if kind is not None:
        assert error["type"] == kind
    message = error["message"]
    assert isinstance(message, str) and message.strip()
    assert "\n" not in message and "Traceback" not in message
    assert not re.search(r"\b[A-Z]\w*(Error|Exception):", message), message
    return message


def one_line(stderr: bytes) -> str:
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, stderr.decode()
    assert "Traceback" not in lines[0]
    return lines[0]


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def keyed(tiny, tmp_path_factory):
    """A server that needs `Authorization: Bearer sekrit` (--api-key), the tiny Llama preloaded."""
    home = tmp_path_factory.mktemp("keyed-server")
    args = ("--api-key", "sekrit", "--preload", str(tiny["llama"]), "--keep-alive", "-1")
    running = start_server(home, *args, env=server_env(home))
    yield running
    running.stop()


def chat(server: Server, body: dict | bytes, headers: dict[str, str] | None = None, path: str = CHAT):
    return http(server.url + path, "POST", body, headers)


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"not json", "not valid JSON"),
        (b'{"messages": [', "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object (got list)"),
        (b'"hi"', "must be a JSON object (got str)"),
        (b"null", "must be a JSON object"),
        (b"", "empty"),
        (b"[" * 100_000 + b"]" * 100_000, "too deeply"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(server, raw, words):
    message = error_of(chat(server, raw, JSON), 400, "invalid_request_error")
    assert words in message


def test_an_unknown_field_is_400_naming_it(server):
    answer = chat(server, {"messages": HI, "bogus": 1})
    message = error_of(answer, 400, "invalid_request_error")
    assert "'bogus'" in message
    assert json.loads(answer[2])["error"]["code"] == "unknown_parameter"
    assert json.loads(answer[2])["error"]["param"] == "bogus"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -1),
        ("top_p", 0),
        ("top_p", 1.5),
        ("n", 0),
        ("n", 2**40),
        ("max_tokens", 0),
        ("max_completion_tokens", 0),
        ("seed", -1),
        ("seed", 2**32),
        ("top_k", -1),
        ("repetition_penalty", 0),
    ],
)
def test_a_value_out_of_range_is_400_naming_the_field_as_sent(server, field, value):
    answer = chat(server, {"messages": HI, field: value})
    message = error_of(answer, 400, "invalid_request_error")
    assert f"field '{field}'" in message
    assert json.loads(answer[2])["error"]["param"] == field


def test_seeds_past_the_largest_are_400_before_any_model_loads(server):
    message = error_of(chat(server, {"messages": HI, "seed": 2**32 - 1, "n": 2}), 400)
    assert "'seed'" in message and "'n'" in message


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("temperature", "hot", "must be a number"),
        ("temperature", True, "must be a number"),
        ("n", 1.5, "must be an integer"),
        ("max_tokens", "3", "must be an integer"),
        ("stream", "yes", "true or false"),
        ("model", 5, "must be a string"),
        ("messages", "hi", "non-empty list"),
        ("stop", [1], "'stop'"),
    ],
)
def test_a_value_of_the_wrong_type_is_400(server, field, value, words):
    body = {"messages": HI, field: value}
    message = error_of(chat(server, body), 400, "invalid_request_error")
    assert f"'{field}'" in message and words in message


@pytest.mark.parametrize("size", ["12x", "x12", "512", "512x512x3", "7x7", "99999x8"])
def test_an_image_size_that_is_not_width_x_height_is_400(server, size):
    answer = chat(server, {"prompt": "a cat", "size": size}, path="/v1/images/generations")
    assert "field 'size'" in error_of(answer, 400, "invalid_request_error")


def test_a_speech_format_it_cannot_write_is_400(server):
    body = {"input": "Hello.", "voice": "alloy", "response_format": "au"}
    message = error_of(chat(server, body, path="/v1/audio/speech"), 400, "invalid_request_error")
    assert "'response_format'" in message and '"au"' in message


def test_a_body_over_20_mb_with_a_content_length_is_413(server):
    # Exactly 20 MB is read (and found to hold an unknown field); one byte more is refused unread.
    fits = json.dumps({"messages": HI, "bogus": 1}).encode()
    fits += b" " * (MAX_BODY - len(fits))
    assert "'bogus'" in error_of(chat(server, fits, JSON), 400)
    message = error_of(chat(server, fits + b" ", JSON), 413, "invalid_request_error")
    assert "20 MB" in message


def test_a_chunked_body_over_20_mb_is_413(server):
    def chunks():
        yield b'{"messages": [], "pad": "'
        for _ in range(21):
            yield b"x" * MB
        yield b'"}'

    # urllib sends an iterable without a length chunked (Transfer-Encoding), without a Content-Length.
    message = error_of(chat(server, chunks(), JSON), 413, "invalid_request_error")
    assert "20 MB" in message


def test_an_unknown_model_is_404_model_not_found(server):
    answer = chat(server, {"messages": HI, "model": "no-such-model"})
    message = error_of(answer, 404, "invalid_request_error")
    assert "no-such-model" in message
    assert json.loads(answer[2])["error"]["code"] == "model_not_found"
    assert json.loads(answer[2])["error"]["param"] == "model"


def test_an_unknown_route_is_404_json(server):
    message = error_of(http(server.url + "/v1/nope"), 404)
    assert "/v1/nope" in message


def test_get_on_a_post_route_is_405_json(server):
    answer = http(server.url + CHAT)
    message = error_of(answer, 405)
    assert "GET" in message and CHAT in message
    assert header(answer[1], "allow") == "POST"


# --- which models a request may reach ----------------------------------------------------------------------


def test_a_local_folder_the_server_was_not_started_with_is_403(server, tiny):
    # (tiny-gpt2-bin: a folder the session's server was not started with)
    for model in (str(tiny["gpt2_bin"]), f"{tiny['llama']}/../{tiny['gpt2_bin'].name}", "/etc", "./nowhere"):
        answer = chat(server, {"messages": HI, "model": model, "max_tokens": 3})
        message = error_of(answer, 403, "permission_error")
        assert "local path" in message and "--preload" in message
    answer = chat(server, {"prompt": "hi", "model": str(tiny["gpt2_bin"])}, path="/v1/completions")
    assert "local path" in error_of(answer, 403, "permission_error")


def test_the_preloaded_folder_is_served(server, tiny):
    body = {"messages": HI, "model": str(tiny["llama"]), "max_tokens": 3, "temperature": 0}
    status, _, raw = chat(server, body)
    assert status == 200, raw
    answer = json.loads(raw)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == str(tiny["llama"])
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    assert 1 <= answer["usage"]["completion_tokens"] <= 3


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, {"messages": HI}),
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/images/generations", {"prompt": "a cat"}),
        ("/v1/audio/speech", {"input": "Hello.", "voice": "alloy"}),
    ],
)
def test_trust_remote_code_in_a_request_is_403(server, path, body):
    message = error_of(chat(server, {**body, "trust_remote_code": True}, path=path), 403, "permission_error")
    assert "trust_remote_code" in message


@pytest.mark.parametrize("voice", ["/tmp/x.npy", "x.npy", "voices/x", "..\\x"])
def test_a_voice_that_names_a_file_is_403(server, voice):
    body = {"input": "Hello.", "voice": voice}
    message = error_of(chat(server, body, path="/v1/audio/speech"), 403, "permission_error")
    assert "'voice'" in message


# --- the API key ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Bearer sekrit-and-more", "Basic sekrit", "sekrit", "Bearer"]
)
def test_without_the_right_key_it_is_401(keyed, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = http(keyed.url + "/v1/models", headers=headers)
    message = error_of(answer, 401, "invalid_request_error")
    assert json.loads(answer[2])["error"]["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in message
    assert header(answer[1], "www-authenticate") == "Bearer"


def test_every_route_but_health_needs_the_key(keyed):
    """Each route /openapi.json lists (OpenAI's, AUTOMATIC1111's, aigc's own), each method: 401 without the
    key, before its body is read; /health alone answers."""
    key = {"Authorization": "Bearer sekrit"}
    status, _, raw = http(keyed.url + "/openapi.json", headers=key)
    assert status == 200
    paths = json.loads(raw)["paths"]
    assert {"/v1/images/edits", "/v1/audio/voices", "/sdapi/v1/txt2img", "/sdapi/v1/options"} <= set(paths)
    for path, operations in paths.items():
        concrete = path.replace("{model_id}", "smollm2")
        for method in operations:
            answer = http(keyed.url + concrete, method.upper(), b"{}" if method == "post" else None)
            if path == "/health":
                assert answer[0] == 200, (method, path)
            else:
                assert answer[0] == 401, (method, path, answer[2][:200])


def test_mcp_at_slash_mcp_needs_the_key_and_answers_as_aigc_mcp_does(keyed, tiny):
    """The MCP tools over streamable HTTP on `aigc serve`, through the official SDK's client with the key;
    without it 401 like every route; from a Host the server is not bound to, 403 (DNS rebinding)."""
    mcp = pytest.importorskip("mcp")
    import anyio
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert http(keyed.url + "/mcp", "POST", hello)[0] == 401
    rebound = {"Authorization": "Bearer sekrit", "Host": "attacker.example"}
    assert http(keyed.url + "/mcp", "POST", hello, rebound)[0] == 403
    arguments = {
        "prompt": "Hello",
        "model": str(tiny["llama"]),
        "seed": 4,
        "max_tokens": 6,
        "temperature": 0.8,
    }

    async def main():
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer sekrit"}, timeout=120) as http_client:
            transport = streamable_http_client(keyed.url + "/mcp", http_client=http_client)
            async with mcp.Client(transport) as client:
                names = [tool.name for tool in (await client.list_tools()).tools]
                return names, await client.call_tool("generate_text", arguments)

    names, result = anyio.run(main)
    assert "generate_image" in names
    assert not result.is_error, result.content
    args = [
        "text",
        "Hello",
        "-m",
        str(tiny["llama"]),
        "--seed",
        "4",
        "--max-tokens",
        "6",
        "--temperature",
        "0.8",
    ]
    local = run_cli(*args, "--local")
    assert result.content[0].text == local.stdout.decode().removesuffix("\n")
    assert result.structured_content["seed"] == 4


def test_health_needs_no_key_and_says_only_that_it_is_up(keyed):
    """A load balancer's or Kubernetes' probe carries no key (llama.cpp and vLLM leave /health open too)."""
    from aigc_cli import __version__

    status, _, raw = http(keyed.url + "/health")
    assert (status, json.loads(raw)) == (200, {"status": "ok", "version": __version__})
    assert http(keyed.url + "/api/ps")[0] == 401


def test_the_key_is_checked_before_the_body(keyed):
    assert error_of(chat(keyed, b"not json", JSON), 401, "invalid_request_error")
    # A large body the server refuses is still read, so that a client that sends it all first gets the 401.
    assert error_of(chat(keyed, b"x" * (5 * MB), JSON), 401, "invalid_request_error")


def test_with_the_right_key_it_serves(keyed, tiny):
    bearer = {"Authorization": "Bearer sekrit"}
    status, _, raw = http(keyed.url + "/v1/models", headers=bearer)
    assert status == 200, raw
    assert str(tiny["llama"]) in [m["id"] for m in json.loads(raw)["data"]]
    body = {"messages": HI, "model": str(tiny["llama"]), "max_tokens": 3, "temperature": 0}
    status, _, raw = chat(keyed, body, bearer)
    assert status == 200, raw
    assert json.loads(raw)["choices"][0]["message"]["role"] == "assistant"


def test_aigc_api_key_in_the_environment_works_as_api_key(tmp_path):
    running = start_server(tmp_path, env=server_env(tmp_path, AIGC_API_KEY="sekrit"))
    try:
        assert json.loads((running.home / "server.json").read_text())["api_key_required"] is True
        error_of(http(running.url + "/v1/models"), 401, "invalid_request_error")
        error_of(http(running.url + "/v1/models", headers={"Authorization": "Bearer nope"}), 401)
        status, _, raw = http(running.url + "/v1/models", headers={"Authorization": "Bearer sekrit"})
        assert status == 200, raw
        error_of(chat(running, {"messages": HI, "bogus": 1}), 401)
        answer = chat(running, {"messages": HI, "bogus": 1}, {"Authorization": "Bearer sekrit"})
        assert "'bogus'" in error_of(answer, 400)  # past the key, on to the body
    finally:
        assert running.stop() == 0


def test_the_cli_needs_aigc_api_key_for_a_keyed_server(keyed, tiny, monkeypatch):
    monkeypatch.delenv("AIGC_API_KEY", raising=False)
    args = ("text", "hi", "-m", str(tiny["llama"]), "--max-tokens", "3", "--temperature", "0")
    refused = run_cli(*args, env={"AIGC_HOST": keyed.url}, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert refused.stdout == b""
    assert "AIGC_API_KEY" in one_line(refused.stderr)

    done = run_cli(*args, env={"AIGC_HOST": keyed.url, "AIGC_API_KEY": "sekrit"}, timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert text.strip()
    # The same text the API gives for the same settings: the CLI's request went to this server.
    body = {"messages": HI, "model": str(tiny["llama"]), "max_tokens": 3, "temperature": 0}
    status, _, raw = chat(keyed, body, {"Authorization": "Bearer sekrit"})
    assert status == 200, raw
    assert text.rstrip("\n") == json.loads(raw)["choices"][0]["message"]["content"]


# --- exposure, ports, options -----------------------------------------------------------------------------


def test_a_non_loopback_host_without_a_key_exits_2_at_once(monkeypatch):
    monkeypatch.delenv("AIGC_API_KEY", raising=False)
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stdout == b""  # never printed a URL: never served
    line = one_line(result.stderr)
    assert "--api-key" in line and "0.0.0.0" in line


def test_a_non_loopback_host_with_a_key_serves(tmp_path):
    running = start_server(tmp_path, "--api-key", "k", "--host", "0.0.0.0")
    try:
        assert running.url.startswith("http://127.0.0.1:")
        assert json.loads((running.home / "server.json").read_text())["host"] == "0.0.0.0"
        error_of(http(running.url + "/v1/models"), 401, "invalid_request_error")
        status, _, raw = http(running.url + "/v1/models", headers={"Authorization": "Bearer k"})
        assert status == 200, raw
    finally:
        assert running.stop() == 0


def test_a_port_in_use_exits_1_naming_it():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), timeout=60)
    assert result.returncode == 1, result.stderr
    assert result.stdout == b""
    assert f":{port}" in one_line(result.stderr)


def test_a_bad_keep_alive_exits_2():
    result = run_cli("serve", "--port", "0", "--keep-alive", "soon", timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stdout == b""
    line = one_line(result.stderr)
    assert "--keep-alive" in line and "soon" in line


# --- DNS rebinding and CORS -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost.evil.example:{port}"])
def test_a_foreign_host_header_is_403(server, host):
    answer = http(server.url + "/v1/models", headers={"Host": host.format(port=port_of(server))})
    message = error_of(answer, 403, "permission_error")
    assert "Host" in message
    # POST routes too, before the body is read
    answer = chat(server, {"messages": HI}, {"Host": host.format(port=port_of(server))})
    error_of(answer, 403, "permission_error")


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "LOCALHOST:{port}", "[::1]:{port}"])
def test_a_loopback_host_header_is_served(server, host):
    status, _, raw = http(server.url + "/v1/models", headers={"Host": host.format(port=port_of(server))})
    assert status == 200, raw


def test_no_cors_headers_by_default(server):
    status, headers, _ = http(server.url + "/v1/models", headers={"Origin": "http://app.example"})
    assert status == 200
    assert header(headers, "access-control-allow-origin") is None
    preflight = {
        "Origin": "http://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    answer = http(server.url + CHAT, "OPTIONS", headers=preflight)
    error_of(answer, 405)
    assert not [k for k in answer[1] if k.lower().startswith("access-control-")]


def test_cors_origin_allows_that_origin_only(tmp_path):
    running = start_server(tmp_path, "--cors-origin", "http://app.example")
    try:

        def preflight(origin: str):
            return http(
                running.url + CHAT,
                "OPTIONS",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )

        status, headers, raw = preflight("http://app.example")
        assert status == 200, raw
        assert header(headers, "access-control-allow-origin") == "http://app.example"
        assert "POST" in header(headers, "access-control-allow-methods")

        status, headers, _ = preflight("http://other.example")
        assert status == 400
        assert header(headers, "access-control-allow-origin") is None

        status, headers, _ = http(running.url + "/v1/models", headers={"Origin": "http://app.example"})
        assert status == 200
        assert header(headers, "access-control-allow-origin") == "http://app.example"
        status, headers, _ = http(running.url + "/v1/models", headers={"Origin": "http://other.example"})
        assert status == 200
        assert header(headers, "access-control-allow-origin") is None

        # CORS does not open the Host check
        answer = http(
            running.url + "/v1/models", headers={"Origin": "http://app.example", "Host": "evil.example"}
        )
        error_of(answer, 403, "permission_error")
    finally:
        assert running.stop() == 0


# --- the server record ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_server_record_lives_as_long_as_the_server(tmp_path, sig):
    running = start_server(tmp_path)
    record_path = Path(running.home) / "server.json"
    try:
        record = json.loads(record_path.read_text())
        assert record["pid"] == running.process.pid
        assert record["port"] == port_of(running)
        assert record["host"] == "127.0.0.1"
        assert record["api_key_required"] is False
    finally:
        code = running.stop(sig)
    assert code == 0, running.stderr()
    assert not record_path.exists()
    assert "Traceback" not in running.stderr()


def test_verbose_request_lines_go_to_stderr_and_stdout_keeps_only_the_url(tmp_path):
    running = start_server(tmp_path, "-v")
    try:
        status, _, _ = http(f"{running.url}/health")
        assert status == 200
    finally:
        assert running.stop() == 0
    assert running.process.stdout.read() == b""  # after the URL line: nothing
    for _ in range(50):  # the reader thread may be a line behind the exited process
        if '"GET /health HTTP/1.1" 200' in running.stderr():
            break
        time.sleep(0.1)
    assert '"GET /health HTTP/1.1" 200' in running.stderr()
