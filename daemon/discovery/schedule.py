"""When to walk the inbox again, and what to say about what a walk skipped.

A scan that keeps failing is retried with a growing delay, never in a loop, and its failures
are counted for /healthz; an entry a walk skips is warned about once, not at every walk."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("daemon.watcher")  # the name users filter discovery's lines by

MAX_BACKOFF = 60.0  # seconds between two tries of a scan that keeps failing
FAILURES_UNHEALTHY = 2  # failed scans in a row that /healthz reports


class ScanSchedule:
    """When the next walk is due (every interval while walks work; after a failure sooner,
    but 1, 2, 4 … 60 s apart, so a share that fails at once is not walked in a loop), and when
    a walk must ask the journal about every file again (`full_due`)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.failures = 0  # in a row
        self.next_at = 0.0
        self.full_at = 0.0

    @property
    def failing(self) -> bool:
        """Failing often enough for /healthz to say so."""
        return self.failures >= FAILURES_UNHEALTHY

    def due(self, asked: bool) -> bool:
        """A scan asked for out of turn (an event, the root coming back) waits out a backoff."""
        return self._clock() >= self.next_at or (asked and not self.failures)

    def full_due(self) -> bool:
        return self._clock() >= self.full_at

    def succeeded(self, interval: float, full_interval: float | None) -> None:
        """A walk worked; `full_interval` when it asked the journal about every file."""
        now = self._clock()
        self.failures = 0
        self.next_at = now + interval
        if full_interval is not None:
            self.full_at = now + full_interval

    def failed(self) -> None:
        self.failures += 1
        self.next_at = self._clock() + min(MAX_BACKOFF, 2.0 ** (self.failures - 1))

    def now(self) -> None:
        """A full scan at the next tick whatever the backoff says (the inbox just came back)."""
        self.next_at = self.full_at = self._clock()

    def wait(self) -> float:
        return max(0.0, self.next_at - self._clock())


class Problems:
    """Each skipped entry is warned about once while it stays a problem: a bad entry in a share
    can stay for months, and a line per rescan would bury every other line. One that is fixed
    and breaks again is warned about again."""

    def __init__(self) -> None:
        self._scanned: set[str] = set()  # problems the last walks met
        self._other: set[str] = set()  # problems met elsewhere (admission, a tick)

    def report(self, problems: dict[str, str], whole: bool = True) -> None:
        """The problems of one walk; of the whole inbox (`whole`: those not met again are
        over) or of one folder (added to what is known)."""
        for rel, reason in sorted(problems.items()):
            if rel not in self._scanned:  # a reason may quote a name that is not UTF-8
                log.warning("skipping %r in the inbox: %s", rel,
                            reason.encode("utf-8", "backslashreplace").decode("utf-8"))
        self._scanned = set(problems) if whole else self._scanned | set(problems)

    def first(self, key: str) -> bool:
        """Is `key` a problem not warned about yet? (Marks it.)"""
        new = key not in self._other
        self._other.add(key)
        return new

    def solved(self, key: str) -> None:
        self._other.discard(key)
