"""Intake: what the watcher finds becomes a job, a skip, or nothing (already known).

The skip rule lives here and only here: a subtitle already at the target path means the file
is skipped, unless that subtitle is our own output for an earlier version of the file.
"""

from __future__ import annotations

import asyncio
import logging
import os

from .config import LiveConfig
from .events import EventType
from .journal import Identity, Job, Journal
from .pipeline import expected_language
from .progress import JobSignals
from .threads import Blocking
from .watcher import Settled
from .writer import outbox_for

log = logging.getLogger(__name__)


class Intake:
    def __init__(self, live: LiveConfig, journal: Journal, signal: JobSignals,
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

    def _admit(self, identity: Identity) -> Job | None:
        reason = self._skip_reason(identity.rel_path)
        if reason is not None:
            job = self._journal.admit(identity, state="skipped", message=reason)
            if job:
                log.info("skipped %r: %s", identity.rel_path, reason)
                self._signal(EventType.JOB_SKIPPED, job, reason=job.message)
            return None
        job = self._journal.admit(identity)
        if job:
            log.info("queued %r as job %s", identity.rel_path, job.id)
            self._signal(EventType.JOB_QUEUED, job)
        return job

    def _skip_reason(self, rel_path: str) -> str | None:
        config = self._live.current
        if not config.jobs.skip_existing:
            return None
        existing = outbox_for(config).existing_subtitle(rel_path,
                                                        expected_language(config.whisper))
        # our own subtitle for an earlier version of this file does not count: a changed file
        # is a new identity and is transcribed again
        if existing is None or str(existing) in self._journal.outputs_of(rel_path):
            return None
        return f"subtitle exists: {existing.name}"
