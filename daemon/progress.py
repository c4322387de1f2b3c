"""Jobs as the outside world sees them: the running ones with phase, percent and ETA, the events
the pipeline emits for them, and the signals that mark each change of state.

The pipeline reports through JobReporter on the worker thread; /status reads the RunningJobs
registry; the event bus carries progress, drafts, finals and signals to /events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .domain import Cue, Draft
from .events import EventBus, EventType, stage_progress
from .journal import Job

log = logging.getLogger(__name__)

PROGRESS_LOG_SECONDS = 30.0  # a long job says how far it is at most this often
PROGRESS_EVENT_SECONDS = 0.25  # at most about four progress updates a second per job
PIPELINE_SHARE = 0.97  # of a job's progress bar; writing the outputs is the rest
WRITE_PHASE = "write"


@dataclass
class RunningJob:
    """What /status shows of a job in progress; updated from the worker thread."""

    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)
    phase: str = "queued"
    percent: float = 0.0
    message: str = ""
    started: float = field(default_factory=time.monotonic)
    last_log: float = 0.0
    segments: int = 0  # drafts so far, shown in /status
    cancel_reason: str = ""

    def eta_seconds(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.percent <= 1.0 or elapsed < 1.0:
            return None
        return round(elapsed * (100.0 - self.percent) / self.percent, 1)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.job.id, "input": self.job.rel_path, "phase": self.phase,
                "percent": round(self.percent, 1), "message": self.message,
                "eta_seconds": self.eta_seconds(), "attempt": self.job.attempts,
                "segments": self.segments}


class RunningJobs:
    """The registry of jobs in progress, by id (workers add and remove; views read)."""

    def __init__(self) -> None:
        self._jobs: dict[str, RunningJob] = {}

    def start(self, job: Job) -> RunningJob:
        run = self._jobs[job.id] = RunningJob(job)
        return run

    def end(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def get(self, job_id: str) -> RunningJob | None:
        return self._jobs.get(job_id)

    def values(self) -> list[RunningJob]:
        return list(self._jobs.values())

    def cancel_all(self) -> None:
        for run in self.values():
            run.cancel.set()

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._jobs))

    def __len__(self) -> int:
        return len(self._jobs)


class JobSignals:
    """Publishes the `signal.*` event for a job's change of state, with its input and attempt."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def __call__(self, kind: EventType, job: Job, **payload: Any) -> None:
        self._bus.publish(kind, job.id, {"input": job.rel_path, "attempt": job.attempts,
                                         **payload})


class Degradations:
    """Parts that work in a reduced way (a separation model that cannot be had: jobs go on
    unseparated). Said once per reason as `signal.degraded` and in the log, shown in /status;
    /healthz stays ok, because every job still finishes. A part that holds every job until it
    clears (a full outbox: `holds_jobs`) is also in /healthz, as degraded, until `clear`."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._lock = threading.Lock()
        self._now: dict[str, str] = {}
        self._holding: set[str] = set()

    def report(self, component: str, reason: str, job_id: str | None = None,
               holds_jobs: bool = False) -> None:
        with self._lock:
            if self._now.get(component) == reason:
                return
            self._now[component] = reason
            if holds_jobs:
                self._holding.add(component)
        if holds_jobs:
            log.error("%s; jobs wait until it clears", reason)
        else:
            log.warning("%s works in a reduced way: %s", component, reason)
        self._bus.publish(EventType.DEGRADED, None, {
            "degraded": True, "component": component, "reasons": [reason], "job_id": job_id})

    def clear(self, component: str) -> None:
        """The part works fully again (said once, when it was reported)."""
        with self._lock:
            if self._now.pop(component, None) is None:
                return
            self._holding.discard(component)
        log.info("%s works again", component)
        self._bus.publish(EventType.DEGRADED, None, {
            "degraded": False, "component": component, "reasons": []})

    def holding(self) -> list[str]:
        """The reasons of the parts that hold every job now, for /healthz."""
        with self._lock:
            return [self._now[c] for c in sorted(self._holding)]

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._now)


class JobReporter:
    """The pipeline's Reporter for a daemon job: /status, events and milestone log lines.

    Called on the worker thread; the bus is thread-safe. Progress events are throttled to a few
    per second per job (phase changes always go out); drafts and finals are never throttled.
    """

    def __init__(self, running: RunningJob, bus: EventBus, degradations: Degradations) -> None:
        self._running = running
        self._bus = bus
        self._degradations = degradations
        self._last_event = 0.0

    @property
    def _job_id(self) -> str:
        return self._running.job.id

    def progress(self, phase: str, fraction: float, overall: float | None, message: str = "",
                 details: Mapping[str, Any] | None = None) -> None:
        if overall is None:  # a stage working inside another: its own event, when it has news
            if details:
                self._bus.publish(stage_progress(phase), self._job_id, {
                    "percent": round(100.0 * fraction, 1), "message": message, **details})
            return
        self._update(phase, fraction, PIPELINE_SHARE * overall, message, details)

    def writing(self) -> None:
        self._update(WRITE_PHASE, 0.0, PIPELINE_SHARE, "writing subtitles", None)

    def finished(self, result: str) -> None:
        self._bus.publish(EventType.PROGRESS, self._job_id, {
            "phase": "done", "percent": 100.0, "message": result, "status": "done"})

    def _update(self, phase: str, fraction: float, overall: float, message: str,
                details: Mapping[str, Any] | None) -> None:
        run = self._running
        changed = phase != run.phase
        run.phase = phase
        run.percent = 100.0 * min(max(overall, 0.0), 1.0)
        if message or changed:
            run.message = message
        now = time.monotonic()
        if changed or now - run.last_log >= PROGRESS_LOG_SECONDS:
            run.last_log = now
            log.info("%s %.0f%%%s", phase, run.percent, f" ({message})" if message else "")
        if changed or details or fraction >= 1.0 or \
                now - self._last_event >= PROGRESS_EVENT_SECONDS:
            self._last_event = now
            self._bus.publish(EventType.PROGRESS, self._job_id, {
                "phase": phase, "percent": round(run.percent, 1), "message": run.message,
                "status": "running", "eta_seconds": run.eta_seconds()})
            self._bus.publish(stage_progress(phase), self._job_id, {
                "percent": round(100.0 * min(max(fraction, 0.0), 1.0), 1), "message": message,
                **(details or {})})

    def draft(self, draft: Draft) -> None:
        self._running.segments += 1
        self._bus.publish(EventType.DRAFT, self._job_id, {
            "temp_id": self.temp_id(draft.temp_id), "text": draft.text,
            "start": draft.start, "end": draft.end, "confidence": draft.confidence,
            "is_draft": True, "engine": draft.engine, "language": draft.language,
            "events": list(draft.events)})

    def final(self, cue: Cue, replaces: tuple[str, ...],
              details: Mapping[str, Any] | None = None) -> None:
        targets = [self.temp_id(t) for t in replaces]
        self._bus.publish(EventType.OVERWRITE, self._job_id, {**(details or {}),
            "target_temp_id": targets[0] if targets else None, "target_temp_ids": targets,
            "text": cue.text, "lines": list(cue.lines), "start": cue.start, "end": cue.end,
            "is_draft": False,
            "words": [{"word": w.text.strip(), "start": w.start, "end": w.end,
                       "probability": round(w.probability, 3)} for w in cue.words]})

    def degraded(self, component: str, reason: str) -> None:
        self._degradations.report(component, reason, self._job_id)

    def temp_id(self, local_id: str) -> str:
        return f"{self._job_id}:{local_id}"
