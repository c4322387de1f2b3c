"""Events across the cluster: every node's events in one capped Redis stream, numbered once.

A node's bus hands each event it publishes to `relay` (never blocking: a bounded backlog that
a thread sends on, in order); a second thread reads the stream from its start and delivers
every node's events, its own included, into the bus with the stream's ids. So /events, a
replay after Last-Event-ID and /jobs/{id}/events/history answer the same, with the same ids,
on any node, for jobs that ran anywhere. Each event's payload says which node published it
(`node`).

Ids come from one counter in Redis (the stream entry `<id>-0`), strictly increasing across
nodes and restarts. A batch sent again after a lost reply is not stored twice: each node's
life numbers what it sends, and the script skips what it stored already. While Redis is away
nothing is numbered: events wait in the backlog (progress first to go if it fills) and reach
every node when Redis returns.

An unexpected error in either thread (a bug: an entry or a hook it cannot handle, a reply
Redis gives for a wrong call) does not end it: it is logged once with its traceback, the thread
tries again after RETRY_SECONDS, and `problem` says so to /healthz until that thread works
again, so a cluster whose events stopped crossing is not reported healthy.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..events import PRIORITY_PROGRESS, Event, EventBus, estimated_size, priority_of
from ..journal import JournalUnavailable
from . import scripts
from .link import Link

log = logging.getLogger(__name__)

MAX_BACKLOG = 50_000  # events waiting for Redis; progress goes first when it is full
BATCH = 200
READ_BLOCK_SECONDS = 1.0
RETRY_SECONDS = 1.0
JOIN_SECONDS = 5.0


class ClusterEvents:
    def __init__(self, link: Link, prefix: str, bus: EventBus, node: str, cap: int) -> None:
        self._link = link
        self._prefix = prefix
        self._stream = prefix + "events"
        self._bus = bus
        self._node = node
        self._run = f"{node}:{secrets.token_hex(4)}"  # this life of the node
        self._cap = cap
        self._script = link.client.register_script(scripts.EVENT)
        self._cond = threading.Condition()
        self._out: deque[tuple[int, Event]] = deque()
        self._seq = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.on_news: list[Callable[[Event], None]] = []  # every event read, any node's
        self.dropped = 0
        self._last: bytes = b"0-0"  # the whole (capped) stream first: history from before
        self._failing: dict[str, str] = {}  # a thread's part → its unexpected error, until it works
        bus.relay = self.relay

    def relay(self, event: Event) -> None:
        """The bus's publish, on any thread: queued for the stream, never blocking."""
        with self._cond:
            if len(self._out) >= MAX_BACKLOG:
                self._make_room()
            self._seq += 1
            self._out.append((self._seq, event))
            self._cond.notify_all()

    def _make_room(self) -> None:
        for i, (_, queued) in enumerate(self._out):
            if queued.priority == PRIORITY_PROGRESS:
                del self._out[i]
                break
        else:
            self._out.popleft()
        self.dropped += 1

    @property
    def backlog(self) -> int:
        return len(self._out)

    @property
    def problem(self) -> str | None:
        failing = tuple(self._failing.values())
        return "cluster events: " + "; ".join(failing) if failing else None

    def _failed(self, part: str, exc: Exception) -> None:
        """An unexpected error in a thread: said once (with its traceback) while it lasts, in
        `problem` meanwhile; the thread goes on after a pause instead of ending in silence."""
        if part not in self._failing:
            log.error("cluster events: %s failed; tried again every %.0f s until it works",
                      part, RETRY_SECONDS, exc_info=exc)
        self._failing[part] = f"{part} failed: {exc!r}"
        self._stop.wait(RETRY_SECONDS)

    def _works(self, part: str) -> None:
        if self._failing.pop(part, None) is not None:
            log.info("cluster events: %s works again", part)

    def start(self) -> None:
        for target, name in ((self._forward, "events-out"), (self._read, "events-in")):
            thread = threading.Thread(target=target, name=f"subwatch-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, flush_seconds: float = 2.0) -> None:
        """Send what waits (for at most `flush_seconds`), then end both threads."""
        deadline = time.monotonic() + flush_seconds
        with self._cond:
            while self._out and self._threads and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._stop.set()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(JOIN_SECONDS)
        self._threads.clear()

    # ---------------------------------------------------------------- out

    def _forward(self) -> None:
        first = True
        while not self._stop.is_set():
            with self._cond:
                if not self._out:
                    self._cond.wait(0.5)
                batch = list(itertools.islice(self._out, BATCH))
            if not batch:
                continue
            try:
                if first:  # ids start above the time in ms, like a lone daemon's
                    with self._link.guard():
                        self._link.client.set(self._prefix + "events:id",
                                              int(time.time() * 1000), nx=True)
                    first = False
                self._send(batch)
            except JournalUnavailable:
                self._stop.wait(RETRY_SECONDS)
                continue
            except Exception as exc:  # the batch stays first in the backlog, tried again
                self._failed("sending", exc)
                continue
            self._works("sending")
            with self._cond:  # by seq: `_make_room` may have dropped some meanwhile
                while self._out and self._out[0][0] <= batch[-1][0]:
                    self._out.popleft()
                self._cond.notify_all()

    def _send(self, batch: list[tuple[int, Event]]) -> None:
        with self._link.guard():
            pipe = self._link.client.pipeline(transaction=False)
            for seq, event in batch:
                payload = json.dumps({**event.payload, "node": self._node})
                self._script(args=[self._prefix, self._run, seq, self._cap, event.type,
                                   event.job_id or "", repr(event.timestamp), payload],
                             client=pipe)
            pipe.execute()

    # ---------------------------------------------------------------- in

    def _read(self) -> None:
        client = self._link.blocking_client(READ_BLOCK_SECONDS)
        try:
            while not self._stop.is_set():
                try:
                    self._read_some(client)
                except JournalUnavailable:
                    self._stop.wait(RETRY_SECONDS)
                except Exception as exc:  # the entry it failed on is passed: not again
                    self._failed("reading", exc)
        finally:
            client.close()

    def _read_some(self, client: Any) -> None:
        with self._link.guard():
            got = client.xread({self._stream: self._last}, count=500,
                               block=int(READ_BLOCK_SECONDS * 1000))
        for _stream, entries in got or []:
            for entry_id, fields in entries:
                self._last = entry_id
                self._deliver(entry_id, fields)
                self._works("reading")

    def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            kind = fields[b"type"].decode()
            payload = json.loads(fields[b"payload"])
            event = Event(int(entry_id.split(b"-")[0]), kind, fields[b"job"].decode() or None,
                          float(fields[b"ts"]), payload, priority_of(kind),
                          estimated_size(payload))
            own = fields[b"run"].decode() == self._run
        except (KeyError, ValueError) as exc:
            log.warning("skipped a malformed event %s in %s: %r", entry_id, self._stream, exc)
            return
        self._bus.deliver(event, own)
        for hook in self.on_news:
            hook(event)

