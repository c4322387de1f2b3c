"""Prometheus metrics for /metrics, on a registry of the daemon's own (no global state).

Counters and the histogram are updated as jobs end and events are published; queue depth and
model figures are read from the journal and the cache when scraped, so they can never drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .events import Event, EventBus, EventType
from .looplag import LoopLag
from .models import ModelCache

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FINAL_SIGNALS: dict[str, str] = {EventType.JOB_DONE: "done", EventType.JOB_FAILED: "failed",
                 EventType.JOB_CANCELED: "canceled", EventType.JOB_SKIPPED: "skipped"}


class _Scraped:
    """Reads live figures at scrape time (runs in a worker thread with the rest of generate)."""

    def __init__(self, counts: Callable[[], dict[str, int]], cache: ModelCache, bus: EventBus,
                 healthy: Callable[[], bool]) -> None:
        self._counts = counts
        self._cache = cache
        self._bus = bus
        self._healthy = healthy

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily("subwatch_queue_jobs", "Jobs in the journal by state",
                                  labels=["state"])
        for state, count in self._counts().items():
            depth.add_metric([state], count)
        yield depth
        loads = CounterMetricFamily("subwatch_model_loads", "Model loads", labels=["model"])
        hits = CounterMetricFamily("subwatch_model_cache_hits", "Model cache hits",
                                   labels=["model"])
        misses = CounterMetricFamily("subwatch_model_cache_misses", "Model cache misses",
                                     labels=["model"])
        infer = CounterMetricFamily("subwatch_model_inference_seconds",
                                    "Seconds spent in model inference", labels=["model"])
        for key, stats in self._cache.snapshot()["stats"].items():
            loads.add_metric([key], stats["load_count"])
            hits.add_metric([key], stats["hits"])
            misses.add_metric([key], stats["misses"])
            infer.add_metric([key], stats["inference_seconds"])
        yield from (loads, hits, misses, infer)
        clients = GaugeMetricFamily("subwatch_sse_clients", "Connected event-stream readers")
        clients.add_metric([], self._bus.subscriber_count)
        yield clients
        up = GaugeMetricFamily("subwatch_healthy", "1 when /healthz says ok")
        up.add_metric([], 1 if self._healthy() else 0)
        yield up


class Metrics:
    """Counts from the events the bus carries; live gauges from the callables given."""

    def __init__(self, counts: Callable[[], dict[str, int]], cache: ModelCache, bus: EventBus,
                 healthy: Callable[[], bool], lag: LoopLag | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.jobs = Counter("subwatch_jobs", "Jobs finished, by outcome", ["outcome"],
                            registry=self.registry)
        self.processing = Histogram(
            "subwatch_processing_seconds", "Wall time to process one file",
            buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=self.registry)
        self.audio = Counter("subwatch_audio_seconds", "Seconds of audio transcribed",
                             registry=self.registry)
        self.events = Counter("subwatch_events_published", "Events published, by priority",
                              ["priority"], registry=self.registry)
        self.registry.register(_Scraped(counts, cache, bus, healthy))
        bus.on_publish.append(self.on_event)
        self.loop_lag = Histogram(
            "subwatch_event_loop_lag_seconds", "How late the event loop woke from a 100 ms sleep",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)
        if lag is not None:
            lag.on_sample.append(self.loop_lag.observe)

    def on_event(self, event: Event) -> None:
        """Everything job-related is counted from the signals the service publishes anyway,
        so no outcome can be missed by a call site."""
        self.events.labels(str(event.priority)).inc()
        outcome = FINAL_SIGNALS.get(event.type)
        if outcome is None:
            return
        self.jobs.labels(outcome).inc()
        if outcome == "done":
            self.processing.observe(event.payload.get("processing_seconds", 0.0))
            self.audio.inc(event.payload.get("audio_seconds", 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
