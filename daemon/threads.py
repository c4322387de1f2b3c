"""Where the daemon's blocking work runs: its own thread pool, never the event loop.

One object for every part (journal writes, stats of a share that may hang, inference), so a
stop can see what is still inside a thread and leave without waiting on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Blocking:
    """`await blocking(fn, *args)`: run `fn` in a thread, with the caller's log context."""

    def __init__(self, threads: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="subwatch")
        self._inflight: set[concurrent.futures.Future[Any]] = set()

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        ctx = contextvars.copy_context()
        work = self._executor.submit(ctx.run, fn, *args)
        self._inflight.add(work)
        work.add_done_callback(self._inflight.discard)
        return await asyncio.wrap_future(work)

    @property
    def busy(self) -> bool:
        """True when a thread is still inside a call the process must abandon (an inference
        the grace period did not see end): the interpreter would otherwise wait for it."""
        return any(not work.done() for work in list(self._inflight))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
