"""Start real `aigc serve` processes on free loopback ports (port 0: the server prints its URL on stdout)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import AIGC


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    home: Path
    env: dict[str, str]
    log: list[str] = field(default_factory=list)
    """The server's stderr lines so far (read by a thread)."""

    def stderr(self) -> str:
        return "\n".join(self.log)

    def wait_for_line(self, *words: str, since: int = 0, timeout: float = 60) -> str:
        """The first line of the log from line `since` on that holds every word, once it is there
        (a server shared by the session has other tests' lines too); AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log[since:] if all(word in line for word in words)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no line with {words} in:\n{self.stderr()}"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a test server: its own AIGC_HOME and HF cache, offline, the torch backends."""
    env = {
        **os.environ,
        "AIGC_HOME": str(home / "aigc-home"),
        "HF_HOME": str(home / "hf-home"),
        "HF_HUB_OFFLINE": "1",
        "AIGC_TEXT_BACKEND": "torch",
        "AIGC_IMAGE_BACKEND": "torch",
    }
    for name in ("AIGC_DEBUG", "AIGC_DEVICE", "AIGC_TEXT_MODEL", "AIGC_HOST", "AIGC_API_KEY"):
        env.pop(name, None)
    env.update(extra)
    return env


def start_server(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Server:
    """`aigc serve --port 0 ARGS`, once it prints its URL and /health answers 200 (its --preload models
    loaded). Raises with its stderr if it exits first."""
    env = env or server_env(home)
    process = subprocess.Popen(
        [AIGC, "serve", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=home,
    )
    server = Server(process, "", Path(env["AIGC_HOME"]), env)

    def read_stderr() -> None:
        for line in process.stderr:
            server.log.append(line.decode(errors="replace").rstrip("\n"))

    threading.Thread(target=read_stderr, daemon=True).start()
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line or process.poll() is not None:
            break
    if not line.startswith(b"http://"):
        process.kill()
        process.wait()
        time.sleep(0.2)
        raise RuntimeError(f"aigc serve did not start (exit {process.returncode}):\n{server.stderr()}")
    server.url = line.decode().strip()
    while time.monotonic() < deadline:  # the URL comes at once; /health says 200 once --preload is done
        status, _, _ = http(server.url + "/health", headers=_key_of(args))
        if status != 503 or process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is not None:
        time.sleep(0.2)
        raise RuntimeError(
            f"aigc serve stopped while loading (exit {process.returncode}):\n{server.stderr()}"
        )
    return server


def _key_of(args: tuple[str, ...]) -> dict[str, str]:
    """/health needs no key; sent anyway when there is one, as a client that always sends it would."""
    return {"Authorization": f"Bearer {args[args.index('--api-key') + 1]}"} if "--api-key" in args else {}


def http(
    url: str,
    method: str = "GET",
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one raw HTTP request; errors are answers too."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if isinstance(body, dict):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
