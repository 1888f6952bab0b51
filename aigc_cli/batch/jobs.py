"""Batch jobs: reading a JSONL job file, checking each job against the settings schema, and the results
file that makes a batch resumable.

A job is one JSON object per line: `task` (text, image or speech; else the batch's --task; else text for a
line with a `prompt` and no field that only image or speech jobs take: `default_task`), `prompt`
(`input` for speech too), an optional `id` (a string or an integer; default: its line number), `out` (an
image or audio file), for images `init_image` and `mask` (paths), and any setting under its config-key name
(settings.py). A job's own value wins over the batch's flags, which win over the environment and
config.toml, as for a single run. A bad job fails alone (its result says why, with the exit code a single
run would give); so does a line that is too long, not UTF-8, or holds a lone surrogate.

A failed job's result records `job_hash`, a digest of the job as asked (its line, the batch's --task and
flags): on resume a failed job is done only while that is unchanged (it would fail the same way;
--retry-errors runs it anyway); a job fixed since runs again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import AigcError, UsageError
from ..settings import SCHEMAS, Resolved, knobs, resolve_settings
from ..streams import lone_surrogate, surrogate_problem

TASKS = ("text", "image", "speech")
OWN_FIELDS = {"id", "task", "prompt", "input", "out", "init_image", "mask"}
NOT_PER_JOB = {"count", "trust_remote_code"}
"""Settings a job may not set: one job makes one result; remote code is the batch's flag to allow."""


class TaskMissing(UsageError):
    """A job line with no task it can run (none given, none to default to, or not one of TASKS)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}: give 'task' (text, image or speech) or run with --task")
        self.problem = problem
        """What is wrong, without the remedy: `no task, and 'steps' is not for text jobs`."""


@functools.cache
def not_for_text() -> dict[str, str]:
    """The fields a text job cannot have, from the settings schemas, and the tasks that take each: what
    stops a line without a task from defaulting to text."""
    text = set(knobs(SCHEMAS["text"]))
    own = {"input": "speech", "out": "image or speech", "init_image": "image", "mask": "image"}
    fields = {name: task for name, task in own.items()}
    for task in ("image", "speech"):
        for name in knobs(SCHEMAS[task]):
            if name not in text:
                fields[name] = task if name not in fields else f"{fields[name]} or {task}"
    return fields


def default_task(data: dict[str, Any]) -> str | None:
    """The task of a line that names none (and no --task): text, when it has a `prompt` and no field that
    only image or speech jobs take (`not_for_text`); else None."""
    others = not_for_text()
    return "text" if "prompt" in data and not any(name in others for name in data) else None


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
    source: str | None = None
    """The line as read (for `job_hash`): its text, else what could be read of it."""

    def key(self) -> tuple[Any, ...]:
        """What groups jobs onto one engine: task, model, device, dtype, backend."""
        if self.resolved is None:
            return ("", "", "", "", "")
        s = self.resolved.values
        return (self.task, s.model, s.device or "auto", s.dtype or "auto", getattr(s, "backend", None) or "")


MAX_LINE_BYTES = 10_000_000
"""A job line's default cap (10 MB, its line end not counted): a longer line is that job's error, read past
in pieces, never held whole (--max-line-bytes raises it)."""
BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Line:
    """One line of the job file: its text, or why it has none (too long, not UTF-8)."""

    number: int
    text: str | None
    error: AigcError | None = None
    readable: str | None = None
    """A line that is not UTF-8, its bad bytes replaced: where its id may still be read."""


def read_lines(source: IO[bytes], max_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """The job file's lines that are not blank, as editors write them: a UTF-8 BOM first and CRLF line ends
    are fine; a line longer than `max_bytes`, or one that is not UTF-8, is that line's error."""
    number = 0
    while True:
        chunk = source.readline(max_bytes + 2)  # the line, its \r\n, and a byte that says "too long"
        if not chunk:
            return
        number += 1
        if number == 1 and chunk.startswith(BOM):
            chunk = chunk[len(BOM) :]
        content = chunk[:-1] if chunk.endswith(b"\n") else chunk
        content = content[:-1] if content.endswith(b"\r") else content
        if len(content) > max_bytes:
            size = len(content) + (0 if chunk.endswith(b"\n") else _skip_line(source))
            message = f"longer than {max_bytes} bytes ({size} bytes): --max-line-bytes raises the limit"
            yield Line(number, None, UsageError(message))
            continue
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = f"byte 0x{content[exc.start]:02x} at byte {exc.start + 1} of the line"
            message = f"not UTF-8 ({at}): save the file as UTF-8"
            yield Line(number, None, UsageError(message), content.decode("utf-8", errors="replace"))
            continue
        if text.strip():
            yield Line(number, text)


