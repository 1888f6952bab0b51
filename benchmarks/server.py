"""`aigc serve` on the embedded SmolLM2: a warm server against cold one-shot runs, and total throughput with
concurrent clients (batched on torch, one at a time on onnx). Everything compared is measured in the same
run; ratios are the result, absolute numbers are printed for context only.

Run alone with `.venv/bin/python benchmarks/server.py`, or as the `server` section of benchmarks/run.py.
BENCH_SERVER_REPEATS (default 5) sets the one-shot repeats, BENCH_SERVER_ROUNDS (default 3) the rounds of
each concurrency level.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

AIGC = str(Path(sys.executable).with_name("aigc"))
MODEL = "smollm2"
PROMPT = "Write a haiku about rain"
REPEATS = int(os.environ.get("BENCH_SERVER_REPEATS", "5"))
ROUNDS = int(os.environ.get("BENCH_SERVER_ROUNDS", "3"))
BACKENDS = ("torch", "onnx")
CLIENTS = (1, 4, 8)
REQUESTS_PER_CLIENT = 2
MAX_TOKENS = 32
TOPICS = ("a lighthouse", "the moon", "a red fox", "old trains", "a bakery", "winter", "a robot", "the sea")
PROMPTS = [f"Tell me a short story about {topic}." for topic in TOPICS]


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[str]:
    """`aigc serve --port 0 --preload smollm2`; its URL once it listens. Stopped with SIGINT on the way out,
    errors included; its stderr goes to `log`."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [AIGC, "serve", "--port", "0", "--preload", MODEL, "--keep-alive", "-1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    try:
        url = process.stdout.readline().decode().strip()
        if not url.startswith("http://"):
            process.wait(timeout=30)
            raise RuntimeError(f"aigc serve did not start (exit {process.returncode}):\n{log.read_text()}")
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, env=env, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} exited {result.returncode}: {result.stderr.decode()}")
    return seconds, result.stdout.decode().strip()


def batch_sizes(url: str) -> list[int]:
    with urllib.request.urlopen(f"{url}/api/ps", timeout=30) as response:
        batches = json.loads(response.read())["batches"]
    return [size for sizes in batches.values() for size in sizes]


def one_shot(url: str, env: dict[str, str]) -> dict:
    """`aigc text` through the warm server (AIGC_HOST) against a cold `--local` process, interleaved."""
    command = [AIGC, "text", PROMPT, "--max-tokens", "8", "--temperature", "0"]
    timed([*command, "-q"], {**env, "AIGC_HOST": url})  # warm-up: the first request, the page cache
    runs: dict[str, list[tuple[float, str]]] = {"warm": [], "cold": []}
    for _ in range(REPEATS):
        runs["warm"].append(timed(command, {**env, "AIGC_HOST": url}))
        runs["cold"].append(timed([*command, "--local"], env))
    texts = {name: {text for _, text in rs} for name, rs in runs.items()}
    return {
        **{name: statistics.median(s for s, _ in rs) for name, rs in runs.items()},
        "same": texts["warm"] == texts["cold"] and len(texts["warm"]) == 1,
        "texts": texts,
    }


def one_round(clients: int, ask: Callable[[str], tuple[str, int]]) -> tuple[dict, float]:
    """Each client (a thread) asks its own prompt REQUESTS_PER_CLIENT times in turn: the answers of each
    client and the round's wall seconds."""
    answers: dict[int, list[tuple[str, int]]] = {i: [] for i in range(clients)}
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(REQUESTS_PER_CLIENT):
                answers[i].append(ask(PROMPTS[i]))
        except BaseException as exc:  # raised below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise failures[0]
    return answers, seconds


