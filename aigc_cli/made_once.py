"""Folders aigc makes once and keeps (a converted model, an ONNX export), safe under concurrency."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def make_once(
    target: Path,
    marker: str,
    build: Callable[[Path], None],
    announce: Callable[[str | None], None],
    problem: Callable[[Path], str | None] | None = None,
) -> Path:
    """`target`, built by `build(work_folder)` unless `target/marker` exists already and `problem(target)`
    finds nothing wrong with it (a damaged one is built again).

    Under a file lock, into a temp folder beside the target, then an atomic rename: processes that start
    together build it once (the others wait, then reuse it), and a failed build leaves nothing behind.
    `announce(why)` runs before a build: why is None for a first build, else what was wrong.
    """

    def wrong() -> str | None:
        if not (target / marker).is_file():
            return "missing"
        return problem(target) if problem is not None else None

    if wrong() is None:
        return target
    from filelock import FileLock

    from .config import ensure_home

    ensure_home(target.parent)
    with FileLock(str(target) + ".lock"):
        why = wrong()
        if why is None:  # another process made it while we waited
            return target
        announce(None if why == "missing" else why)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(work)
            if target.exists():
                shutil.rmtree(target)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


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
