"""A local HTTP server (127.0.0.1, a thread) that plays the download hosts: plain files with Range
support, a connection that drops mid-file, a server that ignores Range, Google Drive confirmation pages.
Nothing in these tests touches the internet."""
from __future__ import annotations

import socket
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from vidtriplane.weights import download as download_module


@dataclass
class Served:
    """What the test server knows: routes and the requests it saw."""

    routes: dict[str, Callable] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path with query, Range header)
    base: str = ""

    def url(self, path: str) -> str:
        return self.base + path

    def ranges(self, prefix: str) -> list[str | None]:
        return [r for p, r in self.requests if p.startswith(prefix)]


def send_file(handler: BaseHTTPRequestHandler, data: bytes, *, honour_range: bool = True,
              drop_after: int | None = None, content_type: str = "application/octet-stream") -> None:
    """Answer with ``data`` (206 for a Range request); ``drop_after`` closes the socket after that many bytes."""
    start = 0
    rng = handler.headers.get("Range")
    if rng and honour_range:
        start = int(rng.split("=")[1].split("-")[0])
        if start >= len(data):
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(data)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
        handler.send_response(200)
    body = data[start:]
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if drop_after is not None:
        handler.wfile.write(body[:drop_after])
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)
        return
    handler.wfile.write(body)


def send_html(handler: BaseHTTPRequestHandler, page: str, *, cookie: str | None = None) -> None:
    body = page.encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    if cookie:
        handler.send_header("Set-Cookie", cookie)
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def server(monkeypatch):
    """A running local server; tests register routes in ``server.routes[path] = fn(handler, query)``."""
    monkeypatch.setattr(download_module, "RETRY_BACKOFF_S", 0.0)
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            parts = urllib.parse.urlsplit(self.path)
            served.requests.append((self.path, self.headers.get("Range")))
            route = served.routes.get(parts.path)
            if route is None:
                self.send_error(404)
                return
            route(self, dict(urllib.parse.parse_qsl(parts.query)))

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    served.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty weight cache in a temp folder (VIDTRIPLANE_HOME), online mode."""
    home = tmp_path / "cache"
    monkeypatch.setenv("VIDTRIPLANE_HOME", str(home))
    monkeypatch.delenv("VIDTRIPLANE_OFFLINE", raising=False)
    return home