def concurrency(url: str) -> dict:
    """Total tokens/s of 1, 4 and 8 clients (threads), each asking REQUESTS_PER_CLIENT chat completions in
    turn with its own prompt; every answer checked against the same prompt asked alone (greedy)."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)

    def ask(prompt: str) -> tuple[str, int]:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            extra_body={"repetition_penalty": 1.0},
        )
        return reply.choices[0].message.content, reply.usage.completion_tokens

    solo = {prompt: ask(prompt)[0] for prompt in PROMPTS}  # also the warm-up
    rows, checked, differ = {}, 0, []
    for clients in CLIENTS:
        speeds, sizes = [], []
        for _ in range(ROUNDS):
            before = len(batch_sizes(url))
            answers, seconds = one_round(clients, ask)
            speeds.append(sum(n for replies in answers.values() for _, n in replies) / seconds)
            sizes += batch_sizes(url)[before:]
            for i, replies in answers.items():
                for text, _ in replies:
                    checked += 1
                    if text != solo[PROMPTS[i]]:
                        differ.append((clients, PROMPTS[i], text, solo[PROMPTS[i]]))
        rows[clients] = {"tps": statistics.median(speeds), "sizes": sizes}
    return {"rows": rows, "checked": checked, "differ": differ}


def bench_server(home: Path, env: dict[str, str]) -> None:
    env = {key: value for key, value in env.items() if key not in ("AIGC_HOST", "AIGC_TEXT_MODEL")}
    results = {}
    for backend in BACKENDS:
        benv = {**env, "AIGC_TEXT_BACKEND": backend}
        # The GGUF conversion and the onnx export happen once, here, outside every measurement.
        timed([AIGC, "text", PROMPT, "--max-tokens", "1", "--local", "-q"], benv)
        with serving(benv, home / f"serve-{backend}.log") as url:
            results[backend] = {"one_shot": one_shot(url, benv), "concurrency": concurrency(url)}

    print(f"Server: `aigc text` through a warm `aigc serve --preload {MODEL}` against a cold --local process")
    print(f"  (8 greedy tokens, median of {REPEATS} interleaved runs; aims: ratio >= 8, warm < 0.6 s)")
    for backend, result in results.items():
        r = result["one_shot"]
        ratio = r["cold"] / r["warm"]
        fast = "at least" if ratio >= 8 else "under"
        aims = f"{fast} 8x, warm {'under' if r['warm'] < 0.6 else 'over'} 0.6 s"
        print(
            f"  {backend:<6} warm {r['warm']:6.3f} s   cold {r['cold']:6.3f} s   ratio cold/warm {ratio:5.2f}"
            f"  ({aims})  same text: {r['same']}"
        )
        if not r["same"]:
            print(f"         warm {sorted(r['texts']['warm'])!r}")
            print(f"         cold {sorted(r['texts']['cold'])!r}")

    print(
        f"\nServer: total tokens/s of concurrent clients, each {REQUESTS_PER_CLIENT} chat completions in turn"
        f" ({MAX_TOKENS} greedy tokens, repetition_penalty 1.0; median of {ROUNDS} rounds)"
    )
    print(f"  {'backend':<8} {'clients':>7} {'tokens/s':>9} {'vs 1 client':>12}   batch sizes the server ran")
    for backend, result in results.items():
        rows = result["concurrency"]["rows"]
        for clients, row in rows.items():
            ratio = row["tps"] / rows[1]["tps"]
            sizes = " ".join(map(str, row["sizes"])) if row["sizes"] else "- (one at a time)"
            print(f"  {backend:<8} {clients:>7} {row['tps']:9.1f} {ratio:11.2f}x   {sizes}")
    for backend, result in results.items():
        c = result["concurrency"]
        print(
            f"  {backend}: concurrent answers equal to the prompt's solo answer:"
            f" {c['checked'] - len(c['differ'])} of {c['checked']}"
        )
        for clients, prompt, text, solo in c["differ"][:3]:
            print(f"    {clients} clients, {prompt!r}: {text!r} (solo {solo!r})")


def main() -> None:
    home = Path(os.environ.get("BENCH_HOME") or tempfile.mkdtemp(prefix="aigc-bench-"))
    env = {**os.environ, "AIGC_HOME": str(home / "aigc"), "HF_HUB_OFFLINE": "1"}
    print(f"aigc server benchmark on {os.cpu_count()} CPU cores\n")
    bench_server(home, env)


if __name__ == "__main__":
    main()
