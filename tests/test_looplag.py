"""The event-loop lag monitor: a loop held by blocking work shows up as lag of that length, and
a running daemon reports it in /status and /metrics (real service, real HTTP server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from daemon.looplag import LoopLag
from testkit.daemon import base_url, running_service, wait_until
from testkit.scripted import ScriptedPipeline


async def test_a_loop_held_by_a_blocking_call_is_measured_as_lag_at_least_that_long() -> None:
    lag = LoopLag(interval=0.01)
    seen: list[float] = []
    lag.on_sample.append(seen.append)
    sampler = asyncio.create_task(lag.run())
    try:
        await wait_until(lambda: len(seen) >= 3, 30, "first samples")
        time.sleep(0.3)  # holds the loop: the pending 10 ms sleep wakes 0.29 s late at least
        await wait_until(lambda: any(s >= 0.29 for s in seen), 30, "the held loop's sample")
    finally:
        sampler.cancel()
    snapshot = lag.snapshot()
    assert snapshot["max_ms"] >= 290 and snapshot["worst_ms"] == snapshot["max_ms"]
    assert snapshot["worst_at"] is not None and snapshot["samples"] == len(seen)


def test_snapshot_gives_percentiles_of_the_recent_window_only() -> None:
    lag = LoopLag(window=100)
    assert lag.snapshot()["samples"] == 0 and lag.snapshot()["p99_ms"] is None
    lag.observe(5.0)  # long ago: leaves the window, stays the worst since start
    for n in range(100):
        lag.observe(n / 1000)
    snapshot = lag.snapshot()
    assert snapshot["samples"] == 100
    assert (snapshot["p50_ms"], snapshot["p99_ms"], snapshot["max_ms"]) == (49.5, 99.0, 99.0)
    assert snapshot["worst_ms"] == 5000.0


async def test_daemon_reports_loop_lag_in_status_and_metrics(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service)

        async def samples() -> int:
            status = await (await http.get(url + "/status")).json()
            return int(status["event_loop"]["samples"])

        deadline = time.monotonic() + 30
        while await samples() < 3:
            assert time.monotonic() < deadline, "no loop-lag samples in /status"
            await asyncio.sleep(0.1)
        status = await (await http.get(url + "/status")).json()
        assert status["event_loop"]["p99_ms"] >= 0 and status["event_loop"]["interval_ms"] == 100
        text = await (await http.get(url + "/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    histogram = families["subwatch_event_loop_lag_seconds"]
    assert histogram.type == "histogram"
    count = next(s.value for s in histogram.samples if s.name.endswith("_count"))
    assert count >= 3
