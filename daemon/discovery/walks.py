"""Walks of the whole inbox and of the folders events name, and the inbox's state they decide:
starting, watching, degraded (no OS events: walks only) or unavailable (cannot be listed), each
change said once. A walk that fails backs the schedule off; one that works schedules the next."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..config import WatchConfig
from .mode import choose_mode
from .oswatch import OsWatch
from .scanner import Scanner
from .schedule import Problems, ScanSchedule
from .settling import Settler
from .walk import ScanResult

log = logging.getLogger("daemon.watcher")


class Walks:
    def __init__(self, inbox: Path, mode: str, scanner: Scanner, schedule: ScanSchedule,
                 settler: Settler, problems: Problems, os_watch: OsWatch,
                 blocking: Callable[..., Awaitable[Any]], rescan_now: asyncio.Event) -> None:
        self.inbox = inbox
        self._setting = mode  # events, poll or auto: what `mode` follows the filesystem from
        self.mode = mode  # events or poll once the inbox was first looked at
        self.state = "starting"
        self.last_error: str | None = None
        self.root_missing = False
        self.first_done = asyncio.Event()
        self._device: int | None = None  # st_dev of the inbox at the last look
        self._scanner = scanner
        self._schedule = schedule
        self._settler = settler
        self._problems = problems
        self._os_watch = os_watch
        self._blocking = blocking
        self._rescan_now = rescan_now

    def interval(self, cfg: WatchConfig) -> float:
        """Poll mode walks every `poll_interval`; events mode only rescans, unless its OS watch
        could not start (the inotify watch limit on a big library): then the walks are the
        watch, every `poll_interval`, as in poll mode, until it does."""
        if self.mode == "poll" or not self._os_watch.running:
            return cfg.poll_interval
        return cfg.rescan_seconds

    async def walk(self, cfg: WatchConfig) -> None:
        """One walk of the whole inbox; in poll mode it asks the journal only about files new
        or changed since the last, except every `rescan_seconds`."""
        everything = self.mode == "events" or self._schedule.full_due()
        if await self._walk_all(cfg, everything):
            if self._schedule.failures:
                log.info("inbox scans work again after %d failures", self._schedule.failures)
            self._schedule.succeeded(self.interval(cfg),
                                     cfg.rescan_seconds if everything else None)
        else:
            self._schedule.failed()

    async def _walk_all(self, cfg: WatchConfig, everything: bool) -> bool:
        try:
            result = await self._walk(cfg, everything)
        except OSError as exc:
            await self.unavailable(exc)
            return False
        except Exception as exc:  # e.g. the journal failing: retried later, logged once
            if not self._schedule.failures:
                log.exception("inbox scan failed; trying again later")
            self.last_error = f"inbox scan failed: {type(exc).__name__}"
            return False
        finally:
            self.first_done.set()
        self._problems.report(result.problems)
        for rel, st in result.files:
            self._settler.add(rel, st)
        self._walked()
        return True

    async def _walk(self, cfg: WatchConfig, everything: bool) -> ScanResult:
        try:
            st = await self._blocking(self.inbox.stat)
        except OSError:
            self.root_missing = True  # the root check rescans at once when it is back
            raise
        await self._follow_filesystem(st)
        # The observer starts before the walk: a file created during the walk then shows up as
        # an event or in the walk, never in neither. Poll mode has none: its walks are the watch.
        if self.mode == "events" and not self._os_watch.running:
            await self._blocking(self._os_watch.start, cfg, self.interval(cfg))
        return await self._blocking(self._scanner.walk, cfg, everything)

    def _walked(self) -> None:
        """After a walk that worked: the state says whether changes are seen between walks."""
        watching = self.mode == "poll" or self._os_watch.running
        before, self.state = self.state, "watching" if watching else "degraded"
        self.last_error = None if watching else self._os_watch.error
        if before == "unavailable" or (before == "degraded" and self.state == "watching"):
            log.info("inbox %r is available again", str(self.inbox))

    async def check_root(self) -> bool:
        """One stat of the inbox per tick: a share that unmounts is noticed within a second,
        and one that comes back is walked at once (and every file asked about again)."""
        try:
            st = await self._blocking(self.inbox.stat)
        except OSError as exc:
            self.root_missing = True
            await self.unavailable(exc)
            return False
        back, self.root_missing = self.root_missing, False
        if back:
            self._scanner.forget()
        if await self._follow_filesystem(st) or back:
            self._schedule.now()
        return True

    async def _follow_filesystem(self, st: os.stat_result) -> bool:
        """At the first look, and whenever the inbox's device changes (a share mounted over
        it after the start, or unmounted from under it): the mode `auto` resolves to, and
        whether folder times can be trusted, follow the filesystem, and an OS watch set on
        the old one sees nothing of the new. Resolving the path and reading /proc/mounts may
        hang on a NAS: in the daemon's threads, never before the loop runs. True if the
        inbox moved to another filesystem since the last look."""
        if st.st_dev == self._device:
            return False
        moved, self._device = self._device is not None, st.st_dev
        self.mode = await self._blocking(choose_mode, self._setting, self.inbox)
        await self._blocking(self._scanner.reuse_listings, self.mode == "poll")
        if moved:
            log.info("inbox %r is on another filesystem now (a share mounted or unmounted); "
                     "walking and watching it anew (%s mode)", str(self.inbox), self.mode)
            await self._blocking(self._os_watch.stop)
        return moved

    async def unavailable(self, exc: OSError) -> None:
        if self.state != "unavailable":
            log.error("inbox %r is unavailable (%s); will keep trying", str(self.inbox),
                      exc.strerror or exc)
        self.state = "unavailable"
        self.last_error = f"inbox unavailable: {exc.strerror or exc}"
        await self._blocking(self._os_watch.stop)

    async def folders(self, cfg: WatchConfig, folders: list[str]) -> None:
        """The folders events named (made or moved in), each with what is under it."""
        for rel_dir in folders:
            try:
                result = await self._blocking(self._scanner.folder, cfg, rel_dir)
            except Exception:  # the journal failing: the full rescan (with its backoff) retries
                log.debug("scanning folder %r failed; rescanning", rel_dir, exc_info=True)
                self._rescan_now.set()
                return
            self._problems.report(result.problems, whole=False)
            for rel, st in result.files:
                self._settler.add(rel, st)

    def observer_died(self) -> None:
        """A dead observer thread (a watch error) means a rescan and a restart."""
        if self._os_watch.died():
            log.warning("the file watcher stopped; rescanning %r", str(self.inbox))
            self.state = "degraded"
            self._rescan_now.set()
