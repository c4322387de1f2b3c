"""Settled files in, admissions out: each settled file goes to the `admit` callback; when the
journal is unavailable none can go in and they settle again, and one entry that cannot be
admitted is warned about once while the others go in."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..journal import JournalUnavailable
from .schedule import Problems
from .settling import Settled, Settler

log = logging.getLogger("daemon.watcher")


class Admission:
    def __init__(self, settler: Settler, problems: Problems,
                 admit: Callable[[Settled], Awaitable[None]],
                 blocking: Callable[..., Awaitable[Any]]) -> None:
        self.paused = False  # stopping: nothing more is admitted
        self._settler = settler
        self._problems = problems
        self._admit = admit
        self._blocking = blocking

    async def settle(self, named: dict[str, float]) -> None:
        """Add the files events named (with when), then admit those that have settled."""
        for rel, at in named.items():
            self._settler.add(rel, at=at)
        if not len(self._settler) or self.paused:
            return
        settled = await self._blocking(self._settler.tick)
        for n, item in enumerate(settled):
            if self.paused:
                return
            try:
                await self._admit(item)
            except JournalUnavailable:  # none can go in now (said once, and in /healthz):
                for later in settled[n:]:  # these settle again and are tried then
                    self._settler.add(later.rel_path)
                return
            except ValueError as exc:  # this one entry; the others still go in
                if self._problems.first(item.rel_path):
                    log.warning("skipping %r in the inbox: cannot be admitted (%s)",
                                item.rel_path, exc)
            else:
                self._problems.solved(item.rel_path)
