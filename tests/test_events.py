"""The event bus: ids, history, replay without gap or duplicate, back-pressure rules."""

from __future__ import annotations

import asyncio
import threading
import time
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
