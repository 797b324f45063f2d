"""The sandbox's HTTP server: stdlib ThreadingHTTPServer, HTTP/1.1 keep-alive, quiet.

Each response goes out in a single write with TCP_NODELAY, so small pages never wait on Nagle's
algorithm; each connection has its own thread, so latency sleeps of concurrent clients overlap.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from typing_extensions import Self, override

from tap_analytics.sandbox.api import Reply, SandboxApi, accepts_gzip, gzip_body
from tap_analytics.sandbox.config import SandboxConfig
from tap_analytics.sandbox.records import Record, format_timestamp

_POLL_SECONDS = 0.05  # how soon serve_forever notices shutdown()


class _HttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its API and its open connections (to close them)."""

    daemon_threads = True
    # socketserver listens with a backlog of 5: a burst of new connections (three jobs of 8
    # workers starting together) overflows it, the kernel drops their SYNs, and each such
    # request arrives a second late, on the client's retransmit, where an API's servers
    # would have queued it. Listen as they do (the kernel caps it at net.core.somaxconn).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], api: SandboxApi) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    @override
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that vanish mid-request (normal for timeouts); report real bugs."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Shut down the open keep-alive connections so that their threads end."""
        for connection in list(self.connections):
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Turns each request into SandboxApi.handle and writes its Reply."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer

    @override
    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self.connection)

    @override
    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    @override
    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: no line per request."""

    def _respond(self) -> None:
        """Read the request body, ask the API, and send its reply (or drop the connection)."""
        length = self.headers.get("Content-Length", "0")
        body = self.rfile.read(int(length)) if length.isdigit() else b""
        reply = self.server.api.handle(self.command, self.path, self.headers, body)
        if reply.reset:
            self._reset()
        else:
            self._send(reply)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _respond  # noqa: N815 (stdlib's names)

    def _send(self, reply: Reply) -> None:
        body = reply.body
        headers = {
            "Content-Type": f"{reply.content_type}; charset=utf-8",
            "Date": formatdate(self.server.api.dataset.clock.now(), usegmt=True),
            **reply.headers,
        }
        if reply.gzipped:
            headers["Content-Encoding"] = "gzip"
        elif accepts_gzip(self.headers.get("Accept-Encoding", "")):
            body = gzip_body(body)
            headers["Content-Encoding"] = "gzip"
        headers["Content-Length"] = str(len(body))
        if self.close_connection:
            headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:  # the client gave up (a stall it timed out on): nothing to tell it
            self.close_connection = True

    def _reset(self) -> None:
        """Close the connection with a TCP RST and no response."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class SandboxServer:
    """The sandbox API on 127.0.0.1, served from a daemon thread; use it as a context manager."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self._api = SandboxApi(config or SandboxConfig())
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind the socket and serve in a daemon thread; return self."""
        if self._httpd is None:
            config = self._api.config
            self._httpd = _HttpServer((config.host, config.port), self._api)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": _POLL_SECONDS},
                name="sandbox-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, drop open connections and release the port."""
        if self._httpd is None or self._thread is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """Return the base URL, e.g. `http://127.0.0.1:54321` (no trailing slash, no /v1)."""
        if self._httpd is None:
            raise RuntimeError("the sandbox is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def config(self) -> SandboxConfig:
        """Return the current switches."""
        return self._api.config

    def snapshot(self) -> dict[str, list[Record]]:
        """Return resource name -> current records exactly as the API serves them, in API order."""
        return self._api.dataset.snapshot()

    def mutate(
        self,
        updates: int = 0,
        inserts: int = 0,
        deletes: int = 0,
        resources: Iterable[str] | None = None,
    ) -> None:
        """Update (only `resources`' records, if given), insert and delete records now."""
        self._api.mutate(updates, inserts, deletes, resources)

    def now_iso(self) -> str:
        """The server's time, in the API's timestamp form."""
        return format_timestamp(self._api.dataset.clock.now())

    def advance_clock(self, seconds: int) -> None:
        """Move the server's clock forward (with `frozen_clock`, the only way it moves)."""
        self._api.dataset.clock.advance(seconds)

    def configure(self, **switches: Any) -> SandboxConfig:
        """Change switches at runtime, e.g. `configure(fault_rate=0.15)`; return the new config."""
        return self._api.configure(**switches)

    def stats(self) -> dict[str, Any]:
        """Return the counters: requests, responses by status, faults by kind, and more."""
        return self._api.stats.as_dict()
