"""What the daemon says about itself: health, status, the systemd status line, and the periodic
tasks that keep those current (degraded signals, watchdog pings, idle model unloads)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .config import LiveConfig
from .events import EventBus, EventType
from .journal import STATES, JournalUnavailable
from .looplag import LoopLag
from .models import ModelCache
from .notify import Notifier
from .progress import Degradations, RunningJobs
from .queue import JobQueue
from .threads import Blocking
from .watcher import Watcher


@dataclass
class Lifecycle:
    """Where the daemon is in its life; the lifecycle writes it, views read it."""

    started_at: float = field(default_factory=time.time)
    ready: bool = False
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    lag: LoopLag = field(default_factory=LoopLag)  # how late the event loop answers
    # parts' own /healthz reasons, asked each time (a cluster node: events stopped crossing)
    checks: list[Callable[[], list[str]]] = field(default_factory=list)

    def failed_tasks(self) -> list[str]:
        return [f"internal task {t.get_name()} failed: {t.exception()!r}" for t in self.tasks
                if t.done() and not t.cancelled() and t.exception() is not None]


class Monitor:
    def __init__(self, live: LiveConfig, life: Lifecycle, journal: JobQueue,
                 running: RunningJobs, bus: EventBus, cache: ModelCache, watcher: Watcher,
                 blocking: Blocking, notifier: Notifier, degradations: Degradations) -> None:
        self._live = live
        self._life = life
        self._journal = journal
        self._running = running
        self._bus = bus
        self._cache = cache
        self._watcher = watcher
        self._blocking = blocking
        self._notifier = notifier
        self._degradations = degradations
        # the journal's figures as last read: /status shows them, marked stale, when the
        # journal cannot be read (never a hang or a 500 for the one page that explains why)
        self._figures: dict[str, Any] = {"queue": dict.fromkeys(STATES, 0),
                                         "recent_failures": []}

    # ------------------------------------------------------------------ views

    def health(self) -> tuple[bool, list[str]]:
        reasons = []
        if self._watcher.state in ("unavailable", "degraded"):
            reasons.append(self._watcher.last_error or f"watcher {self._watcher.state}")
        if self._watcher.scans_failing():  # the count and the error are in /status
            reasons.append("inbox scans are failing")
        if self._journal.problem:  # locked by another process, disk full, corrupt
            reasons.append(f"journal degraded: {self._journal.problem}")
        reasons += self._degradations.holding()  # e.g. "outbox full: …": every job waits
        reasons += [reason for check in self._life.checks for reason in check()]
        if self._life.stopping.is_set():
            reasons.append("stopping")
        elif not self._life.ready:
            reasons.append("starting")
        else:
            reasons += self._life.failed_tasks()
        return (not reasons, reasons)

    def public_health(self) -> tuple[bool, list[str]]:
        """health() for /healthz, which answers without a token: each reason up to its first
        colon ("inbox unavailable", "internal task watcher failed"), never the exception text
        or paths after it (those are in /status and the log)."""
        ok, reasons = self.health()
        return ok, list(dict.fromkeys(r.split(":", 1)[0].strip() for r in reasons))

    def healthy(self) -> bool:
        return self.health()[0]

    def status(self) -> dict[str, Any]:
        """The /status document (reads the journal: call it in a thread)."""
        config = self._live.current
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - self._life.started_at, 1),
            "ready": self._life.ready,
            "watcher": self._watcher.describe(),
            **self._journal_figures(),
            "running": [r.as_dict() for r in self._running.values()],
            "models": self._cache.snapshot(),
            "degraded": self._degradations.snapshot(),
            "events": {"last_id": self._bus.last_id, "published": self._bus.published,
                       "subscribers": self._bus.subscriber_count,
                       "history_bytes": self._bus.history_bytes},
            "event_loop": self._life.lag.snapshot(),
            "settings": {"log_level": config.logging.level,
                         "settle_seconds": config.watch.settle_seconds,
                         "watch_mode": self._watcher.mode, "workers": config.jobs.workers,
                         "formats": list(config.output.formats)},
        }

    def _journal_figures(self) -> dict[str, Any]:
        """/status's queue counts and recent failures, and the journal's state: "ok", or
        "degraded" with the reason, and "stale" when these figures are the last ones read."""
        journal: dict[str, Any] = {"state": "ok"}
        try:
            self._figures = {"queue": self._journal.counts(), "recent_failures": [
                {"id": j.id, "input": j.rel_path, "error": j.error, "message": j.message}
                for j in self._journal.list_jobs("failed", 5)],
                "cluster": self._journal.describe()}  # the backend; a cluster's nodes
        except JournalUnavailable:
            journal["stale"] = True
        if self._journal.problem:
            journal.update(state="degraded", reason=self._journal.problem)
        return {**self._figures, "journal": journal}

    def status_line(self) -> str:
        """One line for `systemctl status`: the queue and the running job."""
        try:
            counts = self._journal.counts()
        except JournalUnavailable:
            return f"journal unavailable; {len(self._running)} running"
        line = (f"{counts.get('queued', 0) + counts.get('retry_wait', 0)} queued, "
                f"{len(self._running)} running, {counts.get('done', 0)} done, "
                f"{counts.get('failed', 0)} failed")
        for run in self._running.values()[:1]:
            line += f"; {run.job.rel_path!r} {run.phase} {run.percent:.0f}%"
        return line

    # ------------------------------------------------------------------ periodic tasks

    async def watch_health(self) -> None:
        """Publish signal.degraded whenever health changes (watcher trouble, recovery)."""
        previous: tuple[bool, list[str]] = (True, [])
        while True:
            await asyncio.sleep(1.0)
            current = self.health()
            if current != previous and not self._life.stopping.is_set():
                ok, reasons = current
                self._bus.publish(EventType.DEGRADED, None, {"degraded": not ok,
                                                             "reasons": reasons})
                previous = current

    async def systemd_updates(self) -> None:
        """WATCHDOG=1 from the event loop itself (a blocked loop stops the pings, and systemd
        restarts the daemon), and STATUS= whenever the queue or the running job changes."""
        interval = self._notifier.watchdog_seconds
        tick = min(interval, 2.0) if interval else 2.0
        last_status, last_ping = "", 0.0
        while self._notifier.enabled:
            now = time.monotonic()
            if interval and now - last_ping >= interval:
                self._notifier.watchdog()
                last_ping = now
            line = await self._blocking(self.status_line)
            if line != last_status:
                self._notifier.status(line)
                last_status = line
            await asyncio.sleep(tick)

    async def unload_idle_models(self) -> None:
        """models.idle_unload_seconds: give memory back when nothing has run for a while."""
        while True:
            idle = self._live.current.models.idle_unload_seconds
            if idle <= 0:
                return
            await asyncio.sleep(min(60.0, max(0.5, idle / 4)))
            if not self._running:  # a long job's model is in use even if fetched long ago
                await self._blocking(self._cache.unload_idle, idle)
