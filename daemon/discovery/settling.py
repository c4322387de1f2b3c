"""Settling: a file is admitted only after its size and mtime have held still for
`settle_seconds`, so a slow copy is never read early."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

UNSEEN = -1  # size and mtime of a file an event named but no stat has looked at yet


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    since: float


@dataclass(frozen=True)
class Settled:
    rel_path: str
    size: int
    mtime_ns: int
    inode: int


class Settler:
    """Holds candidate files until their size and mtime stop changing for `settle_seconds`.
    Time is the watcher's clock, so tests can move it."""

    def __init__(self, inbox: Path, settle_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inbox = inbox
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._pending: dict[str, _Pending | None] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, rel_path: str, st: os.stat_result | None = None,
            at: float | None = None) -> None:
        """Watch `rel_path` settle. `st`, a stat a walk has just taken, counts as the first
        look; `at` is when an OS event said the file changed (it has not changed since, or a
        later event would say so): either way the file settles `settle_seconds` after that,
        not after the next tick's first look."""
        seen = self._pending.get(rel_path)
        if st is not None and seen is None:
            self._pending[rel_path] = _Pending(st.st_size, st.st_mtime_ns, self._clock())
        elif at is not None and seen is None:
            self._pending[rel_path] = _Pending(UNSEEN, UNSEEN, at)
        elif at is not None and seen is not None:
            seen.since = max(seen.since, at)
        else:
            self._pending.setdefault(rel_path, None)

    def wait(self) -> float | None:
        """Seconds until the first file looked at may have settled (None: none looked at yet);
        the watcher sleeps no longer than this, so a file is admitted on time."""
        starts = [p.since for p in self._pending.values() if p is not None]
        if not starts:
            return None
        return max(0.0, min(starts) + self.settle_seconds - self._clock())

    def tick(self, now: float | None = None) -> list[Settled]:
        """Stat every pending file (blocking: call from a thread); return those now settled."""
        now = self._clock() if now is None else now
        settled = []
        for rel, seen in list(self._pending.items()):
            try:
                st = os.stat(self.inbox / rel)
            except OSError:
                del self._pending[rel]  # gone (or the share is): a rescan finds it again
                continue
            if not stat.S_ISREG(st.st_mode):
                del self._pending[rel]
                continue
            current = (st.st_size, st.st_mtime_ns)
            if seen is None or seen.size == UNSEEN:  # the first look
                since = now if seen is None else seen.since
                self._pending[rel] = _Pending(*current, since)
                if now - since < self.settle_seconds:
                    continue
            elif (seen.size, seen.mtime_ns) != current:
                self._pending[rel] = _Pending(*current, now)
                if self.settle_seconds > 0:
                    continue
            elif now - seen.since < self.settle_seconds:
                continue
            del self._pending[rel]
            settled.append(Settled(rel, st.st_size, st.st_mtime_ns, st.st_ino))
        return settled
