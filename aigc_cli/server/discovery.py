"""Where a running `aigc serve` is: AIGC_HOST, else the record the server keeps in AIGC_HOME while it runs.

The record (AIGC_HOME/server.json) is written once the server listens and removed when it stops; a record
whose process is gone (a server killed with SIGKILL) is ignored. Nothing heavy is imported here.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..config import settings
from ..errors import UsageError

DEFAULT_PORT = 8765


@dataclass(frozen=True)
class ServerRef:
    """A server the CLI may send its requests to."""

    host: str
    port: int
    api_key: str | None
    """AIGC_API_KEY, sent as `Authorization: Bearer KEY`."""
    source: str
    """How it was found: "AIGC_HOST" or the record's path."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def record_path() -> Path:
    return settings().home / "server.json"


def parse_host(value: str, name: str = "AIGC_HOST") -> tuple[str, int]:
    """(host, port) of `http://HOST:PORT`, `HOST:PORT` or `HOST` (port 8765), with OpenAI's base-URL path
    `/v1` allowed after it (`http://127.0.0.1:8765/v1`, as OpenAI's clients are given it). UsageError
    otherwise, naming what is wrong: the scheme, the port or the path."""
    text = value.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        port = -1
    shapes = f"{name} must be http://HOST:PORT, HOST:PORT or HOST (got {value!r})"
    if parts.scheme != "http":
        raise UsageError(f"{shapes}: the server speaks plain HTTP; put a TLS proxy in front of it for HTTPS")
    if not parts.hostname or port <= 0:
        raise UsageError(f"{shapes}: a host name and a port from 1 to 65535")
    if parts.path.rstrip("/") not in ("", "/v1"):
        raise UsageError(f"{shapes}: no path but OpenAI's /v1 (got {parts.path!r})")
    return parts.hostname, port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def read_record() -> dict | None:
    """The running server's record, or None (no record, unreadable, or its process is gone)."""
    try:
        record = json.loads(record_path().read_text(encoding="utf-8"))
        pid, host, port = int(record["pid"]), str(record["host"]), int(record["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    return {**record, "pid": pid, "host": host, "port": port}


def write_record(host: str, port: int, key_required: bool) -> Path:
    """Record this process as the running server (atomically); returns the path."""
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": host, "port": port, "api_key_required": key_required}
    temp = path.with_name(f".{path.name}.{os.getpid()}.part")
    temp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(temp, path)
    return path


def remove_record() -> None:
    """Remove the record if it is this process's (a newer server may have replaced it)."""
    path = record_path()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if int(json.loads(path.read_text(encoding="utf-8"))["pid"]) == os.getpid():
            path.unlink()


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host` (a wildcard bind: loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def find_server() -> ServerRef | None:
    """The server to send this command's request to, or None (run in-process)."""
    key = os.environ.get("AIGC_API_KEY") or None
    given = os.environ.get("AIGC_HOST", "").strip()
    if given:
        host, port = parse_host(given)
        return ServerRef(host, port, key, "AIGC_HOST")
    record = read_record()
    if record is None:
        return None
    return ServerRef(connect_host(record["host"]), record["port"], key, str(record_path()))
