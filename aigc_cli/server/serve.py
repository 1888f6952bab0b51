"""`aigc serve`: check the options, listen, preload, record the server in AIGC_HOME, run uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from ..console import Console, LogConsole
from ..errors import AigcError, UsageError
from ..hub import SERVER_NO_PULL
from .discovery import connect_host, read_record, remove_record, write_record
from .state import check_preload, check_settings, parse_keep_alive, preload

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """A server other machines can reach needs an API key."""
    if not is_loopback(host) and not api_key:
        raise UsageError(
            f"--host {host} lets other machines reach the server: give it a key with --api-key KEY "
            "or AIGC_API_KEY (clients send `Authorization: Bearer KEY`)"
        )


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: not an address this machine has ({exc.strerror})") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise AigcError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc} (another server there? use --port)"
        ) from exc
    return sock


def check_options(
    host: str, api_key: str | None, keep_alive: str, out_dir: str | None, allow_pull: bool
) -> tuple[str | None, float | None]:
    """What `aigc serve` (and `--ray`) checks before it listens: (the API key, from AIGC_API_KEY when not
    given; the keep-alive in seconds, None for ever). A server reachable from other machines needs a key, a
    signing setup and the settings must be valid, no other server may use this AIGC_HOME, the MCP output
    folder must be makeable (exit 4); without allow_pull, requests never download. Raises UsageError (exit 2)
    or AigcError naming the problem."""
    from ..config import go_offline
    from ..credentials import signing_setup

    api_key = api_key or os.environ.get("AIGC_API_KEY") or None
    check_exposure(host, api_key)
    signing_setup()  # a broken signing setup stops the server now, not its first image
    running = read_record()
    if running is not None:
        raise AigcError(
            f"Another aigc serve runs with this AIGC_HOME (pid {running['pid']}, port {running['port']}): "
            "stop it first, or give this one its own AIGC_HOME"
        )
    seconds = parse_keep_alive(keep_alive)
    check_settings()
    if out_dir is not None:  # where /mcp's tools save: a folder that cannot be made fails now, exit 4
        from pathlib import Path

        from ..mcp.tools import make_folder

        make_folder(Path(out_dir).expanduser())
    if not allow_pull:
        go_offline()  # requests never download: only what is cached or embedded is served
        os.environ[SERVER_NO_PULL] = "1"  # and a model that is not cached says why, with --allow-pull
    return api_key, seconds


def _preload_in_background(state: Any, names: list[str], console: Console, server: Any) -> None:
    """Preload in a thread while the server answers (/health: 503 "loading", then 200). A model that does
    not load stops the server with that model's error (state.failed), as it would have before listening."""
    from ..errors import failure_of

    def run() -> None:
        try:
            preload(state, names, console)
        except Exception as exc:  # the main thread says it and exits once uvicorn has stopped
            state.failed = failure_of(exc, None)
            server.should_exit = True
        finally:
            state.loading.clear()

    state.loading.set()
    threading.Thread(target=run, name="aigc-preload", daemon=True).start()


def run_server(
    host: str,
    port: int,
    keep_alive: str,
    preload_names: list[str],
    api_key: str | None,
    allow_pull: bool,
    cors_origins: list[str],
    verbose: bool,
    out_dir: str | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM. Prints the URL on stdout once it listens; the models named by
    --preload load meanwhile (/health says "loading" until they have; one that fails stops the server with
    its exit code). Notes, loads and (with -v) each request on stderr."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise AigcError(
            f"aigc serve needs FastAPI and uvicorn ({exc.name} is missing): pip install 'aigc[serve]'"
        ) from None
    from .state import ServerState

    api_key, seconds = check_options(host, api_key, keep_alive, out_dir, allow_pull)
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    console = LogConsole(verbose=verbose)
    state = ServerState(seconds, preload_names, console)
    check_preload(state, preload_names)
    hosts = LOOPBACK_NAMES if is_loopback(host) else None
    app = create_app(state, api_key=api_key, hosts=hosts, cors_origins=cors_origins, mcp_out_dir=out_dir)
    import copy

    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"  # stdout carries the URL only
    config = uvicorn.Config(
        app,
        log_level="info" if verbose else "warning",
        access_log=verbose,
        log_config=log_config,
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.error").addFilter(_no_cancelled)
    shown = connect_host(host)
    url = f"http://[{shown}]:{bound}" if ":" in shown else f"http://{shown}:{bound}"
    write_record(host, bound, api_key is not None)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again once it is done: end here
    # (the record removed), not in the handler that ends a one-shot command at once.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        state.start_reaper()
        _preload_in_background(state, preload_names, console, server)
        print(url, flush=True)
        kept = "for ever" if seconds is None else f"{seconds:g} s"
        console.info(f"aigc: serving on {url} (idle models stay loaded {kept}; Ctrl-C stops)")
        server.run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        state.stop()
        remove_record()
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if state.failed is not None:
        console.info(f"aigc: error: {state.failed.message}")
    console.info("aigc: server stopped")
    sys.stdout.flush()
    sys.stderr.flush()
    # A generation a client still waits on (uvicorn cancels its request, not the thread that runs it) must
    # not keep the process alive: the record is gone and the port closed, so end now.
    os._exit(int(state.failed.exit_code) if state.failed is not None else 0)


def _no_cancelled(record: logging.LogRecord) -> bool:
    """Leave out uvicorn's traceback for the requests it cancels when the server stops (one line says it
    stopped)."""
    import asyncio

    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


class _Stopped(Exception):
    pass


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped()
