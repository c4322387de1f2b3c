"""The event bus: ids, history, replay without gap or duplicate, back-pressure rules."""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc
from pathlib import Path

from daemon.events import EventBus, priority_of
from daemon.service import Service
from testkit.daemon import make_config
from testkit.scripted import ScriptedPipeline


async def test_ids_history_and_filters() -> None:
    bus = EventBus(history_size=3)
    bus.bind(asyncio.get_running_loop())
    for n in range(5):
        bus.publish("progress.overall", "a" * 16, {"n": n})
    bus.publish("signal.job_done", "a" * 16)
    events = bus.history("a" * 16)
    assert len(events) == 3  # bounded per job
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert [e.type for e in bus.history("a" * 16, types=["signal.*"])] == ["signal.job_done"]
    assert len(bus.history(None)) == 6  # the global ring is larger
    assert bus.last_id >= int(time.time() * 1000)
    assert (priority_of("progress.vad"), priority_of("subtitle.draft"),
            priority_of("signal.job_failed")) == (0, 1, 2)


async def test_subscribe_replays_then_lives_without_gap() -> None:
    bus = EventBus()
    bus.bind(asyncio.get_running_loop())
    first = [bus.publish("subtitle.draft", "b" * 16, {"n": n}) for n in range(5)]
    sub, replay = bus.subscribe(None, after_id=first[1].id)
    assert [e.id for e in replay] == [e.id for e in first[2:]]
    # publishing from another thread lands in order on the loop
    thread = threading.Thread(target=lambda: [bus.publish("subtitle.draft", "b" * 16, {"n": n})
                                              for n in range(100)])
    thread.start()
    thread.join()
    got = []
    while len(got) < 100:
        got += await sub.next_batch(timeout=5)
    assert [e.id for e in got] == list(range(first[-1].id + 1, first[-1].id + 101))


async def test_slow_reader_loses_progress_first_then_is_disconnected() -> None:
    bus = EventBus(subscriber_capacity=4)
    bus.bind(asyncio.get_running_loop())
    sub, _ = bus.subscribe(None)
    for n in range(3):
        bus.publish("progress.overall", None, {"n": n})
    bus.publish("signal.job_started", None)
    bus.publish("subtitle.overwrite", None)  # full: the oldest progress event makes room
    assert [e.type for e in sub.buffer] == ["progress.overall", "progress.overall",
                                            "signal.job_started", "subtitle.overwrite"]
    bus.publish("signal.job_done", None)
    bus.publish("subtitle.overwrite", None)
    assert not sub.closed and all(e.priority > 0 for e in sub.buffer)
    bus.publish("signal.job_queued", None)  # no progress left to drop: disconnect, not lose
    assert sub.closed and "too slow" in sub.reason
    assert bus.subscriber_count == 0


async def test_ids_never_go_backwards_across_restarts(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    service = Service(config, pipeline=ScriptedPipeline())
    await service.startup()
    far_future = int(time.time() * 1000) + 10**9  # as if the clock had been far ahead
    service.bus._next_id = far_future
    last = service.bus.publish("signal.degraded", None, {}).id
    await service.shutdown()
    again = Service(config, pipeline=ScriptedPipeline())
    await again.startup()
    try:
        assert again.bus.publish("signal.degraded", None, {}).id > last
    finally:
        await again.shutdown()


# ---------------------------------------------------------------------------- bounded history

def _publish_job(bus: EventBus, job_id: str, cues: int, finished: bool = True) -> None:
    """The events one job publishes, shaped as the pipeline's (drafts, word-timed finals)."""
    bus.publish("signal.job_started", job_id, {"attempt": 1, "max_attempts": 3})
    for n in range(cues):
        text = f"cue number {n} of a job that says a few ordinary words"
        bus.publish("progress.overall", job_id, {"phase": "transcribe", "percent": n / cues,
                                                 "message": "", "status": "running"})
        bus.publish("subtitle.draft", job_id, {"temp_id": f"{job_id}:{n}", "text": text,
                                               "start": n * 2.0, "end": n * 2.0 + 1.5,
                                               "confidence": 0.9, "is_draft": True})
        bus.publish("subtitle.overwrite", job_id, {
            "target_temp_id": f"{job_id}:{n}", "target_temp_ids": [f"{job_id}:{n}"],
            "text": text, "lines": [text], "start": n * 2.0, "end": n * 2.0 + 1.5,
            "is_draft": False,
            "words": [{"word": w, "start": n * 2.0 + i * 0.1, "end": n * 2.0 + i * 0.1 + 0.08,
                       "probability": 0.91} for i, w in enumerate(text.split())]})
    if finished:
        bus.publish("signal.job_done", job_id, {"result": "ok", "outputs": [f"/o/{job_id}.srt"]})


async def test_history_stays_within_its_byte_budget_dropping_finished_jobs_first() -> None:
    bus = EventBus(history_size=1000, history_bytes=800_000)
    bus.bind(asyncio.get_running_loop())
    _publish_job(bus, "0" * 16, 20)  # the oldest, finished
    _publish_job(bus, "1" * 16, 20, finished=False)  # older than the rest, still running
    for n in range(2, 200):
        _publish_job(bus, f"{n:016x}", 20)
    assert bus.history_bytes <= 800_000
    assert not bus.has_job("0" * 16)  # finished and oldest: gone
    assert bus.has_job("1" * 16)  # unfinished: kept while finished jobs could go instead
    assert len(bus.history("1" * 16)) == 1 + 3 * 20
    assert bus.has_job(f"{199:016x}") and len(bus.history(f"{199:016x}")) == 2 + 3 * 20
    assert sum(bus.has_job(f"{n:016x}") for n in range(2, 200)) < 198  # the oldest went


async def test_one_job_alone_over_the_budget_keeps_its_newest_events() -> None:
    bus = EventBus(history_size=100_000, history_bytes=100_000)
    bus.bind(asyncio.get_running_loop())
    _publish_job(bus, "2" * 16, 2000, finished=False)
    events = bus.history("2" * 16)
    assert bus.history_bytes <= 100_000 and events
    assert events[-1].type == "subtitle.overwrite" and events[-1].payload["start"] == 3998.0


def test_a_full_history_measured_stays_within_its_budget() -> None:
    """tracemalloc, not an estimate: what the bus holds after far more than fits."""
    budget = 2 * 1024 * 1024  # unbounded, these events would hold about 40 MiB
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        bus = EventBus(history_size=1000, history_bytes=budget)
        for n in range(150):
            _publish_job(bus, f"{n:016x}", 50)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert bus.published == 150 * (2 + 3 * 50)
    assert held <= budget, f"{held / 2**20:.1f} MiB held for a {budget / 2**20:.0f} MiB budget"
