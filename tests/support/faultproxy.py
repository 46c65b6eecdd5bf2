"""A fault-injecting TCP proxy on loopback, between a client and kube-apiserver.

TLS passes through untouched (the apiserver's certificate names 127.0.0.1), so the client talks
to the real server while the test drops, stalls, slows or refuses its connections.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_TICK = 0.05  # how often pumps look at the fault switches


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket | None
    thread: threading.Thread | None = None
    closed: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)
    last_upstream: float = field(default_factory=time.monotonic)  # when the server last sent a byte

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class FaultProxy:
    """``with FaultProxy(port) as proxy:`` then point a client at ``proxy.url``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.latency = 0.0
        self.close_idle_after: float | None = None  # see close_idle()
        self._stalled = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.accepted = 0  # connections accepted since start; tests use it to see reconnects

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._stopping.clear()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(_TICK)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        self._stop_listening()
        self.drop_all()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------------------------------

    def drop_all(self) -> int:
        """Close every open connection at once (RST/FIN to both sides); returns how many."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        for conn in conns:
            if conn.thread is not None:
                conn.thread.join(5)
        return len(conns)

    def stall(self, timeout: float = 5.0) -> None:
        """Keep accepting and keep connections open, but forward no byte in either direction.

        Returns once every open connection's pump has stopped, so nothing sent afterwards passes."""
        self._stalled.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            if not conn.closed.is_set() and not conn.paused.wait(timeout):
                raise TimeoutError("a proxied connection did not pause")

    def close_idle(self, after: float) -> None:
        """Close every connection as soon as the server has been silent on it for ``after``
        seconds: answers to short requests still arrive whole, but every watch on a quiet
        resource ends right after its headers, as behind a load balancer with a short idle timeout."""
        self.close_idle_after = after

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused; open ones are dropped."""
        self._stop_listening()
        self.drop_all()

    def heal(self) -> None:
        """Back to a transparent proxy (re-listening on the same port if refusing)."""
        self._stalled.clear()
        self.latency = 0.0
        self.close_idle_after = None
        if self._listener is None:
            self.start()

    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._conns if not c.closed.is_set())

    # -- internals ---------------------------------------------------------------------------------

    def _stop_listening(self) -> None:
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError as err:
                log.debug("proxy %s: upstream connect failed: %s", self.port, err)
                client.close()
                continue
            conn = _Conn(client, upstream)
            conn.thread = threading.Thread(target=self._pump, args=(conn,), daemon=True,
                                           name=f"faultproxy-{self.port}-conn")
            with self._lock:
                self._conns.append(conn)
            conn.thread.start()

    def _pump(self, conn: _Conn) -> None:
        assert conn.upstream is not None
        peers = {conn.client: conn.upstream, conn.upstream: conn.client}
        try:
            while not conn.closed.is_set():
                if self._stalled.is_set():
                    conn.paused.set()
                    conn.closed.wait(_TICK)
                    continue
                conn.paused.clear()
                readable, _, _ = select.select(list(peers), [], [], _TICK)
                idle_limit = self.close_idle_after
                if idle_limit is not None and not readable and time.monotonic() - conn.last_upstream > idle_limit:
                    return
                for sock in readable:
                    if self._stalled.is_set():
                        break  # leave the bytes in the kernel buffer
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.latency:
                        time.sleep(self.latency)
                    peers[sock].sendall(data)
                    if sock is conn.upstream:
                        conn.last_upstream = time.monotonic()
        except (OSError, ValueError):
            return
        finally:
            conn.close()
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
