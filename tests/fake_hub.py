"""A Hugging Face Hub on 127.0.0.1 for the tests: model info and file resolve, as huggingface_hub expects.

It serves local folders as repos, answers Range requests, can drop a connection halfway through a file
once (to test resuming), and logs every request.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = repos
        self.log: list[tuple[str, str, str | None]] = []
        self.drop_once: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.handle(self, body=False)

            def do_GET(self):
                hub.handle(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str) -> list[str]:
        root = self.repos[repo]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    @staticmethod
    def oid(file: Path) -> str:
        return hashlib.sha1(file.read_bytes()).hexdigest()

    def handle(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(request.path.split("?")[0])
        self.log.append((request.command, path, request.headers.get("Range")))
        if path.startswith("/api/models/") and "/tree/" in path:
            repo = path.removeprefix("/api/models/").split("/tree/")[0]
            if repo not in self.repos:
                return self.reply(
                    request, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}
                )
            entries = [
                {
                    "type": "file",
                    "path": f,
                    "size": (self.repos[repo] / f).stat().st_size,
                    "oid": self.oid(self.repos[repo] / f),
                }
                for f in self.files(repo)
            ]
            return self.reply(
                request, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, body
            )
        if path.startswith("/api/models/"):
            repo = path.removeprefix("/api/models/").split("/revision/")[0]
            if repo not in self.repos:
                return self.reply(
                    request, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}
                )
            info = {
                "id": repo,
                "modelId": repo,
                "sha": COMMIT,
                "private": False,
                "siblings": [{"rfilename": f} for f in self.files(repo)],
            }
            return self.reply(
                request, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body
            )
        for repo in self.repos:
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                name = path.removeprefix(prefix).split("/", 1)[1]
                file = self.repos[repo] / name
                if not file.is_file():
                    return self.reply(request, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
                return self.send_file(request, file, name, body)
        return self.reply(request, 404, b"", {}, body)

    def send_file(self, request, file: Path, name: str, body: bool) -> None:
        data = file.read_bytes()
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Accept-Ranges": "bytes",
        }
        start = 0
        ranged = request.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            start = int(ranged.removeprefix("bytes=").split("-")[0])
        part = data[start:]
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if not body:
            headers["Content-Length"] = str(len(data))
            return self.reply(request, 200, b"", headers, False)
        if name in self.drop_once and not start:
            self.drop_once.discard(name)
            request.send_response(200)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                request.send_header(key, value)
            request.end_headers()
            request.wfile.write(part[: len(part) // 2])
            request.wfile.flush()
            request.close_connection = True
            request.connection.shutdown(2)  # the connection drops halfway through the file
            return None
        return self.reply(request, status, part, headers, body)

    @staticmethod
    def reply(request, status: int, data: bytes, headers: dict[str, str], body: bool = True) -> None:
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        if "Content-Length" not in headers:
            request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body and data:
            request.wfile.write(data)