def _skip_line(source: IO[bytes]) -> int:
    """Reads past the rest of a line, a piece at a time; its length (without the line end)."""
    size = 0
    while True:
        piece = source.readline(_CHUNK)
        if not piece:
            return size
        if piece.endswith(b"\n"):
            return size + len(piece.rstrip(b"\r\n"))
        size += len(piece)


def parse_line(line: Line, task: str | None) -> Job:
    """A job from one line read; a job with `error` set when the line is not a job."""
    if line.text is None:
        job = Job(_readable_id(line) or str(line.number), line.number, error=line.error)
        job.source = line.readable if line.readable is not None else f"<{line.error}>"
        return job
    job = parse_job(line.number, line.text, task)
    job.source = line.text
    return job


def _readable_id(line: Line) -> str | None:
    """The id of a line that is not UTF-8, where the bad bytes are not in it."""
    try:
        data = json.loads(line.readable or "")
    except ValueError:
        return None
    job_id = data.get("id") if isinstance(data, dict) else None
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        return str(job_id)
    return job_id if isinstance(job_id, str) and "\ufffd" not in job_id and _encodes(job_id) else None


def parse_job(number: int, line: str, task: str | None) -> Job:
    """A job from one line (`task`: the batch's --task); a job with `error` set when the line is not a
    job."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        return Job(str(number), number, error=UsageError(f"not JSON ({exc})"))
    if not isinstance(data, dict):
        return Job(str(number), number, error=UsageError("not a JSON object"))
    job_id = data.get("id", number)
    if not isinstance(job_id, (str, int)) or isinstance(job_id, bool):
        message = f"'id' must be a string or an integer, not {_shown(job_id)}"
        return Job(str(number), number, error=UsageError(message))
    bad = lone_surrogate(data)
    if bad is not None and bad[0] == "id":
        return Job(str(number), number, error=UsageError(surrogate_problem(*bad)))
    job = Job(str(job_id), number)
    if bad is not None:
        job.error = UsageError(surrogate_problem(*bad))
        return job
    try:
        _fill(job, data, task)
    except AigcError as exc:
        job.error = exc
    return job


def _shown(value: Any) -> str:
    """A JSON value as the job file has it (its first 80 characters)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fill(job: Job, data: dict[str, Any], batch_task: str | None) -> None:
    task = data.get("task", batch_task)
    if task is None:
        task = default_task(data)
    if task is None:
        fields = not_for_text()
        found = [f"'{name}' ({fields[name]})" for name in data if name in fields]
        if not found:
            raise TaskMissing("no task, and no 'prompt'")
        names = " and ".join(found) if len(found) <= 2 else f"{', '.join(found[:2])} and more"
        raise TaskMissing(f"no task, and {names} {'is' if len(found) == 1 else 'are'} not for text jobs")
    if task not in TASKS:
        raise TaskMissing(f"task {task!r}")
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


