"""`aigc batch`: read the jobs, skip what RESULTS says is done, run the rest here (or on Ray), write a result
line per job in job order, and say how it went."""

from __future__ import annotations

import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..console import Console, LogConsole, StepBar
from ..errors import ExitCode, Interrupted, OutputError, UsageError
from ..interrupts import raising
from ..settings import SCHEMAS, knobs, resolve_settings
from .jobs import (
    MAX_LINE_BYTES,
    CutLine,
    Job,
    ResultsFile,
    TaskMissing,
    check_ids,
    done_ids,
    job_hash,
    last_statuses,
    parse_line,
    read_lines,
    resolve_job,
)

TEXT_THREADS = 8
"""Text jobs of one model run this many at once, so that greedy ones share batches (server/batching.py)."""


def read_jobs(source: str, task: str | None, max_line_bytes: int = MAX_LINE_BYTES) -> list[Job]:
    """The jobs of a JSONL file (or stdin, '-'), read as bytes a line at a time: a line too long, not UTF-8
    or not a job is that job's error; the others run."""
    if source == "-":
        return [parse_line(line, task) for line in read_lines(sys.stdin.buffer, max_line_bytes)]
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"No such file: {source} (the jobs, one JSON object per line)")
    try:
        with path.open("rb") as handle:
            return [parse_line(line, task) for line in read_lines(handle, max_line_bytes)]
    except OSError as exc:
        raise UsageError(f"Cannot read {source}: {exc.strerror or exc}") from exc


def check_ray() -> None:
    """--engine ray needs Ray Data: without it, exit 2 before anything is written."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(
            "--engine ray needs Ray Data, which is not installed here: make install EXTRAS=dev,ray (ray "
            "among your extras) or pip install 'aigc[ray]'"
        ) from None


def cut_notice(results_path: str | None, cut: CutLine, done: set[str]) -> str:
    """The one stderr line about a result line that a killed run left cut short."""
    head = f"{results_path}: its last line was cut short (a run stopped while writing it): dropped its"
    if cut.job_id is None:
        return f"{head} {cut.size} bytes (no job id readable); the jobs without a result run again"
    if cut.job_id in done:
        return f"{head} {cut.size} bytes; job '{cut.job_id}' keeps its earlier result"
    return f"{head} {cut.size} bytes; job '{cut.job_id}' runs again"


def check_tasks(jobs: list[Job], source: str) -> None:
    """A file where no line has a task it can run (none given, no --task, none to default to) is a usage
    error (exit 2) before anything is written, rather than a failed result for every job."""
    if any(job.task for job in jobs):
        return
    missing = next((job for job in jobs if isinstance(job.error, TaskMissing)), None)
    if missing is not None:
        assert isinstance(missing.error, TaskMissing)
        where = "stdin" if source == "-" else source
        raise UsageError(
            f"No job in {where} has a task (line {missing.line}: {missing.error.problem}): give each line a "
            "'task' (text, image or speech), or run with --task"
        )


def interrupted_line(done: int, total: int, failed: int, results_path: str | None) -> str:
    """The one stderr line of a batch stopped with Ctrl-C: how far it got, and how to go on."""
    noun = "job" if total == 1 else "jobs"
    got = f"{done} of {total} {noun} done" + (f" ({failed} failed)" if failed else "")
    if results_path in (None, "-"):
        return f"interrupted: {got}, their results on stdout; with -o RESULTS a rerun resumes"
    return f"interrupted: {got}, in {results_path}; the same command resumes"


def check_flags(jobs: list[Job], flags: dict[str, Any]) -> None:
    """The batch's flags, checked once for every task the jobs have (exit 2 before anything runs)."""
    for task in sorted({job.task for job in jobs if job.task}):
        schema = knobs(SCHEMAS[task])
        resolve_settings(
            task, {k: v for k, v in flags.items() if k in schema}, alias_defaults=lambda m: (m, {})
        )


@dataclass(frozen=True)
class BatchOptions:
    """What `aigc batch` was asked."""

    source: str
    """The jobs: a JSONL file, or '-' for stdin."""
    results_path: str | None = None
    """RESULTS (-o): one line per job, resumable; None or '-' for stdout."""
    out_dir: str | None = None
    """Where image and audio files go (default: the current folder)."""
    task: str | None = None
    """text, image or speech, for jobs that name no task."""
    flags: dict[str, Any] = field(default_factory=dict)
    """Settings given as flags: defaults for every job whose task has them."""
    retry_errors: bool = False
    engine: str = "local"
    """local (this process) or ray (Ray Data)."""
    workers: int | None = None
    ray_address: str | None = None
    no_log: bool = False
    max_line_bytes: int = MAX_LINE_BYTES
    """A job line's cap in bytes: a longer line is that job's error."""


