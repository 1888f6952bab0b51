"""`aigc` run in this process: the same main(), argv, stdin, stdout, stderr, environment and folder as a
real process gets, without starting Python and importing torch again for every run (a real process costs
about 3 s of CPU before it does anything). Contract points that need a real process (pipes between
processes, a closed stdout, a terminal, signals, what `--help` imports) use conftest.run_aigc instead.

stdin, stdout and stderr are real files (not pipes, not terminals), so `isatty()` is false and stdin's
fstat says it is a file, as `aigc ... < file` sees it. Between runs the engine pool is emptied and the
process-wide switches aigc sets (SIGINT handler, the log's warned-once flag) are put back, so that each run
starts as a fresh process would, but for what Python keeps imported.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack


def _stream(handle: object) -> io.TextIOWrapper:
    return io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", write_through=True)  # type: ignore[arg-type]


_FROZEN_AT = 0
"""len(sys.modules) when freeze_imported() last froze."""


def freeze_imported() -> None:
    """Move what the imported libraries made (torch, transformers, diffusers: about a million objects) out
    of the garbage collector's sight (gc.freeze), once more modules are imported than at the last freeze.
    Each run below ends with aigc's pool unloading its engines, which calls gc.collect(): in a test process
    that scans every object it holds (0.2-0.5 s a run), frozen ones aside (about 0.01 s). Nothing is run
    differently: the frozen objects are only never collected as garbage (refcounting still frees them)."""
    import gc

    global _FROZEN_AT
    if len(sys.modules) > _FROZEN_AT:
        gc.collect()  # garbage made so far is not frozen
        gc.freeze()
        _FROZEN_AT = len(sys.modules)


def _hub_constants_from_environment() -> None:
    """huggingface_hub reads HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT... once, when it is imported; a real
    process imports it with this run's environment, so read them again here."""
    import importlib

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        importlib.reload(constants)


def run_cli(
    *args: str,
    input: bytes | str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `aigc ARGS` in-process: a CompletedProcess with the exit code and the bytes of stdout and
    stderr, as conftest.run_aigc returns for a real process. `timeout` is accepted and not enforced."""
    from aigc_cli import cli, logs
    from aigc_cli.pool import default_pool

    if isinstance(input, str):
        input = input.encode()
    freeze_imported()
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved = (sys.argv, sys.stdin, sys.stdout, sys.stderr)
    handler = signal.getsignal(signal.SIGINT)
    code: object = 0
    with ExitStack() as stack:
        stdin_file = stack.enter_context(tempfile.TemporaryFile())
        stdin_file.write(input or b"")
        stdin_file.seek(0)
        out_file = stack.enter_context(tempfile.TemporaryFile())
        err_file = stack.enter_context(tempfile.TemporaryFile())
        stdin, stdout, stderr = _stream(stdin_file), _stream(out_file), _stream(err_file)
        try:
            os.environ.update(env or {})
            if cwd is not None:
                os.chdir(cwd)
            sys.argv = ["aigc", *args]
            _hub_constants_from_environment()
            sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code
            for stream in (stdout, stderr):
                stream.flush()
        finally:
            sys.argv, sys.stdin, sys.stdout, sys.stderr = saved
            signal.signal(signal.SIGINT, handler)
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            logs._WARNED = False
            pool = default_pool()
            for entry in pool.entries():
                pool.unload(entry.key)
        out_file.seek(0)
        err_file.seek(0)
        returncode = code if isinstance(code, int) else (0 if code is None else 1)
        return subprocess.CompletedProcess(["aigc", *args], returncode, out_file.read(), err_file.read())