def job_hash(job: Job, task: str | None, flags: dict[str, Any]) -> str:
    """A digest of the job as asked: its line as read, the batch's --task and the flags given. A failed
    job's result records it, so that resuming can tell a job fixed since from one unchanged."""
    given = {name: value for name, value in flags.items() if value is not None}
    asked = json.dumps([job.source, task, given], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(asked.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class LastResult:
    """What RESULTS says of a job: its last result's status, and, for a failure, the `job_hash` of the
    job that failed (None in results written before aigc recorded it)."""

    status: str
    job_hash: str | None = None


def last_statuses(path: Path | None) -> dict[str, LastResult]:
    """Each id's last result in RESULTS (ok or error); a line that is not a result is ignored."""
    if path is None or not path.is_file():
        return {}
    last: dict[str, LastResult] = {}
    with path.open(encoding="utf-8", errors="replace") as results:
        for line in results:
            try:
                record = json.loads(line)
                digest = record.get("job_hash")
                last[str(record["id"])] = LastResult(
                    str(record["status"]), digest if isinstance(digest, str) else None
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
    return last


def done_ids(last: dict[str, LastResult], hashes: dict[str, str], retry_errors: bool) -> set[str]:
    """Ids that need not run again: those whose last result is ok, and, without --retry-errors, those
    that failed as the job they are now (the same `job_hash`: they would fail the same way). A job changed
    since it failed (its line, --task or the flags), or one failed in a results file that does not say,
    runs again."""
    return {
        i
        for i, result in last.items()
        if result.status == "ok"
        or (
            result.status == "error"
            and not retry_errors
            and result.job_hash is not None
            and result.job_hash == hashes.get(i)
        )
    }


@dataclass(frozen=True)
class CutLine:
    """RESULTS' last line as a run killed while writing it left it: cut short (not JSON), so dropped."""

    size: int
    """Its bytes."""
    job_id: str | None
    """Its job's id, when the part left shows it whole."""


_ID = re.compile(rb'\{\s*"id"\s*:\s*("(?:[^"\\]|\\.)*")')


class ResultsFile:
    """RESULTS (or stdout), held for the run: the file is locked (flock, released by the system when the
    process ends, so a crashed run leaves no stale lock), its end is mended, and whole result lines are
    appended in job order: a result that finishes before an earlier job's waits for it; `flush_all` writes
    whatever is finished (an interrupted run).

    The mending: a run killed between a line and its newline leaves a complete last line, which is kept (its
    newline added); one killed inside a line leaves a cut one, which is dropped (`cut` says what), so that its
    job runs again."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.order: list[str] = []
        self.position = 0
        self.waiting: dict[str, dict[str, Any]] = {}
        self.handle: IO[str] | None = None
        self.created = False
        self.cut: CutLine | None = None
        self.written = 0
        """Result lines this run has written."""
        if path is not None:
            self.handle, self.created = _open_locked(path)
            self.cut = self._mend()

    def start(self, order: Iterable[str]) -> None:
        """The ids whose results will come, in the order they are written."""
        self.order = list(order)

    def _mend(self) -> CutLine | None:
        assert self.handle is not None and self.path is not None
        with self.path.open("rb") as results:  # another open file: the lock stays with the handle
            end = results.seek(0, os.SEEK_END)
            tail, start = b"", end
            while start > 0:
                step = min(1 << 16, start)
                start -= step
                results.seek(start)
                block = results.read(step)
                newline = block.rfind(b"\n")
                if newline >= 0:
                    tail, start = block[newline + 1 :] + tail, start + newline + 1
                    break
                tail = block + tail
        if not tail:
            return None
        try:
            json.loads(tail.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError too: cut inside a character
            os.ftruncate(self.handle.fileno(), start)
            found = _ID.match(tail)
            job_id = None
            if found:
                with contextlib.suppress(ValueError):
                    job_id = str(json.loads(found.group(1).decode("utf-8")))
            return CutLine(len(tail), job_id)
        self.handle.write("\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        return None

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
        else:
            self.handle.write(line)
            self.handle.flush()
            os.fsync(self.handle.fileno())
        self.written += 1

    def close(self) -> None:
        """Lets RESULTS go; one this run made and wrote nothing into is removed (while still locked)."""
        if self.handle is None:
            return
        self.handle.flush()
        if self.created and self.path is not None and os.fstat(self.handle.fileno()).st_size == 0:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.handle.close()
        self.handle = None


def _open_locked(path: Path) -> tuple[IO[str], bool]:
    """RESULTS opened to append, and locked for this run (flock); whether this run made it. A second run on
    the same file is refused at once (exit 2)."""
    try:
        import fcntl
    except ImportError:  # no flock on this system (Windows): unlocked
        fcntl = None  # type: ignore[assignment]
    for _ in range(100):
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            try:
                fd, created = os.open(path, os.O_RDWR | os.O_APPEND), False
            except FileNotFoundError:  # removed in between: try again
                continue
            except OSError as exc:
                raise _cannot_write(path, exc) from exc
        except OSError as exc:
            raise _cannot_write(path, exc) from exc
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(
                    f"{path} is in use: another aigc batch run holds its lock and is writing it; wait for "
                    "that run to end (or give another -o)"
                ) from None
            except OSError:  # a file system without flock (some network mounts): unlocked
                pass
            # The run that held it may have removed the file (made by it, left empty) before letting go, and
            # another made a new one: lock the file the name now names.
            if not _same_file(fd, path):
                os.close(fd)
                continue
        return os.fdopen(fd, "a", encoding="utf-8"), created
    raise _cannot_write(path, OSError("it keeps being removed and made again"))


def _same_file(fd: int, path: Path) -> bool:
    held = os.fstat(fd)
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _cannot_write(path: Path, exc: OSError) -> AigcError:
    from ..errors import OutputError

    return OutputError(f"Cannot write {path}: {exc.strerror or exc}")
