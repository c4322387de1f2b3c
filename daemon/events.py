"""The event bus (design §8): typed events, bounded history, replay after an id, fair fan-out.

Every event gets a global, strictly increasing integer id. Ids start above both the last id of
the previous run (kept in the journal) and the current time in milliseconds, so they never go
backwards across restarts and a client's Last-Event-ID from before a restart stays meaningful.

Publishing never blocks: it may be called from worker threads, assigns the id under a lock,
records history, and hands fan-out to the event loop. History is bounded by events per job, jobs
kept, and an estimate of its memory (`history_bytes`): a library ingest of thousands of jobs with
a thousand events each would otherwise hold gigabytes. Finished jobs' histories go first, oldest
first; a job still running keeps its history while a finished one can go instead.

Each subscriber has a bounded buffer; when it is full, progress events (priority 0) are dropped
first; if a final subtitle or a signal would have to be dropped, the subscriber is disconnected
instead (it can reconnect and replay from history), so a slow reader never slows the pipeline or
the other readers.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

PRIORITY_PROGRESS, PRIORITY_FINAL, PRIORITY_SIGNAL = 0, 1, 2


class EventType(StrEnum):
    """Every event type the daemon publishes, named once (the contract's names)."""

    PROGRESS = "progress.overall"
    DRAFT = "subtitle.draft"
    OVERWRITE = "subtitle.overwrite"
    JOB_QUEUED = "signal.job_queued"
    JOB_STARTED = "signal.job_started"
    JOB_DONE = "signal.job_done"
    JOB_FAILED = "signal.job_failed"
    JOB_RETRYING = "signal.job_retrying"
    JOB_CANCELED = "signal.job_canceled"
    CANCEL_REQUESTED = "signal.cancel_requested"  # to the cluster node running the job
    JOB_SKIPPED = "signal.job_skipped"
    DEGRADED = "signal.degraded"
    STREAM_CLOSED = "stream.closed"  # sent to a reader, never published


def stage_progress(stage: str) -> str:
    """`progress.<stage>`: one type per pipeline stage (and the service's `write`)."""
    return f"progress.{stage}"
GLOBAL_HISTORY_FACTOR = 10  # the global ring holds this many times a job's history
DEFAULT_HISTORY_BYTES = 64 * 1024 * 1024
GLOBAL_HISTORY_SHARE = 4  # the all-jobs ring may use a quarter of history_bytes, jobs the rest
FINISHED = frozenset({"signal.job_done", "signal.job_failed", "signal.job_canceled",
                      "signal.job_skipped"})


def priority_of(event_type: str) -> int:
    if event_type.startswith("progress."):
        return PRIORITY_PROGRESS
    if event_type.startswith("signal."):
        return PRIORITY_SIGNAL
    return PRIORITY_FINAL


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    job_id: str | None
    timestamp: float
    payload: dict[str, Any]
    priority: int
    size: int = field(default=0, compare=False, repr=False)  # estimated bytes held

    def data(self) -> dict[str, Any]:
        """The SSE `data:` object (contract: job_id, type, timestamp, payload, at least)."""
        return {"id": self.id, "job_id": self.job_id, "type": self.type,
                "timestamp": self.timestamp, "payload": self.payload, "priority": self.priority}

    def history_item(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "payload": self.payload,
                "timestamp": self.timestamp}


# the Event itself, its slot in two deques, its timestamp float and its id int
EVENT_OVERHEAD = sys.getsizeof(Event(0, "", None, 0.0, {}, 0)) + 2 * 8 + 24 + 32


def estimated_size(payload: Any) -> int:
    """Bytes an event holds: the object, its deque slots and its payload, deeply.

    Dict keys are not counted (payload keys are literals, shared by every event); small values
    that Python shares (small ints, None, booleans) are, so it errs high and the memory really
    held stays under the budget (measured in test_events).
    """
    return EVENT_OVERHEAD + _deep_size(payload)


def _deep_size(obj: Any) -> int:
    size = sys.getsizeof(obj)
    kind = type(obj)
    if kind is dict:
        for value in obj.values():
            size += _deep_size(value)
    elif kind is list or kind is tuple:
        for value in obj:
            size += _deep_size(value)
    return size


def matches_types(event_type: str, types: Iterable[str] | None) -> bool:
    """`types` entries match exactly, or by prefix when they end in `*` (e.g. progress.*)."""
    if not types:
        return True
    return any(event_type == t or (t.endswith("*") and event_type.startswith(t[:-1]))
               for t in types)


@dataclass(eq=False)
class Subscriber:
    """One reader's bounded buffer, filled on the event loop and drained by its SSE handler."""

    job_id: str | None
    capacity: int
    buffer: deque[Event] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    reason: str = ""
    dropped: int = 0

    def offer(self, event: Event) -> None:
        if self.closed or (self.job_id is not None and event.job_id != self.job_id):
            return
        if len(self.buffer) >= self.capacity and not self._drop_oldest_progress():
            if event.priority == PRIORITY_PROGRESS:
                self.dropped += 1  # nothing older to drop: this progress update goes
                return
            self.close("too slow: its buffer filled with events that may not be dropped")
            return
        self.buffer.append(event)
        self.wakeup.set()

    def _drop_oldest_progress(self) -> bool:
        for i, queued in enumerate(self.buffer):
            if queued.priority == PRIORITY_PROGRESS:
                del self.buffer[i]
                self.dropped += 1
                return True
        return False

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.reason = reason
            self.wakeup.set()

    async def next_batch(self, timeout: float | None = None) -> list[Event]:
        """Wait for events (or close); return what is buffered now."""
        if not self.buffer and not self.closed:
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            except TimeoutError:
                return []
        batch = list(self.buffer)
        self.buffer.clear()
        return batch


class EventBus:
    def __init__(self, history_size: int = 1000, subscriber_capacity: int = 2000,
                 history_bytes: int = DEFAULT_HISTORY_BYTES) -> None:
        self._lock = threading.Lock()
        self._next_id = int(time.time() * 1000) + 1
        self._history_size = history_size
        self._per_job: dict[str, deque[Event]] = {}
        self._finished: set[str] = set()  # jobs whose last event says they ended
        self._job_bytes = 0
        self._global: deque[Event] = deque()
        self._global_bytes = 0
        self._budget = history_bytes
        self._subscribers: set[Subscriber] = set()
        self._capacity = subscriber_capacity
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0
        self.on_publish: list[Callable[[Event], None]] = []
        # A cluster (daemon/cluster/events.py) numbers events for every node: `publish` hands
        # each to `relay`, and it comes back, numbered, through `deliver`.
        self.relay: Callable[[Event], None] | None = None
        self._delivered = 0

    def continue_after(self, last_id: int) -> None:
        """Never reuse an id a previous run gave out (its last id is kept in the journal)."""
        with self._lock:
            self._next_id = max(self._next_id, last_id + 1)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def history_bytes(self) -> int:
        """The estimated memory history holds now (an event in both rings counts twice)."""
        return self._job_bytes + self._global_bytes

    @property
    def last_id(self) -> int:
        """The newest id given out here; in a cluster, the newest delivered (ids are the
        cluster's then, and this node's own clock-based counter means nothing to a client)."""
        return self._delivered if self.relay is not None else self._next_id - 1

    # ------------------------------------------------------------------ publishing

    def publish(self, event_type: str, job_id: str | None,
                payload: dict[str, Any] | None = None) -> Event:
        """Record and fan out one event; safe from any thread, never blocks on readers."""
        payload = payload or {}
        size = estimated_size(payload)  # outside the lock: publishers on other threads wait less
        if self.relay is not None:  # numbered by the cluster; id 0 until it comes back
            event = Event(0, event_type, job_id, round(time.time(), 3), payload,
                          priority_of(event_type), size)
            self.relay(event)
            return event
        with self._lock:
            event = Event(self._next_id, event_type, job_id, round(time.time(), 3),
                          payload, priority_of(event_type), size)
            self._next_id += 1
            self._record(event)
            self.published += 1
            self._schedule(event)  # under the lock, so fan-out keeps id order
        for hook in self.on_publish:
            hook(event)
        return event

    def deliver(self, event: Event, own: bool) -> None:
        """An event the cluster numbered (any node's, in id order): recorded and fanned out
        like a published one, once. Only this node's own (`own`) reach the hooks, so each
        node's /metrics counts its own work and a sum over the nodes counts each job once."""
        with self._lock:
            if event.id <= self._delivered:
                return
            self._delivered = event.id
            self._next_id = max(self._next_id, event.id + 1)
            self._record(event)
            self.published += 1
            self._schedule(event)
        for hook in self.on_publish if own else ():
            hook(event)

    # ------------------------------------------------------------------ history (under the lock)

    def _record(self, event: Event) -> None:
        self._global.append(event)
        self._global_bytes += event.size
        self._trim_global()
        if event.job_id is None:
            return
        history = self._per_job.setdefault(event.job_id, deque())
        if len(history) >= self._history_size:
            self._job_bytes -= history.popleft().size
        history.append(event)
        self._job_bytes += event.size
        if event.type in FINISHED:
            self._finished.add(event.job_id)
        else:
            self._finished.discard(event.job_id)  # a retry: running again
        self._trim_jobs(event.job_id)

    def _trim_global(self) -> None:
        budget = self._budget // GLOBAL_HISTORY_SHARE
        limit = self._history_size * GLOBAL_HISTORY_FACTOR
        while len(self._global) > 1 and (len(self._global) > limit
                                         or self._global_bytes > budget):
            self._global_bytes -= self._global.popleft().size

    def _trim_jobs(self, current: str | None) -> None:
        """Over the job count or the budget: drop the oldest finished job's history, else the
        oldest job's; the job publishing now, alone over the budget, loses its oldest events."""
        budget = self._budget - self._budget // GLOBAL_HISTORY_SHARE
        while len(self._per_job) > self._history_size or self._job_bytes > budget:
            victim = self._victim(current)
            if victim is not None:
                self._job_bytes -= sum(e.size for e in self._per_job.pop(victim))
                self._finished.discard(victim)
                continue
            history = self._per_job.get(current or "")
            if history is None or len(history) <= 1:
                return  # one event over the whole budget: kept, it is the news
            self._job_bytes -= history.popleft().size

    def _victim(self, current: str | None) -> str | None:
        others = (job_id for job_id in self._per_job if job_id != current)
        oldest = None
        for job_id in others:
            if job_id in self._finished:
                return job_id
            oldest = oldest or job_id
        return oldest

    def _schedule(self, event: Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fan_out(event)
        else:
            loop.call_soon_threadsafe(self._fan_out, event)

    def _fan_out(self, event: Event) -> None:
        for sub in list(self._subscribers):
            sub.offer(event)
            if sub.closed:
                self._subscribers.discard(sub)
                log.warning("disconnected an event reader: %s (%d progress events dropped "
                            "for it before)", sub.reason, sub.dropped)

    # ------------------------------------------------------------------ reading

    def subscribe(self, job_id: str | None = None,
                  after_id: int | None = None) -> tuple[Subscriber, list[Event]]:
        """A live subscription plus the history after `after_id`, with no gap and no overlap.

        Must be called on the event loop: fan-out also runs there, so no live event can slip
        between the history snapshot and the subscription.
        """
        sub = Subscriber(job_id, self._capacity)
        with self._lock:
            replay = self.history(job_id, after_id=after_id) if after_id is not None else []
            self._subscribers.add(sub)
        return sub, replay

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close_all(self, reason: str = "shutting down") -> None:
        for sub in list(self._subscribers):
            sub.close(reason)
        self._subscribers.clear()

    def history(self, job_id: str | None = None, *, after_id: int | None = None,
                since: float | None = None, types: Iterable[str] | None = None) -> list[Event]:
        source = self._global if job_id is None else self._per_job.get(job_id, ())
        types = list(types) if types else None
        return [e for e in list(source)
                if (after_id is None or e.id > after_id)
                and (since is None or e.timestamp >= since)
                and matches_types(e.type, types)]

    def has_job(self, job_id: str) -> bool:
        return job_id in self._per_job
