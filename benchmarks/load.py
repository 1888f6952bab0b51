"""A bounded load run against a real `aigc serve`: mixed concurrent clients for a fixed time.

The server runs as a subprocess on a free 127.0.0.1 port, offline, with its own AIGC_HOME and Hugging Face
home in a temp folder (deleted afterwards), holding the embedded SmolLM2 (text), the embedded Piper voice
(speech) and a tiny Stable Diffusion built here from configs (tests/tiny_pipelines.py). Asyncio clients on
the official `openai` AsyncOpenAI client ask, each in turn until the time is up: chat completions (streamed
and whole, alternately; small max_tokens), /v1/images/generations (64x64, 2 steps) and /v1/audio/speech
(wav). Requests still running at the deadline finish and count.

Printed per kind and overall: requests, errors, p50/p95 latency, requests/s, and the server's RSS after the
warm-up, at the end and at its peak. Every error is printed with its body, and any error makes the exit
status 1. Nothing leaves 127.0.0.1.

    .venv/bin/python benchmarks/load.py [--seconds 30] [--text-clients 2] [--image-clients 1]
        [--speech-clients 1] [--json]

or `python benchmarks/run.py load`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).parent
AIGC = str(Path(sys.executable).with_name("aigc"))
TEXT_MODEL, SPEECH_MODEL = "smollm2", "piper-joe"  # the embedded defaults: no network needed
PROMPTS = [
    "Write a haiku about rain.",
    "Tell me a short story about a lighthouse.",
    "What is a red fox?",
    "Describe winter in one sentence.",
]
IMAGE_PROMPTS = ["a red fox, watercolor", "a lighthouse at dusk, oil painting", "a cat sitting on a mat"]
SPEECH_TEXTS = ["Hello there, how are you today?", "The lighthouse keeper watched the sea all night long."]
REQUEST_TIMEOUT = 300.0
START_TIMEOUT = 600.0  # the first start converts the embedded model and may export it to ONNX


@dataclass
class Sample:
    kind: str
    seconds: float
    error: str | None = None


@dataclass
class Options:
    seconds: float = 30.0
    text_clients: int = 2
    image_clients: int = 1
    speech_clients: int = 1
    max_tokens: int = 16
    image_size: int = 64
    image_steps: int = 2
    text_backend: str | None = None
    """None: the server's own choice (`auto`: onnx on a CPU)."""


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: list[str] = field(default_factory=list)


def server_env(home: Path, options: Options) -> dict[str, str]:
    """Offline, its own AIGC_HOME and HF home, none of the user's model, host or key settings."""
    env = {
        **os.environ,
        "AIGC_HOME": str(home / "aigc-home"),
        "HF_HOME": str(home / "hf-home"),
        "HF_HUB_OFFLINE": "1",
    }
    for name in (
        "AIGC_DEBUG",
        "AIGC_DEVICE",
        "AIGC_TEXT_MODEL",
        "AIGC_IMAGE_MODEL",
        "AIGC_SPEECH_MODEL",
        "AIGC_TEXT_BACKEND",
        "AIGC_IMAGE_BACKEND",
        "AIGC_HOST",
        "AIGC_API_KEY",
        "HF_HUB_CACHE",
        "TRANSFORMERS_OFFLINE",
    ):
        env.pop(name, None)
    env["AIGC_IMAGE_BACKEND"] = "torch"  # the tiny pipeline: an OpenVINO export would only add start-up
    if options.text_backend:
        env["AIGC_TEXT_BACKEND"] = options.text_backend
    return env


def build_tiny_sd(out: Path, env: dict[str, str]) -> Path:
    """tests/tiny_pipelines.py's tiny SD, built in its own process: torch stays out of the clients' one."""
    if not (out / "model_index.json").exists():
        code = "import sys, pathlib, tiny_pipelines; tiny_pipelines.build_sd(pathlib.Path(sys.argv[1]))"
        built = subprocess.run(
            [sys.executable, "-c", code, str(out)],
            env={**env, "PYTHONPATH": str(HERE.parent / "tests")},
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        if built.returncode != 0:
            raise SystemExit(f"building the tiny Stable Diffusion failed:\n{built.stderr.decode()}")
    return out


def start_server(home: Path, env: dict[str, str], preload: list[str]) -> Server:
    """`aigc serve --host 127.0.0.1 --port 0` once it prints its URL (its models loaded)."""
    command = [AIGC, "serve", "--host", "127.0.0.1", "--port", "0", "--keep-alive", "-1"]
    for model in preload:
        command += ["--preload", model]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=home
    )
    server = Server(process, "")

    def read_stderr() -> None:
        for line in process.stderr:
            server.log.append(line.decode(errors="replace").rstrip("\n"))

    threading.Thread(target=read_stderr, daemon=True).start()
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    line = lines[0] if lines else b""
    server.url = line.decode().strip()
    if urlsplit(server.url).hostname != "127.0.0.1":
        stop_server(server)
        log = "\n".join(server.log)
        raise SystemExit(f"aigc serve did not start on 127.0.0.1 (exit {process.returncode}):\n{log}")
    return server


