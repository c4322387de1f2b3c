"""The daemon as tests and benchmarks drive it: configs, a real process, an in-process service.

Waits poll a condition with a deadline (a timeout, never a timing assertion).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from daemon.config import Config, config_from_dict
from daemon.models import ModelCache
from daemon.service import Service
from daemon.worker import Transcribe

ROOT = Path(__file__).resolve().parent.parent


def make_config(root: Path, **tables: Any) -> Config:
    """A config rooted in `root` with fast settling; tables override per test."""
    raw: dict[str, Any] = {
        "watch": {"settle_seconds": 0.3, "poll_interval": 0.5},
        "jobs": {"retry_backoff_seconds": 0.2},
        "http": {"port": 0},
    }
    for name, values in tables.items():
        if isinstance(values, list):  # [[name]] tables (path_maps, libraries)
            raw[name] = values
        else:
            raw.setdefault(name, {}).update(values)
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    return config_from_dict(raw, base=root)


def as_at_a_terminal() -> None:
    """`preexec_fn` for a CLI the test will Ctrl-C: SIGINT back to its default, as a terminal
    gives it. A suite started in the background (`make test &`, a CI runner's shell without job
    control) ignores SIGINT, every child inherits that, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_toml(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(predicate: Callable[[], Any], timeout: float = 120, what: str = "condition",
             alive: Callable[[], None] | None = None) -> Any:
    """Poll `predicate` until it is truthy (returned) or the deadline passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if alive is not None:
            alive()
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def lose_inotify_events(d: DaemonProcess, inbox: Path, make: Callable[[], None]) -> None:
    """The kernel drops the daemon's inotify events, those of `make`'s changes among them:
    with the daemon stopped, more changes than one inotify instance queues
    (fs.inotify.max_queued_events) are made in the inbox, then `make` runs. All the daemon
    reads afterwards is "queue overflowed"."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    noise = [inbox / "noise-a.txt", inbox / "noise-b.txt"]  # not media: never candidates
    with d.paused(), open(noise[0], "ab", buffering=0) as a, \
            open(noise[1], "ab", buffering=0) as b:
        for n in range(limit + 1000):  # alternating files: inotify merges no two of these
            (a if n % 2 else b).write(b".")
        make()


async def wait_until(predicate: Callable[[], Any], timeout: float = 120.0,
                     what: str = "condition") -> Any:
    """The same on the event loop: the daemon under test keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running_service(root: Path, cache: ModelCache | None = None,
                          transcribe: Transcribe | None = None,
                          **tables: Any) -> AsyncIterator[Service]:
    """A started in-process daemon (real watcher, journal, HTTP) until the block ends;
    `transcribe` replaces the pipeline (a scripted one), `tables` override the config."""
    service = Service(make_config(root, **tables), cache=cache, pipeline=transcribe)
    await service.startup()
    main = asyncio.create_task(service.main_loop())
    try:
        yield service
    finally:
        service.stopping.set()
        await main
        await service.shutdown()


async def run_burst(config: Config, cache: ModelCache | None = None,
                    transcribe: Transcribe | None = None) -> Service:
    """Run a daemon until its queue is empty (arq's burst mode)."""
    service = Service(config, burst=True, cache=cache, pipeline=transcribe)
    await service.run(install_signals=False)
    return service


async def read_sse(resp: aiohttp.ClientResponse, out: list[dict[str, Any]],
                   stop: asyncio.Event | None = None,
                   comments: list[str] | None = None) -> None:
    """Parse an SSE stream into [{"id", "event", "data"}] until it ends or `stop` is set."""
    fields: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            if comments is not None:
                comments.append(line)
            continue
        if line == "":
            if "data" in fields:
                out.append({"id": int(fields["id"]) if "id" in fields else None,
                            "event": fields.get("event"), "data": json.loads(fields["data"])})
            fields = {}
            if stop is not None and stop.is_set():
                return
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


def base_url(service: Service) -> str:
    return f"http://127.0.0.1:{service.http_port}"


def jobs_of(root: Path) -> list[dict[str, Any]]:
    """The journal's rows, read straight from SQLite (after the daemon stopped)."""
    db = sqlite3.connect(root / "state" / "journal.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY rel_path")]
    finally:
        db.close()


class DaemonProcess:
    """A real `python -m daemon run` in its own folder, driven like a user would."""

    def __init__(self, root: Path, **tables: dict[str, Any]) -> None:
        self.root = root
        self.port = free_port()
        config: dict[str, dict[str, Any]] = {
            "watch": {"settle_seconds": 0.5, "poll_interval": 1.0},
            "jobs": {"retry_backoff_seconds": 0.5},
            "http": {"port": self.port},
        }
        for name, values in tables.items():
            config.setdefault(name, {}).update(values)
        self.port = config["http"]["port"]
        self.config_path = write_toml(root / "config.toml", config)
        (root / "inbox").mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "daemon.log"

    def start(self, wait: bool = True, journald: bool = False) -> DaemonProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("JOURNAL_STREAM", None)
        self.log.touch()
        if journald:  # stderr "is the journal": JOURNAL_STREAM names its device and inode
            st = self.log.stat()
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(self.config_path)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc and self.proc.poll() is None, self.log.read_text()
            try:
                if self.get("/healthz")["status"] == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("daemon not ready:\n" + self.log.read_text())

    def get(self, route: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{route}", timeout=5) as r:
            return json.load(r)

    def status(self) -> dict[str, Any]:
        return self.get("/status")

    def healthz(self) -> dict[str, Any]:
        """/healthz's body, whether it answers 200 (ok) or 503 (degraded, with reasons)."""
        try:
            return dict(self.get("/healthz"))
        except urllib.error.HTTPError as exc:
            return dict(json.load(exc))

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 120,
                 what: str = "condition") -> Any:
        try:
            return wait_for(predicate, timeout, what, alive=self._alive)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.log.read_text()[-3000:]}") from None

    def _alive(self) -> None:
        assert self.proc and self.proc.poll() is None, self.log.read_text()

    def signal(self, sig: int) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The process stopped (SIGSTOP) while the body runs, continued (SIGCONT) after. The
        body starts only once every thread has stopped: the signal is asynchronous, and on a
        busy machine a thread still running (the watcher draining inotify) would otherwise
        see the body's first changes."""
        assert self.proc
        self.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(self._every_thread_stopped, 30, "every thread of the daemon stopped")
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def _every_thread_stopped(self) -> bool:
        assert self.proc
        states = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        return all(state in ("T", "t") for state in states)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
