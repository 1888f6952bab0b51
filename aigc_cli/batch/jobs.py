"""Batch jobs: reading a JSONL job file, checking each job against the settings schema, and the results
file that makes a batch resumable.

A job is one JSON object per line: `task` (text, image or speech; else the batch's --task), `prompt`
(`input` for speech too), an optional `id` (a string or an integer; default: its line number), `out` (an
image or audio file), for images `init_image` and `mask` (paths), and any setting under its config-key name
(settings.py). A job's own value wins over the batch's flags, which win over the environment and
config.toml, as for a single run. A bad job fails alone (its result says why, with the exit code a single
run would give); so does a line that is too long, not UTF-8, or holds a lone surrogate.
"""

from __future__ import annotations

import contextlib
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


def parse_line(line: Line, default_task: str | None) -> Job:
    """A job from one line read; a job with `error` set when the line is not a job."""
    if line.text is None:
        return Job(_readable_id(line) or str(line.number), line.number, error=line.error)
    return parse_job(line.number, line.text, default_task)


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
        _fill(job, data, default_task)
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
    """Each id's last status in RESULTS (ok or error); a line that is not a result is ignored."""
    if path is None or not path.is_file():
        return {}
    last: dict[str, str] = {}
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
            return
        self.handle.write(line)
        self.handle.flush()
        os.fsync(self.handle.fileno())

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
