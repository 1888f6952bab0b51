"""The web page at `/`: plain HTML, CSS and JavaScript from the package (aigc_cli/server/static), nothing
built at install time and nothing fetched from another host.

The page and its two files hold no data, so they are served without the API key (a browser cannot send
one when it opens a URL); the page then asks for the key once (kept in the tab's sessionStorage) and sends
it with every API call, which the Guard checks as for any client. The Host check applies to the page too,
and its Content-Security-Policy lets it reach this server only.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

FILES = {
    "index.html": "text/html; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
}
"""The page's files, by name, with their Content-Type: nothing else under /ui/ is served."""

PREFIX = "/ui/"

HEADERS = {
    # The page reaches this server only: scripts, styles, fetches; images and audio also from the blob:
    # and data: URLs it makes of the API's answers.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self' blob:; img-src 'self' blob: data:; media-src 'self' blob: data:; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_open(path: str) -> bool:
    """Whether `path` is served without the API key: /health, and the page's own files."""
    return path in ("/health", "/") or (path.startswith(PREFIX) and path[len(PREFIX) :] in FILES)


def read(name: str) -> bytes:
    """The bytes of one of the page's files."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


def add_routes(app: FastAPI) -> None:
    """Register GET / (the page) and GET /ui/{name} (its style and script); left out of /openapi.json,
    which describes the API."""

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return _file("index.html")

    @app.get(PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        from .protocol import error_json

        if name not in FILES or name == "index.html":
            body = error_json(f"No file {PREFIX}{name[:80]} (the page is at /)", "invalid_request_error")
            return Response(_dumps(body), status_code=404, media_type="application/json")
        return _file(name)


def _file(name: str) -> Response:
    return Response(read(name), media_type=FILES[name], headers=HEADERS)


def _dumps(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(body).encode()