def stop_server(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


def rss_mb(pid: int) -> float | None:
    """The process's resident set (VmRSS) in MB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:
        return None


def described(exc: BaseException) -> str:
    """An error as one readable string: the HTTP status and body where the server answered."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.response.text}"
    return f"{type(exc).__name__}: {exc}"


class Kinds:
    """One coroutine per kind of request: each asks once and checks the answer's shape."""

    def __init__(self, client, options: Options, sd: str | None) -> None:
        self.client, self.options, self.sd = client, options, sd

    async def text(self, i: int, stream: bool) -> None:
        messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        create = self.client.chat.completions.create
        if not stream:
            reply = await create(model=TEXT_MODEL, messages=messages, max_tokens=self.options.max_tokens)
            if not isinstance(reply.choices[0].message.content, str):
                raise ValueError(f"no text in the reply: {reply.model_dump_json()}")
            return
        chunks = await create(
            model=TEXT_MODEL, messages=messages, max_tokens=self.options.max_tokens, stream=True
        )
        finish = None
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        if finish is None:
            raise ValueError("the stream ended without a finish_reason")

    async def image(self, i: int) -> None:
        size = self.options.image_size
        result = await self.client.images.generate(
            model=self.sd,
            prompt=IMAGE_PROMPTS[i % len(IMAGE_PROMPTS)],
            size=f"{size}x{size}",
            response_format="b64_json",
            extra_body={"steps": self.options.image_steps},
        )
        png = base64.b64decode(result.data[0].b64_json or "")
        if not png.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError(f"not a PNG: {png[:16]!r}")

    async def speech(self, i: int) -> None:
        audio = await self.client.audio.speech.create(
            model=SPEECH_MODEL,
            voice="alloy",
            input=SPEECH_TEXTS[i % len(SPEECH_TEXTS)],
            response_format="wav",
        )
        if not audio.content.startswith(b"RIFF") or len(audio.content) <= 44:
            raise ValueError(f"not a WAV with audio: {len(audio.content)} bytes, {audio.content[:16]!r}")


async def client_loop(kind: str, number: int, kinds: Kinds, deadline: float, samples: list[Sample]) -> None:
    """Ask in turn until the deadline; a text client alternates streamed and whole replies."""
    turn = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        label = kind
        try:
            if kind == "text":
                stream = (number + turn) % 2 == 0
                label = "text-stream" if stream else "text"
                await kinds.text(number + turn, stream)
            elif kind == "image":
                await kinds.image(number + turn)
            else:
                await kinds.speech(number + turn)
            samples.append(Sample(label, time.perf_counter() - started))
        except Exception as exc:
            samples.append(Sample(label, time.perf_counter() - started, described(exc)))
            await asyncio.sleep(0.2)  # a server that refuses at once is not asked thousands of times
        turn += 1


async def until_ready(http, url: str, pid: int) -> None:
    """Wait for /health to say 200: the server may print its URL while its --preload models still load
    (503 "loading")."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if rss_mb(pid) is None:
            raise RuntimeError("aigc serve exited while loading its models")
        try:
            if (await http.get(f"{url}/health", timeout=10)).status_code == 200:
                return
        except Exception:  # not answering yet
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError(f"aigc serve still loading after {START_TIMEOUT:g} s")


async def drive(url: str, pid: int, options: Options, sd: str | None) -> dict:
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    # trust_env=False: no proxy from the environment between the clients and 127.0.0.1
    http = DefaultAsyncHttpxClient(trust_env=False)
    client = AsyncOpenAI(
        base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=REQUEST_TIMEOUT, http_client=http
    )
    await until_ready(http, url, pid)
    kinds = Kinds(client, options, sd)
    counts = {"text": options.text_clients, "image": options.image_clients, "speech": options.speech_clients}
    # Warm-up, not counted: one request of each kind (and both text shapes), so the start RSS holds the
    # buffers a first request allocates.
    warm: list = []
    if counts["text"]:
        warm += [kinds.text(0, False), kinds.text(0, True)]
    if counts["image"]:
        warm.append(kinds.image(0))
    if counts["speech"]:
        warm.append(kinds.speech(0))
    warm_errors = []
    for job in warm:
        try:
            await job
        except Exception as exc:
            warm_errors.append(f"warm-up: {described(exc)}")
    rss = {"start": rss_mb(pid), "peak": rss_mb(pid)}
    load_before = os.getloadavg()[0]

    async def watch(stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = rss_mb(pid)
            if now is not None:
                rss["peak"] = max(rss["peak"] or 0.0, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    samples: list[Sample] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(stop))
    started = time.perf_counter()
    deadline = time.monotonic() + options.seconds
    loops = [
        client_loop(kind, number, kinds, deadline, samples)
        for kind, n in counts.items()
        for number in range(n)
    ]
    await asyncio.gather(*loops)
    wall = time.perf_counter() - started
    stop.set()
    await watcher
    rss["end"] = rss_mb(pid)
    await client.close()
    load = {"start": load_before, "end": os.getloadavg()[0]}  # other work on the cores skews every figure
    return {"samples": samples, "wall": wall, "rss": rss, "load": load, "warm_errors": warm_errors}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def summary(samples: list[Sample], wall: float) -> dict:
    seconds = [s.seconds for s in samples if s.error is None]
    return {
        "requests": len(samples),
        "ok": len(seconds),
        "errors": sum(s.error is not None for s in samples),
        "p50_s": percentile(seconds, 50),
        "p95_s": percentile(seconds, 95),
        "requests_per_s": len(seconds) / wall if wall else 0.0,
    }


def run_load(options: Options, home: Path) -> dict:
    """Build, start, warm, drive for options.seconds, stop: the report as a dict."""
    env = server_env(home, options)
    preload = []
    sd = None
    if options.text_clients:
        preload.append(TEXT_MODEL)
    if options.speech_clients:
        preload.append(SPEECH_MODEL)
    if options.image_clients:
        print("load: building a tiny Stable Diffusion from configs...", file=sys.stderr)
        sd = str(build_tiny_sd(home / "tiny-sd", env))
        preload.append(sd)
    print(f"load: starting aigc serve --preload {' --preload '.join(preload)}...", file=sys.stderr)
    server = start_server(home, env, preload)
    try:
        print(f"load: {server.url}, warming up, then {options.seconds:g} s of load...", file=sys.stderr)
        result = asyncio.run(drive(server.url, server.process.pid, options, sd))
    except RuntimeError as exc:  # the server never became ready
        stop_server(server)
        log = "\n".join(server.log)
        raise SystemExit(f"{exc} (exit {server.process.returncode}):\n{log}") from None
    finally:
        exit_code = stop_server(server)
    samples: list[Sample] = result["samples"]
    wall = result["wall"]
    kinds = ["text", "text-stream", "image", "speech"]
    per_kind = {k: summary([s for s in samples if s.kind == k], wall) for k in kinds}
    per_kind["text (all)"] = summary([s for s in samples if s.kind.startswith("text")], wall)
    errors = result["warm_errors"] + [f"{s.kind}: {s.error}" for s in samples if s.error]
    if exit_code != 0:
        errors.append(f"aigc serve exited {exit_code} when stopped")
    return {
        "url": server.url,
        "seconds": options.seconds,
        "wall_s": wall,
        "cpu_cores": os.cpu_count(),
        "clients": {
            "text": options.text_clients,
            "image": options.image_clients,
            "speech": options.speech_clients,
        },
        "settings": {
            "text": {
                "model": TEXT_MODEL,
                "max_tokens": options.max_tokens,
                "backend": options.text_backend or "auto",
            },
            "image": {
                "model": "tiny SD (tests/tiny_pipelines.py)",
                "size": options.image_size,
                "steps": options.image_steps,
            },
            "speech": {"model": SPEECH_MODEL, "response_format": "wav"},
        },
        "kinds": {k: v for k, v in per_kind.items() if v["requests"]},
        "overall": summary(samples, wall),
        "server_rss_mb": result["rss"],
        "load_average_1min": result["load"],
        "server_exit": exit_code,
        "errors": errors,
        "server_log": server.log if errors else [],
    }


def fmt(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, or a dash as wide."""
    width = int(spec.split(".")[0] or 0)
    return "-".rjust(width) if value is None else format(value, spec)


def print_table(report: dict) -> None:
    c = report["clients"]
    s = report["settings"]
    print(
        f"aigc serve under load: {report['seconds']:g} s ({report['wall_s']:.1f} s with the last requests),"
        f" {report['cpu_cores']} CPU cores;"
        f" clients: {c['text']} text, {c['image']} image, {c['speech']} speech"
    )
    print(
        f"  text: {s['text']['model']} (backend {s['text']['backend']}),"
        f" max_tokens {s['text']['max_tokens']},"
        f" streamed and whole in turn; image: tiny SD {s['image']['size']}px, {s['image']['steps']} steps;"
        f" speech: {s['speech']['model']}, wav"
    )
    print(f"  {'kind':<13} {'requests':>8} {'errors':>6} {'p50 s':>7} {'p95 s':>7} {'req/s':>7}")
    rows = [*report["kinds"].items(), ("all", report["overall"])]
    for kind, row in rows:
        print(
            f"  {kind:<13} {row['requests']:>8} {row['errors']:>6} {fmt(row['p50_s'], '7.3f')}"
            f" {fmt(row['p95_s'], '7.3f')} {row['requests_per_s']:7.2f}"
        )
    rss = report["server_rss_mb"]
    print(
        f"  server RSS: {fmt(rss['start'], '.0f')} MB after warm-up, {fmt(rss['end'], '.0f')} MB at the end"
        f" (peak {fmt(rss['peak'], '.0f')} MB); stopped with exit {report['server_exit']}"
    )
    load = report["load_average_1min"]
    print(f"  machine load average (1 min): {load['start']:.1f} at the start, {load['end']:.1f} at the end")


def print_errors(report: dict) -> None:
    if not report["errors"]:
        return
    print(f"\n{len(report['errors'])} error(s):", file=sys.stderr)
    for error, times in Counter(report["errors"]).items():  # the same answer once, with its count
        print(f"  {times} x {error}" if times > 1 else f"  {error}", file=sys.stderr)
    print("server stderr (last 40 lines):", file=sys.stderr)
    for line in report["server_log"][-40:]:
        print(f"  {line}", file=sys.stderr)


def bench_load(home: Path, options: Options | None = None, as_json: bool = False) -> bool:
    """The load run in `home` (made if missing); True when no request failed. For benchmarks/run.py."""
    home.mkdir(parents=True, exist_ok=True)
    report = run_load(options or Options(), home)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    print_errors(report)
    return not report["errors"]


def parse(argv: list[str]) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Options()
    parser.add_argument(
        "--seconds", type=float, default=d.seconds, help="how long the clients ask (default 30)"
    )
    parser.add_argument("--text-clients", type=int, default=d.text_clients)
    parser.add_argument("--image-clients", type=int, default=d.image_clients)
    parser.add_argument("--speech-clients", type=int, default=d.speech_clients)
    parser.add_argument("--max-tokens", type=int, default=d.max_tokens)
    parser.add_argument("--image-size", type=int, default=d.image_size)
    parser.add_argument("--image-steps", type=int, default=d.image_steps)
    parser.add_argument("--text-backend", choices=("auto", "torch", "onnx"), default=None)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    parser.add_argument("--home", type=Path, help="a folder to keep (default: a temp folder, deleted)")
    args = parser.parse_args(argv)
    if min(args.text_clients, args.image_clients, args.speech_clients) < 0 or args.seconds <= 0:
        parser.error("client counts must be >= 0 and --seconds > 0")
    if args.text_clients + args.image_clients + args.speech_clients == 0:
        parser.error("no clients")
    options = Options(
        seconds=args.seconds,
        text_clients=args.text_clients,
        image_clients=args.image_clients,
        speech_clients=args.speech_clients,
        max_tokens=args.max_tokens,
        image_size=args.image_size,
        image_steps=args.image_steps,
        text_backend=args.text_backend,
    )
    return options, args


def main(argv: list[str] | None = None) -> int:
    options, args = parse(sys.argv[1:] if argv is None else argv)
    if args.home:
        return 0 if bench_load(args.home, options, args.json) else 1
    with tempfile.TemporaryDirectory(prefix="aigc-load-") as folder:
        return 0 if bench_load(Path(folder), options, args.json) else 1


if __name__ == "__main__":
    sys.exit(main())
