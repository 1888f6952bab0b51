"""`aigc batch --engine ray`: the same jobs on Ray Data.

The jobs become a dataset; `AigcWorker`, a callable class that holds aigc's engine pool (each engine loaded
once per worker, through the same core as a local run: batch/run.py), is mapped over batches of jobs with
`map_batches(AigcWorker, concurrency=N)`, one GPU per worker where the cluster has GPUs. Without an address
(`--ray-address` or RAY_ADDRESS) a local Ray starts in this process; with one, the jobs run on that cluster,
and `--out-dir` must then be storage every node shares. Needs the `ray` extra.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..console import Console, StepBar
from ..errors import AigcError
from .jobs import Job, error_result

JOBS_PER_BATCH = 8
"""Jobs a worker takes at once (text jobs among them share batches where they may)."""
PASSED_ENV = ("AIGC_HOME", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "AIGC_TEXT_BACKEND", "AIGC_DEVICE")
"""The driver's environment the workers get, so that a job resolves as it does here (config.toml, the
cache, offline mode)."""
THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""The driver's CPU threads, which the workers get too: Ray gives each worker one (OMP_NUM_THREADS=1), and on
the CPU the thread count changes the order of torch's sums and so the bytes of an image: a worker computes
with the threads a local run here would use."""


def _wire(job: Job) -> dict[str, Any]:
    """What a worker needs to run the job again from scratch: its line as read (and the batch's flags)."""
    return {
        "id": job.id,
        "line": job.line,
        "task": job.task,
        "prompt": job.prompt,
        "out": job.out,
        "init_image": job.init_image,
        "mask": job.mask,
        "settings": json.dumps(job.settings),
    }


class AigcWorker:
    """A Ray Data callable class: loads nothing until its first job, then keeps its engines for the next."""

    def __init__(self, out_dir: str, flags: str, cwd: str, env: str, task: str | None) -> None:
        from ..pool import EnginePool
        from .run import JobRunner

        # Jobs resolve as on the driver: its AIGC_HOME, cache and offline mode, and its folder for the paths
        # in jobs and flags (a model folder, an init image; on a cluster: shared storage mounted alike).
        passed = json.loads(env)
        for name in THREADS_ENV:  # before torch is imported: the threads a local run here would use
            if name not in passed:
                os.environ.pop(name, None)
        os.environ.update(passed)
        os.chdir(cwd)
        self.runner = JobRunner(EnginePool(), Path(out_dir))
        self.flags = json.loads(flags)
        self.task = task

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from concurrent.futures import ThreadPoolExecutor

        from .jobs import resolve_job
        from .local import groups

        jobs = []
        for i in range(len(batch["id"])):
            job = Job(
                str(batch["id"][i]),
                int(batch["line"][i]),
                str(batch["task"][i]),
                str(batch["prompt"][i]),
                _text(batch["out"][i]),
                _text(batch["init_image"][i]),
                json.loads(str(batch["settings"][i])),
                mask=_text(batch["mask"][i]),
            )
            resolve_job(job, self.flags, self.task)
            jobs.append(job)
        # One engine at a time, as the local engine runs them: two models loading at once in threads clash
        # (transformers' meta-device loading); text jobs of one model run together (the batcher).
        results: dict[str, dict[str, Any]] = {}
        for group in groups(jobs):
            if group[0].task == "text" and len(group) > 1:
                with ThreadPoolExecutor(JOBS_PER_BATCH) as executor:
                    results.update((r["id"], r) for r in executor.map(self.runner.run, group))
            else:
                results.update((job.id, self.runner.run(job)) for job in group)
        return {"result": [json.dumps(results[job.id]) for job in jobs]}


@contextmanager
def _stderr_closed() -> Iterator[None]:
    """File descriptor 2 on /dev/null for the block (native code writes there directly); an exception
    raised in the block is printed after, as usual."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _text(value: Any) -> str | None:
    return None if value is None or value != value else str(value)  # None, or NaN from a pandas column


def run_on_ray(
    jobs: list[Job],
    flags: dict[str, Any],
    task: str | None,
    out_dir: Path,
    record: Any,
    workers: int,
    address: str | None,
    console: Console,
) -> None:
    """Run the jobs on Ray Data with `workers` worker actors; record(result) for each, as it arrives.
    flags: the batch's flags (defaults for every job), resolved again on the workers; task: --task."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise AigcError("--engine ray needs Ray Data: pip install 'aigc[ray]' (or 'ray[data]')") from None
    import logging

    runnable = [job for job in jobs if job.error is None]
    for job in jobs:
        if job.error is not None:
            record(error_result(job, job.error))
    if not runnable:
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    env = {name: os.environ[name] for name in (*PASSED_ENV, *THREADS_ENV) if name in os.environ}
    console.note(f"aigc: starting Ray ({address or 'local'}) with {workers} workers")
    # Ray's own notes (token auth, execution plans) are not aigc's to print: errors only.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with _stderr_closed():  # Ray's native logging announces its own log level there as it starts
        ray.init(
            address=address or "local",  # a new local Ray: never the cluster /tmp/ray last named
            logging_level=logging.ERROR,
            log_to_driver=False,
            include_dashboard=False,
            ignore_reinit_error=True,
        )
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    dataset = ray.data.from_items([_wire(job) for job in runnable])
    results = dataset.map_batches(
        AigcWorker,
        fn_constructor_kwargs={
            "out_dir": str(out_dir),
            "flags": json.dumps(flags),
            "cwd": os.getcwd(),
            "env": json.dumps(env),
            "task": task,
        },
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=JOBS_PER_BATCH,
        num_gpus=gpus,
        batch_format="numpy",
    )
    try:
        with StepBar(console, len(runnable), "jobs") as progress:
            for row in results.iter_rows():
                record(json.loads(row["result"]))
                progress.advance()
    finally:
        if address is None:
            ray.shutdown()
