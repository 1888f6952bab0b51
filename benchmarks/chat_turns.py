"""Time to first token of each turn of a conversation on the embedded SmolLM2, with the kept KV state of the
conversation (engines/prefix_cache.py) and without it (AIGC_TEXT_CACHE_MB=0), in the same run: through two
warm `aigc serve` processes (one each way, the turns interleaved so that both see the same machine), and in
`aigc chat --local` (one process for the whole conversation; its TTFT read back from the log). Greedy
replies are checked equal both ways. Aim: the 8th turn's TTFT within 1.5x of the 1st's with the kept state.

Run alone with `.venv/bin/python benchmarks/chat_turns.py`; BENCH_CHAT_BACKENDS (default "onnx torch"),
BENCH_CHAT_TOKENS (default 64: the reply's length, hence how fast the history grows).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from server import AIGC, MODEL, serving, timed

TURNS = [
    "Tell me about lighthouses.",
    "Why were they built where they are?",
    "Who kept them, and how did they live?",
    "What changed when electricity came?",
    "Are any still kept by people today?",
    "Tell me about one famous lighthouse.",
    "What stories do people tell about it?",
    "Sum up what we said in two sentences.",
]
TOKENS = int(os.environ.get("BENCH_CHAT_TOKENS", "64"))
BACKENDS = os.environ.get("BENCH_CHAT_BACKENDS", "onnx torch").split()
WAYS = ("kept", "none")
"""With the kept state (the default budget) and without it (AIGC_TEXT_CACHE_MB=0)."""


def through_servers(urls: dict[str, str]) -> dict[str, list[tuple[float, str]]]:
    """Each turn asked of both servers in turn (streamed chat completions): the client's TTFT and the reply.
    Each server's conversation goes on with its own replies."""
    from openai import OpenAI

    clients = {
        way: OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
        for way, url in urls.items()
    }
    histories: dict[str, list[dict[str, str]]] = {way: [] for way in urls}
    turns: dict[str, list[tuple[float, str]]] = {way: [] for way in urls}
    clients["kept"].chat.completions.create(  # warm-up (first request): not part of any conversation
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0
    )
    clients["none"].chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0
    )
    for turn in TURNS:
        for way, client in clients.items():
            histories[way].append({"role": "user", "content": turn})
            started = time.perf_counter()
            first, text = None, ""
            for chunk in client.chat.completions.create(
                model=MODEL, messages=histories[way], max_tokens=TOKENS, temperature=0, stream=True
            ):
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    first = first or time.perf_counter() - started
                    text += delta
            histories[way].append({"role": "assistant", "content": text})
            turns[way].append((first or 0.0, text))
    return turns


def in_chat(env: dict[str, str]) -> list[tuple[float, str]]:
    """`aigc chat --local` with the turns on stdin: each turn's TTFT (the engine's, from the log), reply."""
    lines = "".join(f"{turn}\n" for turn in TURNS).encode()
    command = [AIGC, "chat", "--local", "-m", MODEL, "--temperature", "0", "--max-tokens", str(TOKENS), "-q"]
    result = subprocess.run(command, input=lines, capture_output=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"aigc chat exited {result.returncode}: {result.stderr.decode()}")
    with sqlite3.connect(Path(env["AIGC_HOME"]) / "logs.db") as db:
        rows = db.execute(
            "SELECT settings, output FROM generations WHERE command = 'chat' ORDER BY id DESC LIMIT ?",
            (len(TURNS),),
        ).fetchall()
    return [(json.loads(s)["record"]["time_to_first_token"], out) for s, out in reversed(rows)]


def show(label: str, turns: dict[str, list[tuple[float, str]]]) -> None:
    kept, none = turns["kept"], turns["none"]
    print(f"  {label}")
    print(f"    {'turn':>4} {'TTFT kept':>10} {'TTFT none':>10} {'none/kept':>10}")
    for index, ((a, _), (b, _)) in enumerate(zip(kept, none, strict=True), 1):
        print(f"    {index:>4} {a:9.3f}s {b:9.3f}s {b / a if a else 0:9.2f}x")
    for way in WAYS:
        first, last = turns[way][0][0], turns[way][-1][0]
        aim = "  (aim: within 1.5x)" if way == "kept" else ""
        print(f"    {way}: turn 8 / turn 1 = {last / first if first else 0:.2f}x{aim}")
    same = [a == b for (_, a), (_, b) in zip(kept, none, strict=True)]
    print(f"    same replies both ways: {sum(same)} of {len(same)}")


def main() -> None:
    home = Path(os.environ.get("BENCH_HOME") or tempfile.mkdtemp(prefix="aigc-bench-"))
    base = {**os.environ, "AIGC_HOME": str(home / "aigc"), "HF_HUB_OFFLINE": "1"}
    base = {k: v for k, v in base.items() if k not in ("AIGC_HOST", "AIGC_TEXT_MODEL", "AIGC_TEXT_CACHE_MB")}
    print(
        f"Chat turns on {MODEL}, {TOKENS}-token greedy replies, {os.cpu_count()} CPU cores; both ways in the"
    )
    print("same run (a busy machine makes single numbers noisy: read the ratios)\n")
    for backend in BACKENDS:
        env = {**base, "AIGC_TEXT_BACKEND": backend}
        # Each server its own AIGC_HOME (one server a home), sharing the converted model and its export,
        # made once, here, outside every measurement.
        timed([AIGC, "text", "Hi", "--max-tokens", "1", "--local", "-q"], env)
        other = home / "aigc-none"
        other.mkdir(exist_ok=True)
        for made in ("embedded", "onnx"):
            if (home / "aigc" / made).exists() and not (other / made).exists():
                (other / made).symlink_to(home / "aigc" / made)
        envs = {"kept": env, "none": {**env, "AIGC_HOME": str(other), "AIGC_TEXT_CACHE_MB": "0"}}
        print(f"{backend}:")
        with (
            serving(envs["kept"], home / f"chat-{backend}-kept.log") as kept,
            serving(envs["none"], home / f"chat-{backend}-none.log") as none,
        ):
            show(
                "through a warm server (client TTFT, streamed /v1/chat/completions)",
                through_servers({"kept": kept, "none": none}),
            )
        show(
            "aigc chat --local, one process (the engine's TTFT, from the log)",
            {way: in_chat(envs[way]) for way in WAYS},
        )
        print()


if __name__ == "__main__":
    main()
