"""Notifications out: a JSON document per finished job to `notify.webhook_url`, and "look again"
calls to the media servers with `refresh = true`, delivered at least once.

Each is written to an outbox (`state_dir/notifications.sqlite3`, beside the journal, not in it:
the queue's backends are the journal's business) when the job's done or failed signal is
published, and deleted only when the receiver answers 2xx. Until then it is tried again after
`retry_backoff_seconds`, doubling up to `max_backoff_seconds`, across restarts. A receiver that
is down or slow costs the pipeline nothing: publishing hands the event to this module's own task,
every call has `notify.timeout`, and SQLite is written in the daemon's threads.

The document (README "Notifications"): `event` ("job.done" | "job.failed"), `event_id` (the
event's id: the same on a repeated delivery, so a receiver can drop duplicates), `timestamp`,
`job` {id, kind, state, attempts, priority}, `input` (the media file's path; null for an upload),
`rel_path`, `outputs`, `language`, `result`, `error`, `message`, `durations` {audio_seconds,
processing_seconds, queued_seconds}, `subwatch` {version}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
from aiohttp import web

from . import __version__
from .config import Config, LiveConfig, NotifyConfig
from .events import Event, EventBus, EventType
from .journal import Job
from .libraries import library_of, media_path
from .mediaservers import (
    ServerError,
    mediabrowser_refresh,
    plex_refresh,
    to_server,
)
from .queue import JobQueue
from .threads import Blocking
from .uploads import UPLOAD

log = logging.getLogger(__name__)

WEBHOOK, JELLYFIN, EMBY, PLEX = "webhook", "jellyfin", "emby", "plex"
FINISHED = {EventType.JOB_DONE: "job.done", EventType.JOB_FAILED: "job.failed"}
BATCH = 20  # deliveries taken at once
IDLE_CHECK_SECONDS = 5.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT NOT NULL,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_at    REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_at);
"""


def backoff_delay(attempts: int, cfg: NotifyConfig) -> float:
    """The wait after the `attempts`-th failed try: doubling from the first, capped."""
    return float(min(cfg.retry_backoff_seconds * 2 ** max(attempts - 1, 0),
                     cfg.max_backoff_seconds))


@dataclass(frozen=True)
class Delivery:
    id: int
    target: str  # webhook | jellyfin | emby | plex
    body: dict[str, Any]
    attempts: int


class Outbox:
    """The durable list of deliveries still owed (blocking, thread-safe)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def add(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.time()
        with self._tx() as db:
            db.executemany("INSERT INTO outbox (target, body, created_at, next_at)"
                           " VALUES (?, ?, ?, ?)",
                           [(target, json.dumps(body), now, now) for target, body in items])

    def due(self, now: float, limit: int = BATCH) -> list[Delivery]:
        with self._lock:
            rows = self._db.execute("SELECT id, target, body, attempts FROM outbox"
                                    " WHERE next_at <= ? ORDER BY id LIMIT ?",
                                    (now, limit)).fetchall()
        return [Delivery(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def delivered(self, delivery_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE id=?", (delivery_id,))

    def failed(self, delivery_id: int, delay: float, error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET attempts=attempts+1, next_at=?, last_error=?"
                       " WHERE id=?", (time.time() + delay, error[:500], delivery_id))

    def next_due(self) -> float | None:
        with self._lock:
            return self._db.execute("SELECT MIN(next_at) FROM outbox").fetchone()[0]

    def pending(self) -> list[dict[str, Any]]:
        """Every delivery still owed, for /status-like inspection and tests."""
        with self._lock:
            rows = self._db.execute("SELECT id, target, attempts, next_at, last_error"
                                    " FROM outbox ORDER BY id").fetchall()
        return [dict(zip(("id", "target", "attempts", "next_at", "last_error"), r, strict=True))
                for r in rows]


# ---------------------------------------------------------------------------- documents

def document(event: Event, job: Job | None, config: Config) -> dict[str, Any]:
    """The notification for a job's done or failed event (see the module docstring)."""
    p = event.payload
    kind = job.kind if job else "file"
    rel = job.rel_path if job else str(p.get("input", ""))
    path = media_path(config, rel) if kind != UPLOAD else None
    queued = (job.started_at - job.created_at) if job and job.started_at else None
    return {
        "event": FINISHED[EventType(event.type)], "event_id": event.id,
        "timestamp": event.timestamp,
        "job": {"id": event.job_id, "kind": kind,
                "state": "done" if event.type == EventType.JOB_DONE else "failed",
                "attempts": p.get("attempt"), "priority": job.priority if job else 0},
        "input": str(path) if path is not None else None, "rel_path": rel,
        "outputs": p.get("outputs", []), "language": p.get("language"),
        "result": p.get("result"), "error": p.get("error"), "message": p.get("message"),
        "durations": {"audio_seconds": p.get("audio_seconds"),
                      "processing_seconds": p.get("processing_seconds"),
                      "queued_seconds": round(queued, 3) if queued is not None else None},
        "subwatch": {"version": __version__},
    }


def beside_the_media(doc: dict[str, Any], config: Config) -> bool:
    """Did the job's subtitles go beside its media (a sidecar library)? Only there does a media
    server look for them: the outbox (the inbox's, an outbox library's) is not in its library,
    so a refresh for it would only make the server rescan a folder for nothing."""
    found = library_of(config, doc["rel_path"])
    return found is not None and found[0].output == "sidecar"


