"""What the daemon says about itself: health, status, the systemd status line, and the periodic
tasks that keep those current (degraded signals, watchdog pings, idle model unloads)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .config import LiveConfig
from .events import EventBus, EventType
from .journal import Journal
from .models import ModelCache
from .notify import Notifier
from .progress import Degradations, RunningJobs
from .threads import Blocking
from .watcher import Watcher


@dataclass
class Lifecycle:
    """Where the daemon is in its life; the lifecycle writes it, views read it."""

    started_at: float = field(default_factory=time.time)
    ready: bool = False
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def failed_tasks(self) -> list[str]:
        return [f"internal task {t.get_name()} failed: {t.exception()!r}" for t in self.tasks
                if t.done() and not t.cancelled() and t.exception() is not None]


class Monitor:
    def __init__(self, live: LiveConfig, life: Lifecycle, journal: Journal,
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

    # ------------------------------------------------------------------ views

    def health(self) -> tuple[bool, list[str]]:
        reasons = []
        if self._watcher.state in ("unavailable", "degraded"):
            reasons.append(self._watcher.last_error or f"watcher {self._watcher.state}")
        if self._life.stopping.is_set():
            reasons.append("stopping")
        elif not self._life.ready:
            reasons.append("starting")
        else:
            reasons += self._life.failed_tasks()
        return (not reasons, reasons)

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
            "queue": self._journal.counts(),
            "running": [r.as_dict() for r in self._running.values()],
            "recent_failures": [
                {"id": j.id, "input": j.rel_path, "error": j.error, "message": j.message}
                for j in self._journal.list_jobs("failed", 5)],
            "models": self._cache.snapshot(),
            "degraded": self._degradations.snapshot(),
            "events": {"last_id": self._bus.last_id, "published": self._bus.published,
                       "subscribers": self._bus.subscriber_count},
            "settings": {"log_level": config.logging.level,
                         "settle_seconds": config.watch.settle_seconds,
                         "watch_mode": self._watcher.mode, "workers": config.jobs.workers,
                         "formats": list(config.output.formats)},
        }

    def status_line(self) -> str:
        """One line for `systemctl status`: the queue and the running job."""
        counts = self._journal.counts()
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
