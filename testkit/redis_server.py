"""A real redis-server for tests and benchmarks: on a free port, in a folder of its own.

Never assumes one runs: each user starts its own (the Makefile installs the Debian package) and
stops it. The append-only file is on, fsynced on every write, as the README advises for a
cluster's queue, so a kill -9 of Redis loses nothing it acknowledged.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from .daemon import free_port

READY_SECONDS = 20.0


class RedisServer:
    def __init__(self, folder: Path, port: int | None = None, appendfsync: str = "always") -> None:
        self.folder = folder
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "redis.log"
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make test installs the Debian package)"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                 str(self.folder), "--appendonly", "yes", "--appendfsync", self.appendfsync,
                 "--save", "", "--daemonize", "no", "--protected-mode", "yes",
                 "--maxmemory-policy", "noeviction"],
                stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        client = self.client()
        try:
            while time.monotonic() < deadline:
                assert self.proc and self.proc.poll() is None, self.log.read_text()
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    time.sleep(0.05)
        finally:
            client.close()
        raise AssertionError("redis-server not ready:\n" + self.log.read_text())

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and leaves."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: what it had not written is lost (nothing, with appendfsync always)."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
