"""Folders aigc makes once and keeps (a converted model, an ONNX export), safe under concurrency; and the
builds that failed, remembered so that they are not tried again for the same inputs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class FailedBefore(Exception):
    """The build failed before for the same inputs, so nothing was tried: str() is that failure's reason,
    `marker` the file that remembers it (deleting it makes the next use try again)."""

    def __init__(self, reason: str, marker: Path) -> None:
        super().__init__(reason)
        self.marker = marker


@dataclass(frozen=True)
class Memo:
    """How make_once remembers a failed build, in `target`.failed.json beside the target.

    inputs() -> what the build's result depends on, as JSON (the model's files, the libraries' versions):
    called only when a marker is there to compare or a failure to record. failures: the exception types
    that are the build's own verdict (remembered); others (a full disk, an interrupt) are not."""

    inputs: Callable[[], dict[str, Any]]
    failures: tuple[type[BaseException], ...]


def failure_marker(target: Path) -> Path:
    return target.with_name(target.name + ".failed.json")


def make_once(
    target: Path,
    marker: str,
    build: Callable[[Path], None],
    announce: Callable[[str | None], None],
    problem: Callable[[Path], str | None] | None = None,
    memo: Memo | None = None,
    space: tuple[int, str] | None = None,
) -> Path:
    """`target`, built by `build(work_folder)` unless `target/marker` exists already and `problem(target)`
    finds nothing wrong with it (a damaged one is built again).

    Under a file lock, into a temp folder beside the target, then an atomic rename: processes that start
    together build it once (the others wait, then reuse it), and a failed build leaves nothing behind.
    `announce(why)` runs before a build: why is None for a first build, else what was wrong.

    With a memo, a build failure of one of memo.failures is recorded (the inputs and the reason) and later
    calls with the same inputs raise FailedBefore at once: no lock, no folder, no build; other processes
    waiting on the lock see it too. Different inputs (a model or library changed) build again; a build that
    succeeds removes the record.

    space: (bytes the build is expected to write, what it makes in words): less free space than that in
    target's folder is an OutputError (exit 4) naming the folder, both sizes and the remedy, before the
    build starts; a disk that fills anyway (ENOSPC) is the same error, with nothing left behind. Neither is
    remembered as a failure: space can be freed.
    """

    def wrong() -> str | None:
        if not (target / marker).is_file():
            return "missing"
        return problem(target) if problem is not None else None

    if wrong() is None:
        return target
    if memo is not None:
        _raise_if_failed_before(target, memo)
    from filelock import FileLock

    from .config import ensure_home

    ensure_home(target.parent)
    # a hidden lock file: it stays (removing a lock file another process may hold is a race), unseen
    with FileLock(str(target.with_name(f".{target.name}.lock"))):
        why = wrong()
        if why is None:  # another process made it while we waited
            return target
        if memo is not None:  # or failed to, while we waited
            _raise_if_failed_before(target, memo)
        if space is not None:
            check_space(target.parent, *space)
        announce(None if why == "missing" else why)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(work)
            if target.exists():
                shutil.rmtree(target)
            os.replace(work, target)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                need, what = space or (0, f"{target.name}")
                raise _no_space(target.parent, need, shutil.disk_usage(target.parent).free, what) from None
            if memo is not None and isinstance(exc, memo.failures):
                _remember(target, memo.inputs(), str(exc))
            raise
        except BaseException as exc:
            if memo is not None and isinstance(exc, memo.failures):
                _remember(target, memo.inputs(), str(exc))
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if memo is not None:
        failure_marker(target).unlink(missing_ok=True)
    return target


def check_space(folder: Path, need: int, what: str) -> None:
    """OutputError (exit 4) when `folder`'s disk has less than `need` bytes free for `what`."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise _no_space(folder, need, free, what)


def _no_space(folder: Path, need: int, free: int, what: str) -> Exception:
    from .catalog import human_size
    from .errors import OutputError

    needed = f"about {human_size(need)} needed, " if need else ""
    return OutputError(
        f"Not enough free space in {folder} for {what} ({needed}{human_size(free)} free): free some space "
        "there, or set AIGC_HOME to a folder on a larger disk"
    )


def folder_bytes(folder: Path, patterns: tuple[str, ...] = ("*.safetensors", "*.bin", "*.gguf")) -> int:
    """The bytes of the weight files in `folder` and its subfolders (what an export or a conversion of it
    writes about as much of)."""
    return sum(p.stat().st_size for pattern in patterns for p in folder.rglob(pattern) if p.is_file())


def _raise_if_failed_before(target: Path, memo: Memo) -> None:
    """FailedBefore when target's failure marker records a failure for memo's inputs as they are now."""
    path = failure_marker(target)
    if not path.is_file():  # the common case costs one stat, and the inputs are not computed
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable or half-written: build, and a failure writes it again
    if isinstance(record, dict) and record.get("inputs") == memo.inputs():
        raise FailedBefore(str(record.get("reason") or "no reason recorded"), path)


def _remember(target: Path, inputs: dict[str, Any], reason: str) -> None:
    """Write target's failure marker atomically; a marker that cannot be written is only not remembered."""
    from datetime import UTC, datetime

    record = {"inputs": inputs, "reason": reason, "failed_at": datetime.now(UTC).isoformat()}
    temp = None
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".failed", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
        os.replace(temp, failure_marker(target))
    except OSError:
        if temp is not None:
            Path(temp).unlink(missing_ok=True)


def library_versions(*distributions: str) -> dict[str, str | None]:
    """The installed version of each distribution (None when absent), read from its metadata: nothing is
    imported."""
    from importlib import metadata

    from . import __version__

    found: dict[str, str | None] = {"aigc": __version__}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def safetensors_problem(folder: Path) -> str | None:
    """What is wrong with the .safetensors files of a folder (a truncated or garbled file), or None.

    Reads only each file's header (8 bytes of length, then JSON): no tensor is loaded."""
    import json

    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        try:
            with path.open("rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                if size < 8 or length > size - 8:
                    return f"{path} is truncated"
                header = json.loads(handle.read(length))
        except (OSError, ValueError) as exc:
            return f"{path} cannot be read ({exc})"
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        if 8 + length + max(ends, default=0) > size:
            return f"{path} is truncated ({size} of {8 + length + max(ends, default=0)} bytes)"
    return None
