"""`aigc serve --ray` against one `aigc serve`, in the same run, on the embedded SmolLM2 (torch backend):
total tokens/s of 8 concurrent clients with 1 and 2 text replicas (each replica one CPU), and what Ray Serve
adds to a warm request (one greedy token: the median latency through Ray Serve less the same through one
process, in milliseconds). Every answer is checked against the single server's.

Run with `.venv/bin/python benchmarks/ray_serve.py` (needs the `ray` and `serve` extras; a local Ray starts
in each `aigc serve --ray`). BENCH_RAY_ROUNDS (default 3) sets the rounds per setup.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

AIGC = str(Path(sys.executable).with_name("aigc"))
MODEL = "smollm2"
ROUNDS = int(os.environ.get("BENCH_RAY_ROUNDS", "3"))
CLIENTS = 8
MAX_TOKENS = 32
LATENCY_REPEATS = 20
TOPICS = ("a lighthouse", "the moon", "a red fox", "old trains", "a bakery", "winter", "a robot", "the sea")
PROMPTS = [f"Tell me a short story about {topic}." for topic in TOPICS]


def start(env: dict[str, str], log: Path, *args: str) -> tuple[subprocess.Popen, str]:
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [AIGC, "serve", "--port", "0", "--preload", MODEL, "--keep-alive", "-1", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    url = process.stdout.readline().decode().strip()
    if not url.startswith("http://"):
        process.wait(timeout=60)
        raise RuntimeError(f"aigc serve {' '.join(args)} did not start:\n{log.read_text()}")
    return process, url


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def measure(url: str) -> dict:
    """Median tokens/s of CLIENTS threads each asking its prompt twice; a 1-token request's median latency."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)

    def ask(prompt: str, tokens: int = MAX_TOKENS) -> tuple[str, int]:
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0
        )
        return reply.choices[0].message.content, reply.usage.completion_tokens

    answers = {prompt: ask(prompt)[0] for prompt in PROMPTS}  # also the warm-up
    speeds = [one_round(ask, answers) for _ in range(ROUNDS)]
    latencies = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        ask("Hi", 1)
        latencies.append(time.perf_counter() - started)
    return {"tps": statistics.median(speeds), "latency": statistics.median(latencies), "answers": answers}


def one_round(ask, answers: dict[str, str]) -> float:
    """Tokens/s of CLIENTS threads, each asking its prompt twice; every answer checked against `answers`."""
    made: list[int] = []
    failures: list[BaseException] = []

    def work(prompt: str) -> None:
        try:
            for _ in range(2):
                text, tokens = ask(prompt)
                made.append(tokens)
                if text != answers[prompt]:
                    failures.append(AssertionError(f"{prompt!r}: {text!r} != {answers[prompt]!r}"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in PROMPTS[:CLIENTS]]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sum(made) / (time.perf_counter() - started)


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="aigc-bench-ray-"))
    env = {k: v for k, v in os.environ.items() if k not in ("AIGC_HOST", "AIGC_TEXT_MODEL", "RAY_ADDRESS")}
    env.update({"AIGC_HOME": str(home / "aigc"), "AIGC_TEXT_BACKEND": "torch"})
    setups = {
        "aigc serve": (),
        "--ray, 1 text replica": ("--ray", "--replicas", "text=1,image=0-1,speech=0-1"),
        "--ray, 2 text replicas": ("--ray", "--replicas", "text=2,image=0-1,speech=0-1"),
    }
    results = {}
    for name, args in setups.items():
        process, url = start(env, home / f"{len(results)}.log", *args)
        try:
            results[name] = measure(url)
        finally:
            stop(process)
    base = results["aigc serve"]
    print(f"Ray Serve: tokens/s of {CLIENTS} clients at once ({MAX_TOKENS} greedy tokens of {MODEL}, torch;")
    print(f"  median of {ROUNDS} rounds), a warm 1-token request's median latency ({LATENCY_REPEATS} runs)")
    print(f"  {'setup':<24} {'tokens/s':>9} {'vs serve':>9} {'latency':>9} {'added':>9}  same answers")
    for name, r in results.items():
        added = (r["latency"] - base["latency"]) * 1000
        same = r["answers"] == base["answers"]
        print(
            f"  {name:<24} {r['tps']:9.1f} {r['tps'] / base['tps']:8.2f}x {r['latency'] * 1000:7.1f}ms"
            f" {added:+7.1f}ms  {same}"
        )
    print(f"  (this machine: {os.cpu_count()} CPUs; a Ray replica reserves one, torch runs one thread in it)")


if __name__ == "__main__":
    main()
