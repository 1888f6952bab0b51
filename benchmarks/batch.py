"""`aigc batch` on the embedded SmolLM2: 32 greedy text jobs batched against one by one in the same
process, per text backend; and the same job file on the local engine against Ray Data with 1 and 2
workers. Ratios are the result; absolute numbers are printed for context only.

Run alone with `.venv/bin/python benchmarks/batch.py`, or as the `batch` section of benchmarks/run.py.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

AIGC = str(Path(sys.executable).with_name("aigc"))
JOBS = 32
MAX_TOKENS = 24
REPEATS = int(os.environ.get("BENCH_BATCH_REPEATS", "2"))
TOPICS = ("a lighthouse", "the moon", "a red fox", "old trains", "a bakery", "winter", "a robot", "the sea")


def job_lines() -> list[dict]:
    return [
        {
            "id": f"j{i}",
            "task": "text",
            "prompt": f"Write one sentence about {TOPICS[i % len(TOPICS)]}, number {i}.",
            "temperature": 0,
            "repetition_penalty": 1.0,
            "max_tokens": MAX_TOKENS,
        }
        for i in range(JOBS)
    ]


def in_process(backend: str) -> tuple[float, float, bool]:
    """(jobs/s one by one, jobs/s batched, same texts) in this process, engine loaded before timing."""
    os.environ["AIGC_TEXT_BACKEND"] = backend
    from aigc_cli.batch.jobs import parse_job, resolve_job
    from aigc_cli.batch.run import JobRunner
    from aigc_cli.pool import EnginePool

    jobs = [parse_job(n, json.dumps(line), None) for n, line in enumerate(job_lines(), start=1)]
    for job in jobs:
        resolve_job(job, {})
    runner = JobRunner(EnginePool(), Path(tempfile.mkdtemp()))
    runner.run(jobs[0])  # load (and convert or export once)

    def alone() -> list[dict]:
        return [runner.run(job) for job in jobs]

    def together() -> list[dict]:
        with ThreadPoolExecutor(8) as executor:  # what `aigc batch` does with one model's text jobs
            return list(executor.map(runner.run, jobs))

    rates, texts = {}, {}
    for name, run in (("alone", alone), ("together", together)):
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            results = run()
            times.append(time.perf_counter() - started)
        rates[name] = JOBS / statistics.median(times)
        texts[name] = [r.get("text") for r in results]
    return rates["alone"], rates["together"], texts["alone"] == texts["together"]


def cli(env: dict[str, str], folder: Path, *extra: str) -> tuple[float, list[dict]]:
    results = folder / f"results-{time.monotonic_ns()}.jsonl"
    started = time.perf_counter()
    subprocess.run(
        [AIGC, "batch", str(folder / "jobs.jsonl"), "-o", str(results), "-q", *extra],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    return seconds, [json.loads(line) for line in results.read_text().splitlines()]


def bench_batch(home: Path, env: dict[str, str]) -> None:
    env = {**env, "AIGC_HOME": env.get("AIGC_HOME", str(home / "aigc")), "HF_HUB_OFFLINE": "1"}
    os.environ.update({k: env[k] for k in ("AIGC_HOME", "HF_HUB_OFFLINE")})
    print(
        f"Batch: {JOBS} greedy text jobs of {MAX_TOKENS} tokens on the embedded SmolLM2, median of {REPEATS}"
    )
    print(f"  {'backend':<8} {'one by one':>12} {'batched':>12} {'ratio':>7}  same texts")
    for backend in ("torch", "onnx"):
        alone, together, same = in_process(backend)
        print(f"  {backend:<8} {alone:8.2f} j/s {together:8.2f} j/s {together / alone:6.2f}x  {same}")
    print("  (onnx: eight jobs at a time take turns on the engine; `aigc batch` runs onnx jobs one by one)")
    folder = home / "batch"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "jobs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in job_lines()))
    torch_env = {**env, "AIGC_TEXT_BACKEND": "torch"}
    print("\nBatch: the same job file through `aigc batch` (torch backend; wall time, start-up included)")
    local_seconds, local = cli(torch_env, folder)
    print(f"  {'local engine':<22} {local_seconds:7.1f} s  {JOBS / local_seconds:6.2f} jobs/s  1.00x")
    try:
        import ray  # noqa: F401
    except ImportError:
        print("  Ray: not installed (pip install 'aigc[ray]')")
        return
    for workers in (1, 2):
        seconds, results = cli(torch_env, folder, "--engine", "ray", "--workers", str(workers))
        same = [r.get("text") for r in results] == [r.get("text") for r in local]
        print(
            f"  {f'Ray, {workers} worker' + ('s' if workers > 1 else ''):<22} {seconds:7.1f} s  "
            f"{JOBS / seconds:6.2f} jobs/s  {local_seconds / seconds:.2f}x  same results: {same}"
        )
    print(
        "  (Ray's start-up, a local cluster and a worker per actor that loads its own engine, is in its time)"
    )


if __name__ == "__main__":
    base = Path(os.environ.get("BENCH_HOME") or tempfile.mkdtemp(prefix="aigc-bench-"))
    bench_batch(base, {**os.environ, "AIGC_HOME": str(base / "aigc")})