def run_batch(options: BatchOptions, console: Console) -> int:
    """Run the jobs of `options.source`; the exit code: 0 when every job ran, 1 when any failed (its result
    line says why). A batch that cannot start (bad flags, duplicate ids, no line with a task) raises
    UsageError (exit 2) before anything runs; Ctrl-C raises Interrupted (exit 130) saying how far it got,
    once the results finished are written."""
    source, results_path, out_dir, task = options.source, options.results_path, options.out_dir, options.task
    flags, retry_errors, engine, no_log = options.flags, options.retry_errors, options.engine, options.no_log
    workers, ray_address = options.workers, options.ray_address
    started = time.perf_counter()
    jobs = read_jobs(source, task, options.max_line_bytes)
    if not jobs:
        raise UsageError(f"No jobs in {'stdin' if source == '-' else source}: one JSON object per line")
    check_ids(jobs)
    check_tasks(jobs, source)
    check_flags(jobs, flags)
    if engine == "ray":
        check_ray()
    results_file = Path(results_path) if results_path not in (None, "-") else None
    # RESULTS is locked from here to the end (another run on it is refused), and its end mended.
    results = ResultsFile(results_file)
    statuses: Counter[str] = Counter()
    stopped = False
    try:
        last = last_statuses(results_file)
        hashes = {job.id: job_hash(job, task, flags) for job in jobs}
        done = done_ids(last, hashes, retry_errors)
        if results.cut is not None:
            console.warn(cut_notice(results_path, results.cut, done))
        todo = [job for job in jobs if job.id not in done]
        failed_before = sum(1 for job in jobs if job.id in done and last[job.id].status == "error")
        for job in todo:
            resolve_job(job, flags, task)
        folder = Path(out_dir or ".")
        if any(job.task in ("image", "speech") for job in todo):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"Cannot make --out-dir {folder}: {exc.strerror or exc}") from exc
        results.start([job.id for job in todo])
        by_id = {job.id: job for job in todo}

        def record(result: dict[str, Any]) -> None:
            statuses[result["status"]] += 1
            if result["status"] == "error":  # resuming tells a job fixed since from one unchanged
                result["job_hash"] = hashes[str(result["id"])]
            results.add(result)
            if result["status"] == "ok":
                log_result(by_id[str(result["id"])], result, no_log)

        # Ctrl-C raises KeyboardInterrupt for the whole run (not the one-shot commands' exit at once): the
        # results finished so far are written as whole lines, and a file being written is removed.
        try:
            with raising():
                if engine == "ray":
                    from .ray_runner import run_on_ray

                    run_on_ray(todo, flags, task, folder, record, workers or 2, ray_address, console)
                else:
                    run_here(todo, folder, record, console)
        except KeyboardInterrupt:
            stopped = True
    finally:
        results.flush_all()
        results.close()
    if stopped:
        done_now = len(jobs) - len(todo) + results.written
        failed = failed_before + statuses["error"]
        raise Interrupted(interrupted_line(done_now, len(jobs), failed, results_path))
    seconds = time.perf_counter() - started
    parts = [f"{statuses['ok']} ok", f"{statuses['error']} failed"]
    if done:
        before = f"; {failed_before} of them failed: --retry-errors runs them again" if failed_before else ""
        parts.append(f"{len(jobs) - len(todo)} skipped (done in {results_path}{before})")
    noun = "job" if len(jobs) == 1 else "jobs"
    console.info(f"aigc: {len(jobs)} {noun}: {', '.join(parts)}, in {seconds:.1f} s")
    # Exit 1 while any job's last result is a failure, whether it failed now or in a run before.
    return ExitCode.FAILURE if statuses["error"] or failed_before else ExitCode.OK


def log_result(job: Job, result: dict[str, Any], no_log: bool) -> None:
    """The job's log row (logs.py), as its single run would log it, with command batch."""
    from .. import logs

    assert job.resolved is not None
    record = {k: v for k, v in result.items() if k not in ("id", "task", "status", "path")}
    path = Path(result["path"]) if result.get("path") else None
    logs.log_generation(
        "batch",
        job.task,
        record,
        job.resolved.values,
        prompt=job.prompt if job.task == "text" else None,
        path=path,
        seconds=result.get("seconds"),
        system=job.resolved.values.system if job.task == "text" else None,
        no_log=no_log,
    )


def groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs by engine (task, model, device, dtype, backend), in the order each engine is first needed."""
    by_key: dict[tuple[Any, ...], list[Job]] = {}
    for job in jobs:
        by_key.setdefault(job.key(), []).append(job)
    return list(by_key.values())


def _batches(pool: Any) -> bool:
    """Whether the text engine loaded now batches (the torch reference); others run jobs one by one."""
    return any(entry.key.backend == "torch" for entry in pool.entries())


def run_here(jobs: list[Job], out_dir: Path, record: Any, console: Console) -> None:
    """Each engine loads once and is unloaded when its jobs are done; text jobs of one model run together."""
    from ..pool import EnginePool
    from .run import JobRunner

    pool = EnginePool()
    runner = JobRunner(pool, out_dir, LogConsole(quiet=console.quiet, verbose=console.verbose))
    with StepBar(console, len(jobs), "jobs") as progress:
        for group in groups(jobs):
            if group[0].task == "text" and len(group) > 1:
                record(runner.run(group[0]))  # loads the engine: does it batch?
                progress.advance()
                group = group[1:]
            if group and group[0].task == "text" and _batches(pool):
                executor = ThreadPoolExecutor(TEXT_THREADS, thread_name_prefix="aigc-job")
                try:
                    for future in as_completed([executor.submit(runner.run, job) for job in group]):
                        record(future.result())
                        progress.advance()
                finally:
                    executor.shutdown(wait=False, cancel_futures=True)
            else:
                for job in group:
                    record(runner.run(job))
                    progress.advance()
            for entry in pool.entries():
                pool.unload(entry.key)
