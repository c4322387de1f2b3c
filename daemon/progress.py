"""A running job as the outside world sees it: phase, percent, ETA, and the events it emits.

The pipeline reports through JobReporter on the worker thread; /status reads RunningJob, the
event bus carries progress, drafts and finals to /events.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .domain import Cue, Segment
from .events import EventBus
from .journal import Job
from .pipeline import overall

log = logging.getLogger(__name__)

PROGRESS_LOG_SECONDS = 30.0  # a long job says how far it is at most this often
PROGRESS_EVENT_SECONDS = 0.25  # at most about four progress updates a second per job


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
    segments: int = 0  # decoded so far, shown in /status
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


class JobReporter:
    """The pipeline's Reporter for a daemon job: /status, events and milestone log lines.

    Called on the worker thread; the bus is thread-safe. Progress events are throttled to a few
    per second per job (phase changes always go out); drafts and finals are never throttled.
    """

    def __init__(self, running: RunningJob, bus: EventBus) -> None:
        self._running = running
        self._bus = bus
        self._last_event = 0.0

    @property
    def _job_id(self) -> str:
        return self._running.job.id

    def progress(self, phase: str, fraction: float, message: str = "") -> None:
        run = self._running
        changed = phase != run.phase
        run.phase = phase
        run.percent = 100.0 * overall(phase, fraction)
        if message or changed:
            run.message = message
        now = time.monotonic()
        if changed or now - run.last_log >= PROGRESS_LOG_SECONDS:
            run.last_log = now
            log.info("%s %.0f%%%s", phase, run.percent, f" ({message})" if message else "")
        if changed or fraction >= 1.0 or now - self._last_event >= PROGRESS_EVENT_SECONDS:
            self._last_event = now
            self._bus.publish("progress.overall", self._job_id, {
                "phase": phase, "percent": round(run.percent, 1), "message": run.message,
                "status": "running", "eta_seconds": run.eta_seconds()})
            self._bus.publish(f"progress.{phase}", self._job_id, {
                "percent": round(100.0 * min(max(fraction, 0.0), 1.0), 1), "message": message})

    def segment(self, segment: Segment) -> None:
        self._running.segments += 1
        self._bus.publish("subtitle.draft", self._job_id, {
            "temp_id": self.temp_id(segment.index), "text": segment.text,
            "start": segment.start, "end": segment.end,
            "confidence": round(math.exp(segment.avg_logprob), 3), "is_draft": True})

    def cue(self, cue: Cue, segment_index: int) -> None:
        self._bus.publish("subtitle.overwrite", self._job_id, {
            "target_temp_id": self.temp_id(segment_index), "text": cue.text,
            "lines": list(cue.lines), "start": cue.start, "end": cue.end, "is_draft": False,
            "words": [{"word": w.text.strip(), "start": w.start, "end": w.end,
                       "probability": round(w.probability, 3)} for w in cue.words]})

    def temp_id(self, segment_index: int) -> str:
        return f"{self._job_id}:{segment_index}"
