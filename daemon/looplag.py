"""Event-loop lag: how late the daemon's event loop wakes from a short sleep.

Everything the daemon answers (/healthz, /status, event streams, the systemd watchdog) runs on
one event loop; inference runs in threads beside it. Anything that holds the loop (a blocking
call on it, a thread that keeps the GIL) delays every answer by as much. A sleep of `interval`
that wakes `lag` seconds late is exactly that delay, seen from inside, so it is measured
continuously (every 100 ms, a negligible cost) and shown in /status (the last minute's
percentiles) and /metrics (a histogram), where a slow page can be told from a slow network.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

INTERVAL_SECONDS = 0.1
WINDOW_SAMPLES = 600  # the last minute at 100 ms


class LoopLag:
    """Measures the overshoot of `interval` sleeps on the running loop; `on_sample` callbacks
    (a Prometheus histogram's observe) get every sample."""

    def __init__(self, interval: float = INTERVAL_SECONDS, window: int = WINDOW_SAMPLES) -> None:
        self.interval = interval
        self.on_sample: list[Callable[[float], None]] = []
        self._recent: deque[float] = deque(maxlen=window)
        self._worst = 0.0
        self._worst_at: float | None = None

    async def run(self) -> None:
        """Sample until cancelled (a task of the daemon's lifecycle)."""
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.interval)
            self.observe(max(0.0, time.monotonic() - asked - self.interval))

    def observe(self, lag: float) -> None:
        self._recent.append(lag)
        if lag >= self._worst:  # when the worst one happened: to match it with the log
            self._worst, self._worst_at = lag, time.time()
        for callback in self.on_sample:
            callback(lag)

    def snapshot(self) -> dict[str, Any]:
        """/status's `event_loop`: lag percentiles over the recent window, in ms, and the worst
        since start with its time (None before the first sample)."""
        recent = sorted(self._recent)
        if not recent:
            return {"interval_ms": self.interval * 1000, "samples": 0, "p50_ms": None,
                    "p99_ms": None, "max_ms": None, "worst_ms": None, "worst_at": None}
        p99 = recent[min(len(recent) - 1, int(0.99 * len(recent)))]
        return {"interval_ms": self.interval * 1000, "samples": len(recent),
                "p50_ms": _ms(statistics.median(recent)), "p99_ms": _ms(p99),
                "max_ms": _ms(recent[-1]), "worst_ms": _ms(self._worst),
                "worst_at": self._worst_at}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
