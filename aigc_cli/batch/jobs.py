"""Batch jobs: reading a JSONL job file, checking each job against the settings schema, and the results
file that makes a batch resumable.

A job is one JSON object per line: `task` (text, image or speech; else the batch's --task), `prompt`
(`input` for speech too), an optional `id` (default: its line number), `out` (an image or audio file), for
images `init_image` and `mask` (paths), and any setting under its config-key name (settings.py). A job's own
value wins over the batch's flags, which win over the environment and config.toml, as for a single run. A bad
job fails alone (its result says why, with the exit code a single run would give).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import AigcError, UsageError
from ..settings import SCHEMAS, Resolved, knobs, resolve_settings

TASKS = ("text", "image", "speech")
OWN_FIELDS = {"id", "task", "prompt", "input", "out", "init_image", "mask"}
NOT_PER_JOB = {"count", "trust_remote_code"}
"""Settings a job may not set: one job makes one result; remote code is the batch's flag to allow."""


@dataclass
class Job:
    """One line of the job file, checked."""

    id: str
    line: int
    task: str | None = None
    prompt: str = ""
    out: str | None = None
    init_image: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    """The job's own settings (schema names)."""
    resolved: Resolved | None = None
    """Its settings resolved (job > batch flags > environment > config.toml > alias), once checked."""
    error: AigcError | None = None
    """Why the job cannot run (found while reading or resolving), or None."""
    mask: str | None = None
    """Inpainting: the mask's path (with init_image)."""

    def key(self) -> tuple[Any, ...]:
        """What groups jobs onto one engine: task, model, device, dtype, backend."""
        if self.resolved is None:
            return ("", "", "", "", "")
        s = self.resolved.values
        return (self.task, s.model, s.device or "auto", s.dtype or "auto", getattr(s, "backend", None) or "")


