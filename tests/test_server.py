"""`aigc serve` as clients use it: the official openai client, the CLI through the server, keep-alive,
concurrency, a client that goes away, a server that dies. Real servers on free loopback ports."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import threading
import time

import pytest
from conftest import AIGC, heavy_imports
from inproc import run_cli
from PIL import Image
from ptys import run_in_pty
from server_helpers import http, server_env, start_server

openai = pytest.importorskip("openai")

SMALL_IMAGE = ["--steps", "2", "--width", "64", "--height", "64"]


def local(*args: str, input: bytes | str | None = None) -> subprocess.CompletedProcess:
    """`aigc ARGS --local`: the in-process run to compare with."""
    result = run_cli(*args, "--local", input=input)
    assert result.returncode == 0, result.stderr.decode()
    return result


def via(server, *args: str, input: bytes | str | None = None, **env: str) -> subprocess.CompletedProcess:
    """`aigc ARGS` sent to the server (AIGC_HOST)."""
    return run_cli(*args, input=input, env={"AIGC_HOST": server.url, **env})


# --- the openai client --------------------------------------------------------------------------------------


def test_chat_equals_the_local_run_greedy_and_sampled(server, client, tiny):
    llama = str(tiny["llama"])
    reply = client.chat.completions.create(
        model=llama, messages=[{"role": "user", "content": "Tell me a story"}], max_tokens=20, temperature=0
    )
    expected = local("text", "Tell me a story", "-m", llama, "--max-tokens", "20", "--temperature", "0")
    assert reply.choices[0].message.content + "\n" == expected.stdout.decode()
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens == reply.choices[0].model_extra["aigc"]["completion_tokens"]
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    sampled = client.chat.completions.create(
        model=llama,
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=20,
        temperature=0.9,
        seed=11,
        n=2,
    )
    expected = local(
        "text",
        "Tell me a story",
        "-m",
        llama,
        "--max-tokens",
        "20",
        "--temperature",
        "0.9",
        "--seed",
        "11",
        "-n",
        "2",
        "--json",
    )
    lines = [json.loads(line) for line in expected.stdout.decode().splitlines()]
    assert [c.message.content for c in sampled.choices] == [line["text"] for line in lines]
    assert [c.model_extra["aigc"]["seed"] for c in sampled.choices] == [11, 12]
    assert sampled.choices[0].message.content != sampled.choices[1].message.content


def test_streamed_chat_equals_the_whole_reply_and_reports_usage(server, client, tiny):
    llama = str(tiny["llama"])
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "And then?"},
    ]
    whole = client.chat.completions.create(model=llama, messages=messages, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(
        model=llama,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions_send_the_prompt_raw(server, client, tiny):
    gpt2 = str(tiny["gpt2"])
    reply = client.completions.create(model=gpt2, prompt="Once upon a time", max_tokens=16, temperature=0)
    expected = local(
        "text", "Once upon a time", "-m", gpt2, "--max-tokens", "16", "--temperature", "0", "--raw"
    )
    assert reply.choices[0].text + "\n" == expected.stdout.decode()
    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model=gpt2, prompt="Once upon a time", max_tokens=16, temperature=0, stream=True
        )
        if c.choices
    ]
    assert "".join(pieces) == reply.choices[0].text


def test_images_are_the_local_png_bytes(server, client, pipes, tmp_path):
    sd = str(pipes["sd"])
    result = client.images.generate(
        model=sd,
        prompt="a red fox",
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 7, "steps": 2, "negative_prompt": "blurry"},
    )
    served = base64.b64decode(result.data[0].b64_json)
    local("image", "a red fox", "-m", sd, "--seed", "7", "--negative", "blurry", *SMALL_IMAGE, "-o", "a.png")
    written = (tmp_path / "a.png").read_bytes()
    a, b = Image.open(io.BytesIO(served)), Image.open(io.BytesIO(written))
    assert a.text == b.text
    assert a.tobytes() == b.tobytes()
    assert served == written  # same pixels, same `parameters` and `aigc` chunks
    image = Image.open(io.BytesIO(served))
    assert "Seed: 7" in image.text["parameters"]
    assert json.loads(image.text["aigc"])["negative"] == "blurry"
    assert result.data[0].model_extra["aigc"]["seed"] == 7


def test_speech_is_the_local_wav(server, client, vits):
    speech = client.audio.speech.create(
        model=str(vits),
        voice="alloy",  # OpenAI's name: a one-speaker voice speaks as itself
        input="hello there, this is a test.",
        response_format="wav",
        extra_body={"seed": 3},
    )
    expected = local("speak", "hello there, this is a test.", "-m", str(vits), "--seed", "3", "-o", "-")
    assert speech.content == expected.stdout
    pcm = http(
        f"{server.url}/v1/audio/speech",
        "POST",
        {"model": str(vits), "input": "hello there, this is a test.", "response_format": "pcm", "seed": 3},
    )
    raw = local(
        "speak", "hello there, this is a test.", "-m", str(vits), "--seed", "3", "--format", "raw", "-o", "-"
    )
    assert pcm[0] == 200 and pcm[2] == raw.stdout


def test_models_lists_what_was_preloaded(server, client, tiny):
    ids = {model.id for model in client.models.list()}
    assert {str(tiny["llama"]), str(tiny["gpt2"])} <= ids


# --- the CLI through the server -----------------------------------------------------------------------------


def test_cli_text_through_the_server_equals_local(server, tiny):
    llama = str(tiny["llama"])
    args = ["text", "Write a poem", "-m", llama, "--max-tokens", "24", "--temperature", "0.8", "--seed", "5"]
    served = via(server, *args, "-v")
    assert served.returncode == 0, served.stderr.decode()
    assert served.stdout == local(*args).stdout
    assert f"on the server at {server.url}" in served.stderr.decode()
    both = [json.loads(via(server, *args, "--json").stdout), json.loads(local(*args, "--json").stdout)]
    for record in both:
        for timing in ("time_to_first_token", "tokens_per_second", "seconds"):
            record.pop(timing)
    assert both[0] == both[1]
    counted = local(*args, "-n", "3").stdout
    assert counted.count(b"\n\n") >= 2  # completions are apart
    assert via(server, *args, "-n", "3", "--no-stream").stdout == counted
    assert via(server, *args, "-n", "3").stdout == counted
    raw = ["text", "Once", "-m", str(tiny["gpt2"]), "--raw", "--max-tokens", "12", "--temperature", "0"]
    assert via(server, *raw).stdout == local(*raw).stdout


def test_the_cli_bar_shows_the_servers_steps(server, pipes, tmp_path):
    """Through a server, `aigc image -n 2` on a terminal draws its bar from the server's steps as they go
    (stream with progress), to 100%."""
    args = [AIGC, "image", "a lighthouse", "-m", str(pipes["sd"]), "--seed", "3", "-n", "2", "--steps", "6"]
    args += ["--width", "64", "--height", "64", "-o", str(tmp_path / "bar.png")]
    shown = run_in_pty(args, env={**os.environ, "AIGC_HOST": server.url})
    assert "denoising" in shown and "100%" in shown, shown
    assert (tmp_path / "bar-1.png").is_file() and (tmp_path / "bar-2.png").is_file()


def test_cli_image_and_speech_through_the_server_equal_local(server, pipes, vits, tmp_path):
    sd = str(pipes["sd"])
    args = ["image", "a lighthouse", "-m", sd, "--seed", "3", *SMALL_IMAGE]
    assert via(server, *args, "-o", "served.png").returncode == 0
    local(*args, "-o", "here.png")
    assert (tmp_path / "served.png").read_bytes() == (tmp_path / "here.png").read_bytes()
    piped = via(server, *args, "-o", "-")
    assert piped.returncode == 0 and piped.stdout == (tmp_path / "here.png").read_bytes()
    assert via(server, *args, "-n", "2", "-o", "two.png").returncode == 0
    local(*args, "-n", "2", "-o", "both.png")
    for index in (1, 2):
        assert (tmp_path / f"two-{index}.png").read_bytes() == (tmp_path / f"both-{index}.png").read_bytes()

    speak = ["speak", "Hello there. How are you?", "-m", str(vits), "--seed", "9"]
    assert via(server, *speak, "-o", "served.flac").returncode == 0
    local(*speak, "-o", "here.flac")
    assert (tmp_path / "served.flac").read_bytes() == (tmp_path / "here.flac").read_bytes()
    assert (
        via(server, *speak, "--format", "raw", "-o", "-").stdout
        == local(*speak, "--format", "raw", "-o", "-").stdout
    )
    record = json.loads(via(server, *speak, "-o", "served.wav", "--json").stdout)
    expected = json.loads(local(*speak, "-o", "here.wav", "--json").stdout)
    for name in ("path", "real_time_factor"):
        record.pop(name), expected.pop(name)
    assert record == expected


def test_inpainting_through_the_server_equals_local_and_local_adapters_are_refused(server, pipes, tmp_path):
    start = Image.new("RGB", (64, 64), (200, 40, 40))
    start.save(tmp_path / "start.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    mask.save(tmp_path / "mask.png")
    args = ["image", "a cat", "-m", str(pipes["sd"]), "--seed", "5", "--steps", "4"]
    args += ["--init-image", "start.png", "--mask", "mask.png"]
    assert via(server, *args, "-o", "served.png").returncode == 0
    local(*args, "-o", "here.png")
    assert (tmp_path / "served.png").read_bytes() == (tmp_path / "here.png").read_bytes()
    assert json.loads(Image.open(tmp_path / "served.png").text["aigc"])["mask"] == "mask.png"
    for field, value in (("lora", ["/etc/passwd:0.5"]), ("vae", "/etc")):
        body = {"model": str(pipes["sd"]), "prompt": "a cat", field: value}
        status, _, answer = http(f"{server.url}/v1/images/generations", "POST", body)
        assert status == 403, answer
        assert (
            "is a local path: this server loads adapters and VAEs only from the Hugging Face Hub"
            in (json.loads(answer)["error"]["message"])
        )


def test_chat_through_the_server_equals_a_local_chat(server, tiny):
    args = ["chat", "-m", str(tiny["llama"]), "--max-tokens", "6", "--temperature", "0.8", "--seed", "4"]
    lines = "Hello\nAnd then?\n"
    served = via(server, *args, "-v", input=lines)
    assert served.returncode == 0, served.stderr.decode()
    assert "on the server at" in served.stderr.decode()
    assert served.stdout == local(*args, input=lines).stdout
    assert served.stdout.count(b"\n") >= 2


def test_cli_through_the_server_imports_no_torch(server, tiny, pipes, vits):
    heavy, result = heavy_imports(
        "text", "hi", "-m", str(tiny["llama"]), "--max-tokens", "3", env={"AIGC_HOST": server.url}
    )
    assert heavy == []
    assert result.stdout.strip()
    image = ["image", "a fox", "-m", str(pipes["sd"]), *SMALL_IMAGE, "-o", "fox.png"]
    speak = ["speak", "Hello.", "-m", str(vits), "-o", "hello.wav"]
    for args in (image, speak):
        heavy, _ = heavy_imports(*args, env={"AIGC_HOST": server.url})
        assert heavy == [], args


def test_cli_errors_from_the_server_keep_their_exit_codes(server, tiny):
    missing = via(server, "text", "hi", "-m", "no-such/model-here")
    assert missing.returncode == 3
    assert missing.stderr.decode().count("\n") == 1
    long = via(server, "text", "word " * 600, "-m", str(tiny["gpt2"]), "--raw")
    assert long.returncode == 2 and "shorten the prompt" in long.stderr.decode()


def test_cli_runs_locally_when_the_server_does_not_serve_the_folder(server, tiny, tmp_path):
    # A folder the server was not started with: the server refuses it, and the CLI runs it here.
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(tiny["llama"]), str(copy)], check=True)
    result = via(server, "text", "hi", "-m", str(copy), "--max-tokens", "4", "--temperature", "0", "-v")
    assert result.returncode == 0, result.stderr.decode()
    assert "running here" in result.stderr.decode()
    assert (
        result.stdout
        == local("text", "hi", "-m", str(copy), "--max-tokens", "4", "--temperature", "0").stdout
    )


def test_an_aigc_host_that_is_not_aigc_is_named_so(tiny):
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # the CLI runs in this process: its stderr is checked below
            pass

    listening = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=listening.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{listening.server_address[1]}"
        result = run_cli("text", "hi", "-m", str(tiny["llama"]), env={"AIGC_HOST": url})
    finally:
        listening.shutdown()
    assert result.returncode == 1
    line = result.stderr.decode()
    assert line.startswith(
        f"aigc: error: The server at {url} (AIGC_HOST) is not an aigc server (it answered HTTP 501 "
    )
    assert line.endswith("): point AIGC_HOST at `aigc serve` or unset it, or run with --local\n")
    assert line.count("\n") == 1


def test_a_model_the_server_has_not_cached_names_allow_pull(server):
    result = via(server, "text", "hi", "-m", "gpt2")
    assert result.returncode == 3
    assert result.stderr.decode().startswith(
        "aigc: error: Model 'gpt2' is not cached on this server, which downloads nothing unless started with "
        "--allow-pull: "
    )


def test_unreachable_aigc_host_is_one_line_exit_1(tiny):
    result = run_cli("text", "hi", "-m", str(tiny["llama"]), env={"AIGC_HOST": "127.0.0.1:9"})
    assert result.returncode == 1
    assert "Cannot reach the server at http://127.0.0.1:9 (AIGC_HOST)" in result.stderr.decode()
    assert result.stderr.decode().count("\n") == 1
    bad = run_cli("text", "hi", env={"AIGC_HOST": "ftp://x"})
    assert bad.returncode == 2 and "AIGC_HOST must be" in bad.stderr.decode()
    # OpenAI's base URL, as clients are given it, names the same server; another path is named as the fault
    based = run_cli("text", "hi", "-m", str(tiny["llama"]), env={"AIGC_HOST": "http://127.0.0.1:9/v1/"})
    assert "Cannot reach the server at http://127.0.0.1:9 (AIGC_HOST)" in based.stderr.decode()
    path = run_cli("text", "hi", env={"AIGC_HOST": "http://127.0.0.1:9/api"})
    assert path.returncode == 2 and path.stderr.decode().endswith(": no path but OpenAI's /v1 (got '/api')\n")


# --- discovery, keep-alive, ps --------------------------------------------------------------------------------


def test_the_cli_finds_the_server_by_its_record_and_stops_using_it(tiny, isolated):
    llama = str(tiny["llama"])
    env = server_env(isolated)
    env["AIGC_HOME"] = os.environ["AIGC_HOME"]  # the test's own home: the CLI below shares it
    running = start_server(isolated, "--preload", llama, env=env)
    args = ["text", "hi", "-m", llama, "--max-tokens", "4", "--temperature", "0", "-v"]
    served = run_cli(*args)
    assert "on the server at" in served.stderr.decode()
    table = run_cli("ps")
    assert table.returncode == 0
    header, row = table.stdout.decode().splitlines()[:2]
    assert header.split()[:3] == ["NAME", "MODALITY", "BACKEND"]
    assert row.split()[1:3] == ["text", "torch"]
    on_terminal = run_in_pty([AIGC, "ps"]).splitlines()  # 80 columns: the folder's path cut at its start
    assert on_terminal[0].split()[:2] == ["NAME", "MODALITY"] and on_terminal[1].startswith("…")
    assert max(len(line) for line in on_terminal) <= 80 < len(row)
    assert running.stop() == 0
    assert not (isolated / "aigc-home" / "server.json").exists()
    here = run_cli(*args)
    assert "server" not in here.stderr.decode()
    assert here.stdout == served.stdout
    gone = run_cli("ps")
    assert gone.returncode == 1 and "No aigc server is running" in gone.stderr.decode()
    # A record left by a server killed with SIGKILL names a dead process: ignored.
    (isolated / "aigc-home" / "server.json").write_text(
        json.dumps({"pid": 2**22 + 7, "host": "127.0.0.1", "port": 9})
    )
    assert "server" not in run_cli(*args).stderr.decode()


def test_keep_alive_unloads_idle_models(tiny, tmp_path):
    llama = str(tiny["llama"])
    running = start_server(tmp_path, "--keep-alive", "1s", "--preload", llama)
    try:
        loaded = json.loads(http(f"{running.url}/api/ps")[2])["models"]
        assert [row["model"] for row in loaded] == [llama]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and json.loads(http(f"{running.url}/api/ps")[2])["models"]:
            time.sleep(0.2)
        assert json.loads(http(f"{running.url}/api/ps")[2])["models"] == []
        while time.monotonic() < deadline and f"unloaded {llama}" not in running.stderr():
            time.sleep(0.05)  # said once it is gone
        assert f"unloaded {llama}" in running.stderr()
        # It loads again on the next request.
        body = {"model": llama, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        assert http(f"{running.url}/v1/chat/completions", "POST", body)[0] == 200
    finally:
        running.stop()
    zero = start_server(tmp_path, "--keep-alive", "0", "--preload", llama)
    try:
        body = {"model": llama, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        assert http(f"{zero.url}/v1/chat/completions", "POST", body)[0] == 200
        # Loaded for the request, unloaded as soon as it is answered (and its engine's lease ends, which a
        # batch may end a moment after the answer).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and json.loads(http(f"{zero.url}/api/ps")[2])["models"]:
            time.sleep(0.05)
        assert json.loads(http(f"{zero.url}/api/ps")[2])["models"] == []
    finally:
        zero.stop()


# --- concurrency ------------------------------------------------------------------------------------------------


def test_eight_concurrent_clients_each_get_their_solo_result(server, client, tiny):
    llama = str(tiny["llama"])
    prompts = [f"Story number {i}" for i in range(8)]

    def ask(prompt: str) -> str:
        reply = client.chat.completions.create(
            model=llama, messages=[{"role": "user", "content": prompt}], max_tokens=16, temperature=0
        )
        return reply.choices[0].message.content

    solo = [ask(p) for p in prompts]
    before = json.loads(http(f"{server.url}/api/ps")[2])["batches"][llama]
    results: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, ask(prompts[i]))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [results[i] for i in range(8)] == solo
    # Greedy requests that arrived together ran in batches (server/batching.py), and still equal solo runs.
    sizes = json.loads(http(f"{server.url}/api/ps")[2])["batches"][llama][len(before) :]
    assert max(sizes) > 1 and sum(sizes) == 8


def test_health_answers_while_a_generation_runs_and_a_gone_client_stops_it(server, tiny):
    import http.client as httplib
    from urllib.parse import urlsplit

    parts = urlsplit(server.url)
    before = len(server.log)  # the server is the session's: other tests' clients went away too
    connection = httplib.HTTPConnection(parts.hostname, parts.port, timeout=60)
    body = {
        "model": str(tiny["llama"]),
        "messages": [{"role": "user", "content": "Go on and on"}],
        "max_tokens": 480,
        "temperature": 1.0,
        "seed": 1,
        "stream": True,
    }
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    events = 0
    while events < 4:
        if response.readline().startswith(b"data: "):
            events += 1
    started = time.monotonic()
    assert http(f"{server.url}/health")[0] == 200
    assert json.loads(http(f"{server.url}/api/ps")[2])["models"]  # answers too
    assert time.monotonic() - started < 5
    connection.close()  # the client goes away mid-stream
    line = server.wait_for_line("the client went away", since=before)
    stopped_after = int(line.split(" after ")[1].split()[0])
    assert stopped_after < 480


# --- a server that dies -----------------------------------------------------------------------------------------


def test_a_server_that_dies_mid_request_is_one_line_and_no_file(tiny, pipes, tmp_path):
    """One server, killed while an image and a text request both run: each CLI says so in one line (exit 1)
    and the image's file is not written."""
    running = start_server(tmp_path, "--preload", str(tiny["llama"]), "--preload", str(pipes["sd"]))
    env = {**os.environ, "AIGC_HOST": running.url}
    out = tmp_path / "out"
    out.mkdir()
    image = ["image", "a fox", "-m", str(pipes["sd"]), "--steps", "400", "--width", "64", "--height", "64"]
    drawing = subprocess.Popen(
        [AIGC, *image, "-o", str(out / "fox.png")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )

    def image_in_use() -> bool:
        rows = json.loads(http(f"{running.url}/api/ps")[2])["models"]
        return any(row["model"] == str(pipes["sd"]) and row["in_use"] for row in rows)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not image_in_use():
        time.sleep(0.05)
    assert image_in_use(), running.stderr()
    text = ["text", "Go on", "-m", str(tiny["llama"]), "--max-tokens", "480", "--temperature", "1"]
    writing = subprocess.Popen(
        [AIGC, *text, "--seed", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert writing.stdout.read(1)  # text is coming: the generation runs
    assert drawing.poll() is None  # and the image is still being drawn
    running.process.send_signal(signal.SIGKILL)
    for cli in (writing, drawing):
        _, err = cli.communicate(timeout=60)
        assert cli.returncode == 1, err.decode()
        assert err.decode().count("\n") == 1 and "stopped mid-request" in err.decode(), err.decode()
    assert list(out.iterdir()) == []
    running.stop()


def test_notices_reach_the_cli_and_http_clients(server, client, tiny, pipes):
    """A warning a run gives locally (max tokens capped, a prompt the text encoder cuts) is printed the same
    through the server, and an HTTP client gets it in the response's `aigc` object, with a stable code."""
    llama = str(tiny["llama"])
    # --stop e: the cap is said before generating; the tiny model's text holds an "e" within ~15 tokens,
    # where the ~490 tokens it is capped to took 5 s a run
    capped = [
        "text",
        "Write a poem",
        "-m",
        llama,
        "--max-tokens",
        "100000",
        "--temperature",
        "0",
        "--stop",
        "e",
    ]
    args = [*capped, "-q"]
    here, served = local(*capped), via(server, *capped)
    assert served.returncode == 0 and served.stdout == here.stdout
    warning = [line for line in here.stderr.decode().splitlines() if "warning" in line]
    assert warning and "--max-tokens 100000 capped to" in warning[0]
    assert [line for line in served.stderr.decode().splitlines() if "warning" in line] == warning
    assert via(server, *args).stderr == b""  # -q: nothing

    answer = client.chat.completions.create(
        model=llama,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=100000,
        temperature=0,
        stop=["e"],
    )
    (notice,) = [n for n in answer.model_extra["aigc"]["notices"] if n["level"] == "warning"]
    assert notice["code"] == "max_tokens_capped" and notice["level"] == "warning"
    assert notice["message"].startswith("field 'max_tokens' 100000 capped to")

    long = ["image", "word " * 120, "-m", str(pipes["sd"]), "--seed", "1", *SMALL_IMAGE, "-o", "x.png"]
    lines = [line for line in local(*long).stderr.decode().splitlines() if "warning" in line]
    assert len(lines) == 1 and "text encoder reads" in lines[0]
    served = via(server, *long)
    assert served.returncode == 0
    assert [line for line in served.stderr.decode().splitlines() if "warning" in line] == lines