def refreshes(doc: dict[str, Any], config: Config) -> list[tuple[str, dict[str, Any]]]:
    """The library refreshes a finished job asks for: its outputs, as each server sees them."""
    if doc["event"] != "job.done" or doc["job"]["kind"] == UPLOAD or not doc["outputs"] \
            or not beside_the_media(doc, config):
        return []
    servers, maps = config.media_servers, config.path_maps
    paths = [to_server(out, maps) for out in doc["outputs"]]
    found: list[tuple[str, dict[str, Any]]] = []
    for name in (JELLYFIN, EMBY):
        server = getattr(servers, name)
        if server.refresh and server.url:
            found.append((name, {"paths": paths, "job_id": doc["job"]["id"]}))
    if servers.plex.refresh and servers.plex.url:
        folders = [to_server(str(PurePosixPath(out).parent), maps) for out in doc["outputs"]]
        found.append((PLEX, {"folders": list(dict.fromkeys(folders)),
                             "job_id": doc["job"]["id"]}))
    return found


# ---------------------------------------------------------------------------- the part

class Notifications:
    """Hears finished jobs on the bus, keeps what they owe in the outbox, delivers it."""

    def __init__(self, live: LiveConfig, journal: JobQueue, bus: EventBus,
                 blocking: Blocking) -> None:
        self._live = live
        self._journal = journal
        self._bus = bus
        self._blocking = blocking
        self._outbox: Outbox | None = None
        self._news: asyncio.Queue[Event] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def register(self, app: web.Application) -> None:
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)

    @property
    def outbox(self) -> Outbox | None:
        return self._outbox

    async def _start(self, app: web.Application) -> None:
        path = self._live.current.paths.state_dir / "notifications.sqlite3"
        self._outbox = await self._blocking(Outbox, path)
        self._loop = asyncio.get_running_loop()
        self._news = asyncio.Queue()
        self._bus.on_publish.append(self._heard)
        self._task = asyncio.create_task(self._run(), name="notifications")

    async def _stop(self, app: web.Application) -> None:
        with contextlib.suppress(ValueError):
            self._bus.on_publish.remove(self._heard)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._outbox is not None:
            await self._record_news()  # jobs that finished while a delivery was under way
            await self._blocking(self._outbox.close)

    async def _record_news(self) -> None:
        """Whatever finished and is not in the outbox yet goes there now, so a stop (the task
        canceled mid-delivery to a dead receiver) loses no notification: the next start
        delivers it."""
        while self._news is not None and not self._news.empty():
            try:
                await self._blocking(self._record, self._news.get_nowait())
            except Exception:  # noqa: BLE001 - the stop goes on; said once per event
                log.exception("notifications: could not keep a notification at the stop")

    def _heard(self, event: Event) -> None:
        """On the publisher's thread: never blocks, never raises into the pipeline."""
        if event.type in FINISHED and self._loop is not None and self._news is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: the stop is on
                self._loop.call_soon_threadsafe(self._news.put_nowait, event)

    async def _run(self) -> None:
        assert self._news is not None
        while True:
            try:
                await self._record_news()
                await self._deliver_due()
                await self._idle()
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked file, a bug: said, and tried again, never the end
                log.exception("notifications: unexpected error; going on")
                await asyncio.sleep(IDLE_CHECK_SECONDS)

    async def _idle(self) -> None:
        """Until the next delivery is due or a job finishes."""
        assert self._news is not None and self._outbox is not None
        due = await self._blocking(self._outbox.next_due)
        wait = IDLE_CHECK_SECONDS if due is None else min(IDLE_CHECK_SECONDS,
                                                          max(0.0, due - time.time()))
        if self._news.empty() and wait > 0:
            with contextlib.suppress(TimeoutError):
                event = await asyncio.wait_for(self._news.get(), wait)
                self._news.put_nowait(event)

    def _record(self, event: Event) -> None:
        """What a finished job owes, into the outbox (blocking)."""
        assert self._outbox is not None
        config = self._live.current
        job = self._journal.get(event.job_id) if event.job_id else None
        doc = document(event, job, config)
        owed = [(WEBHOOK, doc)] if config.notify.webhook_url else []
        owed += refreshes(doc, config)
        if owed:
            self._outbox.add(owed)

    async def _deliver_due(self) -> None:
        assert self._outbox is not None
        for delivery in await self._blocking(self._outbox.due, time.time()):
            error = await self._send(delivery)
            if error is None:
                await self._blocking(self._outbox.delivered, delivery.id)
                continue
            delay = backoff_delay(delivery.attempts + 1, self._live.current.notify)
            log.warning("notification %d to %s failed (attempt %d): %s; again in %.0f s",
                        delivery.id, delivery.target, delivery.attempts + 1, error, delay)
            await self._blocking(self._outbox.failed, delivery.id, delay, error)

    async def _send(self, delivery: Delivery) -> str | None:
        """Deliver one; None when it arrived, else why not."""
        config = self._live.current
        timeout = config.notify.timeout
        try:
            if delivery.target == WEBHOOK:
                return await _post_json(config.notify.webhook_url, delivery.body, timeout)
            if delivery.target == PLEX:
                if not config.media_servers.plex.url:
                    return None  # taken out of the config: nothing is owed any more
                await plex_refresh(config.media_servers.plex, delivery.body["folders"], timeout)
            else:
                server = getattr(config.media_servers, delivery.target)
                if not server.url:
                    return None
                await mediabrowser_refresh(server, delivery.target, delivery.body["paths"],
                                           timeout)
        except ServerError as exc:
            return str(exc)
        return None


async def _post_json(url: str, body: dict[str, Any], timeout: float) -> str | None:
    if not url:
        return None  # the webhook was taken out of the config: nothing is owed any more
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.post(url, json=body, headers={"User-Agent": f"subwatch/{__version__}"}) as r:
            await r.read()
            return None if 200 <= r.status < 300 else f"HTTP {r.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
