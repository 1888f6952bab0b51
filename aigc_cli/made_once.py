"""Folders aigc makes once and keeps (a converted model, an ONNX export), safe under concurrency."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def make_once(target: Path, marker: str, build: Callable[[Path], None], announce: Callable[[], None]) -> Path:
    """`target`, built by `build(work_folder)` unless `target/marker` exists already.

    Under a file lock, into a temp folder beside the target, then an atomic rename: processes that start
    together build it once (the others wait, then reuse it), and a failed build leaves nothing behind.
    """
    if (target / marker).is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / marker).is_file():  # another process made it while we waited
            return target
        announce()
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(work)
            if target.exists():
                shutil.rmtree(target)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target
