"""Intake: what the watcher finds becomes a job, a skip, or nothing (already known).

Skip rules are asked here and only here (daemon/skips.py says which and why): a skipped file
is recorded as `skipped` with its reason, so a restart never examines it again.
"""

from __future__ import annotations

import asyncio
import logging
import os

from .config import LiveConfig
from .events import EventType
from .journal import Identity, Job
from .progress import JobSignals
from .queue import JobQueue
from .skips import skip_reason
from .threads import Blocking
from .watcher import Settled

log = logging.getLogger(__name__)


class Intake:
    def __init__(self, live: LiveConfig, journal: JobQueue, signal: JobSignals,
                 blocking: Blocking, wake: asyncio.Event) -> None:
        self._live = live
        self._journal = journal
        self._signal = signal
        self._blocking = blocking
        self._wake = wake

    def is_known(self, rel_path: str, st: os.stat_result) -> bool:
        """Called from the scan thread: is this file's current identity in the journal?"""
        return self._journal.known(Identity(rel_path, st.st_size, st.st_mtime_ns, st.st_ino))

    async def admit(self, item: Settled) -> None:
        identity = Identity(item.rel_path, item.size, item.mtime_ns, item.inode)
        if await self._blocking(self._admit, identity) is not None:
            self._wake.set()

    async def admit_now(self, identity: Identity, *, kind: str = "file",
                        priority: int = 0) -> Job | None:
        """Admit what another program hands over (an upload, a webhook's file) with its kind
        and priority; the job, or None when the identity had one already or was skipped."""
        job = await self._blocking(self._admit, identity, kind, priority)
        if job is not None:
            self._wake.set()
        return job

    def _admit(self, identity: Identity, kind: str = "file", priority: int = 0) -> Job | None:
        reason = self._skip_reason(identity.rel_path) if kind == "file" else None
        if reason is not None:
            job = self._journal.admit(identity, state="skipped", message=reason)
            if job:
                log.info("skipped %r: %s", identity.rel_path, reason)
                self._signal(EventType.JOB_SKIPPED, job, reason=job.message)
            return None
        job = self._journal.admit(identity, kind=kind, priority=priority)
        if job:
            log.info("queued %r as job %s", identity.rel_path, job.id)
            self._signal(EventType.JOB_QUEUED, job)
        return job

    def _skip_reason(self, rel_path: str) -> str | None:
        # every rule is in daemon/skips.py; our own subtitle for an earlier version of this
        # file never counts: a changed file is a new identity and is transcribed again
        return skip_reason(self._live.current, rel_path,
                           lambda: self._journal.outputs_of(rel_path))
