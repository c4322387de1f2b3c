"""A cluster node's own periodic work, every third of `cluster.claim_timeout`:
- its record for /status on every node (role, heartbeat, running jobs, model cache);
- a heartbeat of every job it holds, so no other node takes a job that is still running;
- on nodes that run jobs: taking over the jobs of workers that died (`RedisQueue.recover`),
  writing the error file of one that is out of attempts, and waking the workers;
and, for its whole life, the threads that carry events to and from the cluster's stream.
Each beat also gets back the record it replaced: one written by another process life under
this node's id means a second live daemon uses it (the start refuses that, but two starting
in the same instant both pass): said in the log and in /healthz, without a fight over jobs.
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
from .registry import duplicate

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
        self._beaten = False
        self._twin: tuple[float, str] | None = None  # when a beat last met another life's record

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
            await self._leave()

    async def _leave(self) -> None:
        try:
            await self._blocking(self._queue.registry.leave, self._queue.node, self._queue.life)
        except JournalUnavailable:  # Redis away at the stop: the record expires by itself
            pass

    def _news(self, loop: asyncio.AbstractEventLoop, event: Event) -> None:
        """From the reader thread: a job queued on any node wakes this node's idle workers; a
        cancel asked on any node stops the job here if it runs here."""
        if loop.is_closed():
            return
        if self._workers and event.type == EventType.JOB_QUEUED:
            loop.call_soon_threadsafe(self._wake.set)
        elif event.type == EventType.CANCEL_REQUESTED and event.job_id in self._running:
            loop.call_soon_threadsafe(self._cancel_here, event)

    def _cancel_here(self, event: Event) -> None:
        run = self._running.get(event.job_id or "")
        if run is not None and not run.cancel.is_set():
            asked = event.payload.get("node", "another node")
            run.cancel_reason = f"{event.payload.get('reason', 'canceled')} (on {asked})"
            log.info("cancel of %r asked on %s", run.job.rel_path, asked)
            run.cancel.set()

    async def _beat(self) -> None:
        try:
            previous = await self._blocking(self._queue.registry.beat, self._queue.node,
                                            self.record(), self._queue.claim_timeout)
            self._check_twin(previous)
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

    def _check_twin(self, previous: dict[str, Any] | None) -> None:
        """The first beat replaces a dead life's record (a restart after a crash); any later
        one that finds another life's record met a second daemon under this id."""
        if self._beaten and previous is not None and previous.get("token") != self._queue.life:
            if self._twin is None:
                log.error("%s; this node goes on and says so in /healthz",
                          duplicate(self._queue.node, previous))
            self._twin = (time.monotonic(), duplicate(self._queue.node, previous))
        self._beaten = True

    def problems(self) -> list[str]:
        """For /healthz: events that stopped crossing; a second daemon under this id, until
        no beat has met it for a claim timeout (two daemons' beats interleave unevenly)."""
        out = [self._events.problem] if self._events.problem else []
        if self._twin is not None:
            if time.monotonic() - self._twin[0] < self._queue.claim_timeout:
                out.append(f"cluster node id in use twice: {self._twin[1]}")
            else:
                log.info("no other daemon under cluster node id %r any more", self._queue.node)
                self._twin = None
        return out

    def record(self) -> dict[str, Any]:
        return {"token": self._queue.life, "role": self.role, "host": socket.gethostname(),
                "pid": os.getpid(), "version": __version__, "started_at": self._started,
                "workers": self._workers,
                "running": [run.as_dict() for run in self._running.values()],
                "models": self._cache.snapshot(), "events_backlog": self._events.backlog}
