"""Discovery: which files in the inbox are media, complete and new.

Events (inotify) or polling only say "look here"; truth comes from walks of the inbox. It is
walked whole at start, after the OS watcher fails or the inbox comes back after vanishing (a NAS
that unmounts), and then on a schedule: in events mode every `rescan_seconds`, to catch what
inotify missed; in poll mode every `poll_interval`, and that walk is the watch (no second
walker): it lists again only folders whose times moved, stats only media files, and asks the
journal only about files new or changed since the walk before (about all of them, listing every
folder, every `rescan_seconds`). Between walks an event looks only at what it names: a file, or
a folder made or moved in, never the whole tree, so a 100 000-file library costs little while
idle. A file is admitted only after its size and mtime have held still for
`settle_seconds`, so a slow copy is never read early.

A share left alone for months collects entries no scan should choke on: symlink loops, names
that are not UTF-8, folders nobody may list, trees nested past any sane depth. Each is skipped
and warned about once; the rest of the inbox is admitted as usual. Only an inbox that cannot be
listed at all is "unavailable", and failing scans are retried with a growing delay, never in a
loop. The parts live in `daemon.discovery`; this module puts them together.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import WatchConfig
from .discovery.admission import Admission
from .discovery.changes import Changes
from .discovery.filters import TEMP_PATTERNS, is_candidate_name, link_problem, relative_inside
from .discovery.mode import choose_mode, filesystem_type
from .discovery.oswatch import OsWatch
from .discovery.scanner import Scanner
from .discovery.schedule import FAILURES_UNHEALTHY, MAX_BACKOFF, Problems, ScanSchedule
from .discovery.settling import Settled, Settler
from .discovery.walk import ScanResult, scan, scan_files
from .discovery.walks import Walks

__all__ = ["FAILURES_UNHEALTHY", "MAX_BACKOFF", "TEMP_PATTERNS", "Problems", "ScanResult",
           "ScanSchedule", "Settled", "Settler", "Watcher", "choose_mode", "filesystem_type",
           "is_candidate_name", "link_problem", "relative_inside", "scan", "scan_files"]

log = logging.getLogger(__name__)


async def _wait(rescan_now: asyncio.Event, seconds: float) -> None:
    """Until the next tick, or sooner when a rescan is asked for."""
    if rescan_now.is_set():  # asked for, but held back by a backoff: do not spin
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(rescan_now.wait(), seconds)
    except TimeoutError:
        pass


class Watcher:
    """Finds settled, unknown candidate files and hands them to `admit` (an async callback).
    `clock` is the time of the schedule and of settling (tests move it by hand)."""

    def __init__(self, inbox: Path, cfg: WatchConfig,
                 is_known: Callable[[str, os.stat_result], bool],
                 admit: Callable[[Settled], Awaitable[None]],
                 blocking: Callable[..., Awaitable[Any]] = asyncio.to_thread, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inbox = inbox
        self.cfg = cfg
        # where blocking calls (stats and walks of a share that may hang) run: the daemon's own
        # executor, so a stop can see them and leave without waiting on a dead NFS server
        self._blocking = blocking
        self._settler = Settler(inbox, cfg.settle_seconds, clock)
        self._schedule = ScanSchedule(clock)
        self._scanner = Scanner(inbox, is_known, clock)
        problems = Problems()
        self._admission = Admission(self._settler, problems, admit, blocking)
        self._rescan_now = asyncio.Event()
        self._changes = Changes(inbox, cfg, self._rescan_now, clock)
        self._os_watch = OsWatch(inbox, self._changes.hint, self._changes.lost)
        self._walks = Walks(inbox, cfg.mode, self._scanner, self._schedule, self._settler,
                            problems, self._os_watch, blocking, self._rescan_now)
        self._problems = problems
        self.first_scan_done = self._walks.first_done

    @property
    def mode(self) -> str:
        """events or poll: the setting, or what `auto` resolved to for the inbox's filesystem
        (`auto` until the first look at it)."""
        return self._walks.mode

    @property
    def state(self) -> str:
        """starting, watching, degraded (walks only) or unavailable."""
        return self._walks.state

    @property
    def last_error(self) -> str | None:
        return self._walks.last_error

    @property
    def scans(self) -> int:
        """Walks of the whole inbox completed."""
        return self._scanner.stats.walks

    @property
    def scan_failures(self) -> int:
        """Walks failed in a row (0 once one works)."""
        return self._schedule.failures

    @property
    def stats(self) -> dict[str, float]:
        """What discovery has cost: walks, folder scans, folders listed, journal look-ups."""
        return dict(vars(self._scanner.stats))

    def scans_failing(self) -> bool:
        """For /healthz: scans keep failing though the inbox is there (a missing inbox is
        reported as unavailable, not twice)."""
        return self._schedule.failing and not self._walks.root_missing

    def describe(self) -> dict[str, object]:
        stats = self._scanner.stats
        return {"mode": self.mode, "state": self.state, "inbox": str(self.inbox),
                "pending": len(self._settler), "error": self.last_error, "scans": stats.walks,
                "scan_failures": self.scan_failures,
                "next_scan_in": round(self._schedule.wait(), 1),
                "folder_scans": stats.folder_scans,
                "last_scan_seconds": round(stats.last_walk_seconds, 3)}

    def pause(self) -> None:
        """Stop intake (shutdown): nothing more is admitted."""
        self._admission.paused = True

    def reconfigure(self, cfg: WatchConfig) -> None:
        self.cfg = self._changes.cfg = cfg
        self._settler.settle_seconds = cfg.settle_seconds

    async def run(self) -> None:
        """Scan, watch and settle until cancelled."""
        self._changes.bind(asyncio.get_running_loop())
        try:
            while True:
                if self._schedule.due(self._rescan_now.is_set()):
                    self._rescan_now.clear()
                    await self._walks.walk(self.cfg)
                await self._tick()
                await _wait(self._rescan_now, self._next_wait())
        finally:
            await self._blocking(self._os_watch.stop)

    def check_observer(self) -> None:
        """A dead observer thread (a watch error) means a rescan and a restart."""
        self._walks.observer_died()

    def _next_wait(self) -> float:
        """The next tick, or sooner: a walk due, or a file due to have settled."""
        waits = [min(1.0, max(0.1, self.cfg.settle_seconds / 4)), self._schedule.wait()]
        settling = self._settler.wait()
        if settling is not None and not self._admission.paused:
            waits.append(settling)
        return max(0.01, min(waits))

    async def _tick(self) -> None:
        """Between walks: the observer, the root, folders named by events, settling files."""
        try:
            self.check_observer()
            if await self._walks.check_root():
                await self._walks.folders(self.cfg, self._changes.take_folders())
            await self._admission.settle(self._changes.take_files())
        except Exception:  # discovery must outlive any one bad file or share
            if self._problems.first("\0tick"):
                log.exception("watcher: unexpected error; going on")
        else:
            self._problems.solved("\0tick")
