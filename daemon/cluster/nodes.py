"""A cluster node's own periodic work, every third of `cluster.claim_timeout`:
- its record for /status on every node (role, heartbeat, running jobs, model cache);
- a heartbeat of every job it holds, so no other node takes a job that is still running;
- on nodes that run jobs: taking over the jobs of workers that died (`RedisQueue.recover`),
  writing the error file of one that is out of attempts, and waking the workers;
and, for its whole life, the threads that carry events to and from the cluster's stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from .. import __version__
from ..events import Event, EventType
from ..journal import JournalUnavailable
from ..models import ModelCache
from ..outcomes import Outcomes
from ..progress import RunningJobs
from ..threads import Blocking
from .events import ClusterEvents
from .queue import RedisQueue

log = logging.getLogger(__name__)

BEATS_PER_CLAIM_TIMEOUT = 3


class ClusterNode:
    def __init__(self, role: str, workers: int, queue: RedisQueue, events: ClusterEvents,
                 running: RunningJobs, cache: ModelCache, outcomes: Outcomes,
                 blocking: Blocking, wake: asyncio.Event) -> None:
        self.role = role
        self._workers = workers
        self._queue = queue
        self._events = events
        self._running = running
        self._cache = cache
        self._outcomes = outcomes
        self._blocking = blocking
        self._wake = wake
        self._started = time.time()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._events.on_news.append(lambda event: self._news(loop, event))
        self._events.start()
        try:
            while True:
                await self._beat()
                await asyncio.sleep(self._queue.claim_timeout / BEATS_PER_CLAIM_TIMEOUT)
        finally:
            await self._blocking(self._events.stop)

    def _news(self, loop: asyncio.AbstractEventLoop, event: Event) -> None:
        """A job queued on any node wakes this node's idle workers (from the reader thread)."""
        if self._workers and event.type == EventType.JOB_QUEUED and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def _beat(self) -> None:
        try:
            await self._blocking(self._queue.registry.beat, self._queue.node, self.record(),
                                 self._queue.claim_timeout)
            for job_id in self._queue.held():
                if not await self._blocking(self._queue.heartbeat, job_id):
                    log.warning("job %s is no longer this node's (another node took it over "
                                "after a pause longer than cluster.claim_timeout)", job_id)
            if self._workers:
                await self._take_over()
        except JournalUnavailable:  # said once by the link, and in /healthz
            pass

    async def _take_over(self) -> None:
        requeued, failed = await self._blocking(self._queue.recover)
        if requeued:
            log.warning("took over %d job(s) whose worker stopped heartbeating; queued again",
                        requeued)
            self._wake.set()
        for job in failed:  # out of attempts: its error file, like any failure for good
            await self._outcomes.failed(job, job.error or "crashed", job.message or "")

    def record(self) -> dict[str, Any]:
        return {"role": self.role, "host": socket.gethostname(), "pid": os.getpid(),
                "version": __version__, "started_at": self._started, "workers": self._workers,
                "running": [run.as_dict() for run in self._running.values()],
                "models": self._cache.snapshot(), "events_backlog": self._events.backlog}
