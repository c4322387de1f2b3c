"""Requests that change what the daemon does: cancel, retry, reload, log levels.

One pure merge of the running config and a new one decides what applies now and what needs a
restart; SIGHUP, POST /reload and POST /logging all go through it. Applying runs in a thread, one
at a time: it rebuilds log handlers (files) and touches every logger, which must not stall the
event loop, and two requests at once must not lose each other's change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import Config, LiveConfig, load_config
from .errors import ConfigError
from .events import EventType
from .notify import Notifier
from .progress import JobSignals, RunningJobs
from .queue import JobQueue
from .threads import Blocking

log = logging.getLogger(__name__)

# What a running daemon cannot change in place: tables or `table.key` names.
RESTART_ONLY = ("paths", "models", "whisper", "vad", "pipeline", "separation", "sensevoice",
                "watch.mode", "watch.recursive", "jobs.workers", "http.host", "http.port",
                "http.history_size", "http.history_bytes", "cluster")


def _get(config: Config, name: str) -> Any:
    value: Any = config
    for part in name.split("."):
        value = getattr(value, part)
    return value


def _with(config: Config, name: str, value: Any) -> Config:
    """`config` with the dotted `name` set to `value` (frozen dataclasses all the way)."""
    table, _, key = name.partition(".")
    if not key:
        return dataclasses.replace(config, **{table: value})
    section = dataclasses.replace(getattr(config, table), **{key: value})
    return dataclasses.replace(config, **{table: section})


@dataclass(frozen=True)
class Merge:
    config: Config  # the new config with every restart-only value kept as it runs
    applied: list[str]  # tables that change now
    restart_needed: list[str]  # restart-only names whose new value waits for a restart


def merge_config(old: Config, new: Config) -> Merge:
    merged = new
    for name in RESTART_ONLY:
        merged = _with(merged, name, _get(old, name))
    restart = [name for name in RESTART_ONLY if _get(old, name) != _get(new, name)]
    applied = [f.name for f in dataclasses.fields(Config) if f.name != "source"
               and getattr(merged, f.name) != getattr(old, f.name)]
    return Merge(merged, applied, restart)


class Control:
    def __init__(self, live: LiveConfig, journal: JobQueue, running: RunningJobs,
                 signal: JobSignals, blocking: Blocking, wake: asyncio.Event,
                 notifier: Notifier, status_line: Callable[[], str]) -> None:
        self._live = live
        self._journal = journal
        self._running = running
        self._signal = signal
        self._blocking = blocking
        self._wake = wake
        self._notifier = notifier
        self._status_line = status_line
        self._applying = threading.Lock()

    async def cancel(self, job_id: str) -> str | None:
        """Cancel a queued job now, or a running one at its next safe point; None if unknown."""
        run = self._running.get(job_id)
        if run is not None:
            run.cancel_reason = "canceled by request"
            run.cancel.set()
            return "canceling"
        job = await self._blocking(self._journal.get, job_id)
        if job is None:
            return None
        if job.state in ("queued", "retry_wait") and await self._blocking(
                self._journal.cancel, job.id, "canceled by request", "canceled",
                ("queued", "retry_wait")):
            self._signal(EventType.JOB_CANCELED, job, reason="canceled by request")
            return "canceled"
        if job.id in self._running:  # claimed meanwhile: stop it at its next safe point
            return await self.cancel(job.id)
        if job.state == "running" and self._live.current.cluster.backend != "sqlite":
            # another node runs it: that node hears this through the cluster's events and
            # stops it at its next safe point (cluster/nodes.py)
            self._signal(EventType.CANCEL_REQUESTED, job, reason="canceled by request")
            return "canceling"
        return (await self._blocking(self._journal.get, job_id) or job).state

    async def retry(self, job_id: str) -> str | None:
        """Queue a finished job again (failed, canceled, done, skipped) with fresh attempts."""
        job = await self._blocking(self._journal.get, job_id)
        if job is None:
            return None
        if await self._blocking(self._journal.reset, job_id):
            self._signal(EventType.JOB_QUEUED, job, retry=True)
            self._wake.set()
            return "queued"
        return job.state

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file: apply what can change safely, name the rest."""
        source = self._live.current.source
        if source is None:
            return {"applied": [], "restart_needed": [], "error": "no config file to re-read"}
        self._notifier.reloading()
        try:
            new = await self._blocking(load_config, source)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self._notifier.ready(await self._blocking(self._status_line))
            return {"applied": [], "restart_needed": [], "error": str(exc)}
        merge = await self._blocking(self.apply, new)
        self._notifier.ready(await self._blocking(self._status_line))
        log.info("reloaded %r: applied %s%s", str(source), ", ".join(merge.applied) or "nothing",
                 f"; needs a restart: {', '.join(merge.restart_needed)}"
                 if merge.restart_needed else "")
        return {"applied": merge.applied, "restart_needed": merge.restart_needed}

    async def set_log_levels(self, level: str, levels: dict[str, str]) -> Config:
        """POST /logging: a new root level and per-logger levels, live (names checked by the
        caller: each new name is a logger made for good)."""
        return await self._blocking(self._set_log_levels, level, levels)

    def _set_log_levels(self, level: str, levels: dict[str, str]) -> Config:
        with self._applying:
            config = self._live.current
            new = dataclasses.replace(config.logging, level=level,
                                      levels={**config.logging.levels, **levels})
            self._apply(dataclasses.replace(config, logging=new))
        log.warning("log level set to %s%s", level, f" ({levels})" if levels else "")
        return self._live.current

    def apply(self, new: Config) -> Merge:
        """Merge and apply a new config (blocking: call it in a thread from the loop)."""
        with self._applying:
            return self._apply(new)

    def _apply(self, new: Config) -> Merge:
        merge = merge_config(self._live.current, new)
        self._live.replace(merge.config)
        return merge
