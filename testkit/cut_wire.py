"""A TCP relay to a real server that can lose the reply to one request.

A connection that dies just after the server has acted (Redis killed -9 after its append-only
write, a NAS link that drops) leaves the client not knowing whether its command took effect.
The relay makes that moment happen on purpose: once armed with a byte pattern, it forwards the
next request that contains it, swallows the server's reply and cuts that connection.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

CHUNK = 65536


class CutWire:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pattern: bytes | None = None
        self.cuts = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply_to(self, pattern: bytes) -> None:
        """The next request containing `pattern` reaches the server; its reply never returns."""
        with self._lock:
            self._pattern = pattern

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._open += [client, server]
            doomed = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, doomed),
                             daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client, doomed),
                             daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket,
                  doomed: threading.Event) -> None:
        while data := _recv(client):
            with self._lock:
                if self._pattern is not None and self._pattern in data:
                    self._pattern = None
                    doomed.set()  # before the server can answer
            try:
                server.sendall(data)
            except OSError:
                break
        _close(client, server)

    def _replies(self, server: socket.socket, client: socket.socket,
                 doomed: threading.Event) -> None:
        while data := _recv(server):
            if doomed.is_set():
                with self._lock:
                    self.cuts += 1
                break  # the server acted; the client never hears it
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client, server)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            _close(*self._open)

    def __enter__(self) -> CutWire:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(CHUNK)
    except OSError:
        return b""


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
