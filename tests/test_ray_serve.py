"""`aigc serve --ray` on a real local Ray cluster (`ray start --head` on loopback, 2 CPUs) driven by the
official `openai` client and raw HTTP: the same bytes as a single `aigc serve` and as the raw library, two
text replicas sharing concurrent requests, a replica killed mid-request (one clean 503, then a replacement
serves), speech scaled to zero and back, `aigc ps` showing the replicas, and bad options."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import AIGC
from inproc import run_cli
from server_helpers import http, server_env, start_server

pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.ray
RAY = str(Path(AIGC).with_name("ray"))
HI = [{"role": "user", "content": "Tell me a story"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray head on loopback with 2 CPUs, its own process group (stopped with it, not with `ray stop`,
    which would stop every Ray on the machine)."""
    home = tmp_path_factory.mktemp("ray-home")
    port = free_port()
    import torch

    # RAY_AUTH_MODE: as `ray start` makes a cluster, with token authentication. OMP_NUM_THREADS: Ray gives a
    # replica as many torch threads as the CPUs it reserves, and float sums in another order can move a pixel
    # by one: the replicas run with the threads of the single `aigc serve` they are compared with.
    threads = str(torch.get_num_threads())
    # The proxy's readiness and health checks get 60 s, not 5 and 10: the other tests keep both cores busy.
    waits = {
        name: "60"
        for name in ("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S")
    }
    env = server_env(home, RAY_AUTH_MODE="token", OMP_NUM_THREADS=threads, **waits)
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:  # `ray start --block` listens once its GCS is up
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None, head.stderr.read().decode()
            assert time.monotonic() < deadline, "ray start --head did not listen"
            time.sleep(0.2)
    yield home, f"127.0.0.1:{port}", env
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` waits on after that: its group goes next
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(timeout=3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait()


@pytest.fixture(scope="module")
def ray_server(cluster, tiny, pipes, vits):
    """`aigc serve --ray` on the cluster: two text replicas, one image replica, speech from zero to one,
    each half a CPU, models unloaded and speech scaled down after 3 s idle."""
    home, address, env = cluster
    args = ["--ray", "--ray-address", address, "--replicas", "text=2,image=1,speech=0-1", "--replica-cpus",
            "0.5", "--keep-alive", "3s", "--preload", str(tiny["llama"]), "--preload", str(pipes["sd"]), "--preload", str(vits)]  # fmt: skip
    server = start_server(home, *args, env=env, timeout=240)
    yield server
    assert server.stop() == 0, server.stderr()
    assert "aigc: server stopped" in server.stderr()


@pytest.fixture(scope="module")
def ray_client(ray_server):
    return openai.OpenAI(base_url=ray_server.url + "/v1", api_key="unused", max_retries=0, timeout=180)


def replicas(server, deployment: str) -> list[dict]:
    status, _, body = http(server.url + "/api/ps")
    assert status == 200, body
    return [row for row in json.loads(body)["replicas"] if row["deployment"] == deployment]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.25)
    return found


def same_bytes_as_aigc_serve_and_the_raw_library(ray_server, ray_client, client, tiny, pipes, vits):
    import raw

    llama = str(tiny["llama"])
    for settings in ({"temperature": 0}, {"temperature": 0.9, "seed": 11, "n": 2}):
        on_ray, single = (
            c.chat.completions.create(model=llama, messages=HI, max_tokens=20, **settings)
            for c in (ray_client, client)
        )
        assert [c.message.content for c in on_ray.choices] == [c.message.content for c in single.choices]
        for a, b in zip(on_ray.choices, single.choices, strict=True):
            timed = ("time_to_first_token", "tokens_per_second", "seconds")
            assert {k: v for k, v in a.model_extra["aigc"].items() if k not in timed} == {
                k: v for k, v in b.model_extra["aigc"].items() if k not in timed
            }
    greedy = ray_client.chat.completions.create(model=llama, messages=HI, max_tokens=20, temperature=0)
    expected = raw.generate(llama, HI[0]["content"], chat=True, max_new_tokens=20, do_sample=False)
    assert greedy.choices[0].message.content == expected

    image = {"model": str(pipes["sd"]), "prompt": "a red fox", "size": "64x64", "response_format": "b64_json",
             "extra_body": {"seed": 7, "steps": 2, "negative_prompt": "blurry"}}  # fmt: skip
    on_ray, single = (c.images.generate(**image) for c in (ray_client, client))
    assert base64.b64decode(on_ray.data[0].b64_json) == base64.b64decode(single.data[0].b64_json)

    # speech starts at zero replicas: the request waits for one, then answers the WAV of a single server
    assert replicas(ray_server, "aigc-speech") == []
    speech = {"model": str(vits), "voice": "alloy", "input": "hello there, this is a test.",
              "response_format": "wav", "extra_body": {"seed": 3}}  # fmt: skip
    on_ray, single = (c.audio.speech.create(**speech) for c in (ray_client, client))
    assert on_ray.content == single.content and on_ray.content[:4] == b"RIFF"


def concurrent_requests_spread_over_both_text_replicas(ray_server, ray_client, client, tiny):
    llama = str(tiny["llama"])
    before = {r["replica"]: r["served"] for r in replicas(ray_server, "aigc-text")}
    assert len(before) == 2
    answers: dict[int, str] = {}

    def ask(seed: int) -> None:
        reply = ray_client.chat.completions.create(
            model=llama, messages=HI, max_tokens=16, temperature=0.8, seed=seed
        )
        answers[seed] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(answers) == list(range(8))
    for seed in (0, 5):  # each equals the one request alone on a single server
        alone = client.chat.completions.create(
            model=llama, messages=HI, max_tokens=16, temperature=0.8, seed=seed
        )
        assert answers[seed] == alone.choices[0].message.content

    def counted():
        after = {r["replica"]: r["served"] for r in replicas(ray_server, "aigc-text")}
        served = {k: after[k] - before.get(k, 0) for k in after}
        return served if sum(served.values()) >= 8 else None

    served = wait_for(counted, 15, "count of 8 requests")  # the board hears of each as it ends
    assert sum(served.values()) == 8 and all(n > 0 for n in served.values()), served


def a_replica_killed_mid_request_is_one_503_and_a_replacement_serves(ray_server, ray_client, pipes):
    sd = str(pipes["sd"])
    body = {"model": sd, "prompt": "a fox", "size": "64x64", "seed": 7, "steps": 1000}
    answer: dict[str, tuple] = {}
    request = threading.Thread(
        target=lambda: answer.setdefault("r", http(ray_server.url + "/v1/images/generations", "POST", body))
    )
    request.start()
    busy = wait_for(
        lambda: [r for r in replicas(ray_server, "aigc-image") if r["active"]], 60, "busy replica"
    )
    os.kill(busy[0]["pid"], signal.SIGKILL)  # as the OOM killer or a lost node would
    request.join(timeout=60)
    assert not request.is_alive()
    status, headers, raw_body = answer["r"]
    error = json.loads(raw_body)["error"]
    assert (status, headers.get("retry-after"), error["code"]) == (503, "2", "replica_lost"), raw_body
    assert error["message"] == (
        f"The replica running {sd} was lost mid-generation: send the request again (a replacement is starting)"
    )
    # the next request waits for the replacement and is answered
    again = ray_client.images.generate(
        model=sd, prompt="a fox", size="64x64", response_format="b64_json", extra_body={"seed": 7, "steps": 2}
    )
    assert base64.b64decode(again.data[0].b64_json)[:8] == b"\x89PNG\r\n\x1a\n"
    (row,) = replicas(ray_server, "aigc-image")
    assert row["pid"] != busy[0]["pid"]


def speech_scales_to_zero_and_back_and_aigc_ps_shows_the_replicas(ray_server, ray_client, vits):
    wait_for(lambda: replicas(ray_server, "aigc-speech") == [], 90, "speech scaled to zero")
    speech = ray_client.audio.speech.create(
        model=str(vits), voice="alloy", input="back again.", response_format="wav", extra_body={"seed": 3}
    )
    assert speech.content[:4] == b"RIFF"
    assert len(replicas(ray_server, "aigc-speech")) == 1
    env = {**ray_server.env, "AIGC_HOST": ray_server.url}
    shown = subprocess.run([AIGC, "ps"], env=env, capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr.decode()
    lines = shown.stdout.decode().splitlines()
    assert lines[0].split() == ["DEPLOYMENT", "REPLICA", "NODE", "PID", "SERVED", "RUNNING"]
    rows = [line.split() for line in lines[1:] if line.startswith("aigc-")]
    assert sorted(r[0] for r in rows) == ["aigc-image", "aigc-speech", "aigc-text", "aigc-text"]
    nodes, pids = {r[2] for r in rows}, [int(r[3]) for r in rows]
    assert len(nodes) == 1  # the one node of this cluster; and each pid a replica's process here
    for pid in pids:
        os.kill(pid, 0)


def the_cli_through_the_ray_server_equals_a_local_run(ray_server, tiny):
    args = ["text", "Write a poem", "-m", str(tiny["llama"]), "--max-tokens", "24", "--temperature", "0.8",
            "--seed", "5"]  # fmt: skip
    env = {**ray_server.env, "AIGC_HOST": ray_server.url}
    served = subprocess.run([AIGC, *args], env=env, capture_output=True, timeout=120)
    assert served.returncode == 0, served.stderr.decode()
    local = run_cli(*args, "--local")
    assert served.stdout == local.stdout


def test_aigc_serve_on_a_ray_cluster(ray_server, ray_client, client, tiny, pipes, vits):
    """The cluster's checks in one test, in this order (speech starts at zero replicas; the kill comes after
    the requests that count on every replica): one test, so that pytest-xdist runs them on one worker, with
    one cluster (its loadgroup scheduling does not group tests under pytest 9)."""
    same_bytes_as_aigc_serve_and_the_raw_library(ray_server, ray_client, client, tiny, pipes, vits)
    concurrent_requests_spread_over_both_text_replicas(ray_server, ray_client, client, tiny)
    a_replica_killed_mid_request_is_one_503_and_a_replacement_serves(ray_server, ray_client, pipes)
    speech_scales_to_zero_and_back_and_aigc_ps_shows_the_replicas(ray_server, ray_client, vits)
    the_cli_through_the_ray_server_equals_a_local_run(ray_server, tiny)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "text=2"], "--replicas applies to aigc serve --ray: add --ray"),
        (
            ["--ray", "--replicas", "video=1"],
            "--replicas video=1: 'video=1' is not MODALITY=N or MODALITY=LOW-HIGH",
        ),
        (["--ray", "--replicas", "text=two"], "--replicas text=two: text=two is not a number of replicas"),
        (
            ["--ray", "--replicas", "text=2-1"],
            "--replicas text=2-1: text=2-1 is a range from high to low: write 1-2",
        ),
        (
            ["--ray", "--replicas", "text=0"],
            "--replicas text=0: text=0 gives text no replica: give at least 1",
        ),
        (["--ray", "--replicas", "text=1,text=2"], "--replicas text=1,text=2: text is named twice"),
        (["--ray", "--replicas", ",,"], "--replicas ',,' has an empty part"),
        (["--ray", "--replica-cpus", "-1"], "--replica-cpus must be at least 0 (got -1)"),
        (["--replica-cpus", "2"], "--replica-cpus applies to aigc serve --ray: add --ray"),
        (["--models-per-replica", "2"], "--models-per-replica applies to aigc serve --ray: add --ray"),
    ],
)
def test_bad_ray_options_are_one_line_exit_2(args, message):
    result = run_cli("serve", *args)
    assert result.returncode == 2, result.stderr.decode()
    (line,) = result.stderr.decode().strip().splitlines()
    assert line.startswith(f"aigc: error: {message}"), line


def test_replicas_that_cannot_fit_a_local_ray_are_refused_and_a_cluster_is_warned():
    from aigc_cli.console import LogConsole
    from aigc_cli.errors import UsageError
    from aigc_cli.server.ray_launch import _check_room
    from aigc_cli.server.ray_serve import parse_replicas

    one_cpu = {"num_cpus": 1.0, "num_gpus": 0.0}
    with pytest.raises(UsageError) as refused:
        _check_room({"CPU": 2.0}, parse_replicas(None), one_cpu, None, True, LogConsole())
    assert refused.value.message == (
        "one replica per modality (the default --replicas) with --replica-cpus 1 needs 3 CPUs at start, and "
        "this local Ray has 2: lower --replica-cpus (e.g. 0.66) or the replicas"
    )
    # autoscaling ranges count at their most: a request for a modality with no room would wait for ever
    with pytest.raises(UsageError, match="needs 5 CPUs at their most, and this local Ray has 2"):
        _check_room(
            {"CPU": 2.0}, parse_replicas("text=2,image=0-1,speech=0-2"), one_cpu, "x", True, LogConsole()
        )
    _check_room({"CPU": 5.0}, parse_replicas("text=2,image=0-1,speech=0-2"), one_cpu, "x", True, LogConsole())
    with pytest.raises(UsageError, match="needs 2 GPUs at start, and this local Ray has 1"):
        _check_room({"CPU": 8.0, "GPU": 1.0}, parse_replicas("text=1,image=1,speech=0-1"),
                    {"num_cpus": 1.0, "num_gpus": 1.0}, "text=1,image=1,speech=0-1", True, LogConsole())  # fmt: skip


def test_a_ray_address_where_nothing_listens_is_one_line_not_rays_retries():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_cli("serve", "--ray", "--ray-address", f"127.0.0.1:{port}", "--port", "0")
    assert result.returncode == 1, result.stderr.decode()
    (line,) = result.stderr.decode().strip().splitlines()
    assert line.startswith(f"aigc: error: No Ray cluster answers at 127.0.0.1:{port} ("), line
    assert line.endswith(
        "start one there with `ray start --head`, or leave out --ray-address for a local Ray"
    )