def read_lines(source: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(source, start=1):
        if line.strip():
            yield number, line


def parse_job(number: int, line: str, default_task: str | None) -> Job:
    """A job from one line; a job with `error` set when the line is not a job."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        return Job(str(number), number, error=UsageError(f"not JSON ({exc})"))
    if not isinstance(data, dict):
        return Job(str(number), number, error=UsageError("not a JSON object"))
    job_id = data.get("id", number)
    if not isinstance(job_id, (str, int)) or isinstance(job_id, bool):
        return Job(str(number), number, error=UsageError("'id' must be a string or a number"))
    job = Job(str(job_id), number)
    try:
        _fill(job, data, default_task)
    except AigcError as exc:
        job.error = exc
    return job


def _fill(job: Job, data: dict[str, Any], default_task: str | None) -> None:
    task = data.get("task", default_task)
    if task not in TASKS:
        given = "no task" if task is None else f"task {task!r}"
        raise UsageError(f"{given}: give 'task' (text, image or speech) or run with --task")
    job.task = task
    prompt = data.get("prompt", data.get("input") if task == "speech" else None)
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError("'prompt' must be a non-empty string")
    job.prompt = prompt
    for name in ("out", "init_image", "mask"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"'{name}' must be a path (a string)")
    job.out, job.init_image, job.mask = data.get("out"), data.get("init_image"), data.get("mask")
    if job.mask is not None and job.init_image is None:
        raise UsageError("'mask' needs 'init_image': the image to repaint")
    if job.out is not None and task == "text":
        raise UsageError("'out' is for image and speech jobs: text goes in the results")
    if job.init_image is not None and task != "image":
        raise UsageError("'init_image' is for image jobs")
    schema = knobs(SCHEMAS[task])
    unknown = [n for n in data if n not in OWN_FIELDS and (n not in schema or n in NOT_PER_JOB)]
    if unknown:
        names = ", ".join(f"'{n}'" for n in unknown)
        raise UsageError(f"unknown field{'s' if len(unknown) > 1 else ''} {names} for a {task} job")
    job.settings = {n: v for n, v in data.items() if n in schema}


def resolve_job(job: Job, flags: dict[str, Any], default_task: str | None = None) -> None:
    """Resolve the job's settings over the batch's flags (checked already; each applies to the jobs whose
    task has that setting, but for --model, which with --task applies to that task's jobs only: a text
    model is no default for an image job); sets job.resolved or job.error."""
    if job.error is not None:
        return
    assert job.task is not None
    schema = knobs(SCHEMAS[job.task])
    other = default_task is not None and job.task != default_task
    defaults = {
        k: v for k, v in flags.items() if v is not None and k in schema and not (other and k == "model")
    }
    given = {**defaults, **job.settings}
    try:
        job.resolved = resolve_settings(job.task, given, given_in="request")
    except AigcError as exc:
        job.error = exc


def check_ids(jobs: list[Job]) -> None:
    """Ids must be unique: a duplicate is a usage error (exit 2) before anything runs."""
    seen: dict[str, int] = {}
    for job in jobs:
        if job.id in seen:
            raise UsageError(
                f"Job id '{job.id}' is on line {seen[job.id]} and line {job.line}: ids must be unique"
            )
        seen[job.id] = job.line


def error_result(job: Job, error: AigcError) -> dict[str, Any]:
    where = f"line {job.line}" if job.id == str(job.line) else f"job {job.id} (line {job.line})"
    return {
        "id": job.id,
        "task": job.task,
        "status": "error",
        "error": f"{where}: {error.message}",
        "exit_code": int(error.exit_code),
    }


# --- the results file ----------------------------------------------------------------------------------


def last_statuses(path: Path | None) -> dict[str, str]:
    """Each id's last status in RESULTS (ok or error). A line cut short by a crash is ignored."""
    if path is None or not path.is_file():
        return {}
    last: dict[str, str] = {}
    # errors="replace": a line cut inside a character (results are written with ensure_ascii=False)
    with path.open(encoding="utf-8", errors="replace") as results:
        for line in results:
            try:
                record = json.loads(line)
                last[str(record["id"])] = str(record["status"])
            except (ValueError, KeyError, TypeError):
                continue
    return last


def done_ids(last: dict[str, str], retry_errors: bool) -> set[str]:
    """Ids that need not run again: those whose last result is ok, and, without --retry-errors, those
    that failed."""
    return {i for i, status in last.items() if status == "ok" or (status == "error" and not retry_errors)}


class ResultsFile:
    """Appends whole result lines to RESULTS (or stdout), in job order: a result that finishes before an
    earlier job's waits for it; `flush_all` writes whatever is finished (an interrupted run)."""

    def __init__(self, path: Path | None, order: Iterable[str]) -> None:
        self.path = path
        self.order = list(order)
        self.position = 0
        self.waiting: dict[str, dict[str, Any]] = {}
        self.handle: IO[str] | None = None
        if path is not None:
            data = path.read_bytes() if path.is_file() else b""
            if data and not data.endswith(b"\n"):  # a line cut by a crash: drop it (its job runs again)
                with path.open("r+b") as repair:
                    repair.truncate(data.rfind(b"\n") + 1)
            try:
                self.handle = path.open("a", encoding="utf-8")
            except OSError as exc:
                from ..errors import OutputError

                raise OutputError(f"Cannot write {path}: {exc.strerror or exc}") from exc

    def add(self, result: dict[str, Any]) -> None:
        self.waiting[str(result["id"])] = result
        while self.position < len(self.order) and self.order[self.position] in self.waiting:
            self._write(self.waiting.pop(self.order[self.position]))
            self.position += 1

    def flush_all(self) -> None:
        for job_id in self.order[self.position :]:
            if job_id in self.waiting:
                self._write(self.waiting.pop(job_id))
        self.position = len(self.order)

    def _write(self, result: dict[str, Any]) -> None:
        line = json.dumps(result, ensure_ascii=False) + "\n"
        if self.handle is None:
            from ..output import write_text

            write_text(line)
            return
        self.handle.write(line)
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
