"""Tiny loopback servers that misbehave on purpose, for what a real registry will not do on demand:
answer 503 a set number of times, redirect blobs to another host, drop or hold every connection.
Each records what it saw, so tests count attempts instead of sleeping."""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: Mapping[str, str]


class ScriptedHTTPServer:
    """Plain HTTP on 127.0.0.1. ``script[path]`` is a list of replies given in turn; the last one repeats.
    Unscripted paths answer 404."""

    def __init__(self, script: Mapping[str, list[Reply]] | None = None) -> None:
        self.script: dict[str, list[Reply]] = {k: list(v) for k, v in (script or {}).items()}
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                reply = owner._next(self.command, self.path, dict(self.headers.items()))
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = _answer  # noqa: N815 - http.server's names

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="scripted-http", daemon=True)

    def _next(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        with self._lock:
            self.seen.append(Seen(method, path, headers))
            replies = self.script.get(path.partition("?")[0])
            if not replies:
                return Reply(404, b'{"errors":[{"code":"NOT_FOUND"}]}')
            return replies.pop(0) if len(replies) > 1 else replies[0]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.path.partition("?")[0] == path)

    def __enter__(self) -> ScriptedHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class CountingListener:
    """A TCP port that accepts and then either closes at once (``drop``) or never answers (``hold``).
    ``accepted`` counts connections; it is incremented before the connection is closed."""

    def __init__(self, mode: str = "drop") -> None:
        assert mode in ("drop", "hold")
        self.mode = mode
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="counting-listener", daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._socket.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.accepted += 1
            if self.mode == "drop":
                conn.close()
            else:
                self._held.append(conn)

    def __enter__(self) -> CountingListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._socket.close()
        for conn in self._held:
            conn.close()
