"""What every stage shares: the job state that grows as it passes, the context a stage runs
in, the Stage protocol, and the reporter the outside world listens on.

A stage is a callable object with a name, a progress weight and the models it needs; it takes
the state and returns a new one with its own fields filled. Stages never know their neighbours,
so adding one (separation, a draft engine) means one module and one line in `build_stages`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import Config, WhisperConfig
from ..domain import (
    Audio,
    Cue,
    Draft,
    Dropped,
    Segment,
    SpanVerdict,
    SpeechSpan,
    Transcript,
    later,
)
from ..errors import Cancelled
from ..models import ModelCache, ModelSpec

log = logging.getLogger(__name__)


Details = Mapping[str, Any]


class Reporter(Protocol):
    """What a running pipeline tells the outside world: progress, drafts, final cues, and a
    part that works in a reduced way (a model that cannot be had)."""

    def progress(self, phase: str, fraction: float, overall: float | None, message: str = "",
                 details: Details | None = None) -> None:
        """`overall` None: a stage inside another reports; the job's percent does not move."""

    def draft(self, draft: Draft) -> None: ...

    def final(self, cue: Cue, replaces: tuple[str, ...], details: Details | None = None) -> None:
        ...

    def degraded(self, component: str, reason: str) -> None: ...


class NullReporter:
    """A reporter for callers that only want the transcript."""

    def progress(self, phase: str, fraction: float, overall: float | None, message: str = "",
                 details: Details | None = None) -> None:
        pass

    def draft(self, draft: Draft) -> None:
        pass

    def final(self, cue: Cue, replaces: tuple[str, ...], details: Details | None = None) -> None:
        pass

    def degraded(self, component: str, reason: str) -> None:
        log.warning("%s works in a reduced way: %s", component, reason)


@dataclass(frozen=True)
class JobState:
    """One file's way through the stages; each stage returns a copy with its fields set."""

    path: Path
    audio: Audio | None = None
    spans: tuple[SpeechSpan, ...] = ()  # speech, cut fine (cue timing), in samples of `audio`
    voice: tuple[SpeechSpan, ...] = ()  # the fine cut before padding: where the voice is
    windows: tuple[SpeechSpan, ...] = ()  # the same speech cut wide: what Whisper hears
    music: tuple[SpanVerdict, ...] = ()  # the gate's verdicts, where a gate ran
    vocals: Audio | None = None  # the audio Whisper hears, where separation replaced the mix
    drafts: tuple[Draft, ...] = ()  # from a draft engine; empty when Whisper drafts for itself
    segments: tuple[Segment, ...] = ()
    cues: tuple[Cue, ...] = ()
    dropped: tuple[Dropped, ...] = ()  # segments the guards kept out, and why
    language: str | None = None
    focus: tuple[int, int] | None = None  # spans[a:b] this pass is about (a conveyor's group)
    # The audio stream decoded (`tracks.TrackChoice.as_dict()`), where its first sample sits
    # on the container's timeline (every time is shifted by it at the end), and the language
    # Whisper is told where the config leaves it to detection (the library's, the track's).
    track: Mapping[str, Any] | None = None
    offset: float = 0.0
    language_hint: str | None = None

    def grow(self, **fields: Any) -> JobState:
        return dataclasses.replace(self, **fields)

    @property
    def active_spans(self) -> tuple[SpeechSpan, ...]:
        """The spans a span-wise stage works on now: the focused group, or all of them."""
        return self.spans if self.focus is None else self.spans[self.focus[0]:self.focus[1]]

    @property
    def hearing(self) -> tuple[SpeechSpan, ...]:
        """What Whisper should hear: the wide windows, or the spans where none were cut."""
        return self.windows or self.spans

    @property
    def heard(self) -> Audio:
        """The audio recognisers listen to: the separated vocals when there are any."""
        audio = self.vocals or self.audio
        if audio is None:
            raise RuntimeError("no stage has decoded the audio yet")
        return audio

    def transcript(self, config: WhisperConfig) -> Transcript:
        """What the stages made, on the container's timeline."""
        language = self.language or expected_language(config) or "und"
        duration = self.audio.duration if self.audio is not None else 0.0
        return Transcript(language, duration, self.segments, self.cues, self.dropped,
                          self.track).shifted(self.offset)


def expected_language(cfg: WhisperConfig) -> str | None:
    """The subtitle language known before listening: translation is English, a forced
    language is itself, an English-only model is English; None means it will be detected."""
    if cfg.task == "translate":
        return "en"
    if cfg.language != "auto":
        return cfg.language
    return "en" if cfg.model.endswith(".en") else None


class ShiftedReporter:
    """A reporter whose drafts and cues go out `offset` seconds later: live subtitles on the
    container's timeline, as the written ones (audio that starts after the video)."""

    def __init__(self, inner: Reporter, offset: float) -> None:
        self._inner = inner
        self._offset = offset

    def progress(self, phase: str, fraction: float, overall: float | None, message: str = "",
                 details: Details | None = None) -> None:
        self._inner.progress(phase, fraction, overall, message, details)

    def draft(self, draft: Draft) -> None:
        self._inner.draft(later(draft, self._offset))

    def final(self, cue: Cue, replaces: tuple[str, ...], details: Details | None = None) -> None:
        self._inner.final(later(cue, self._offset), replaces, details)

    def degraded(self, component: str, reason: str) -> None:
        self._inner.degraded(component, reason)


class StageReport:
    """A stage's view of the reporter: its own progress in 0..1 mapped into its band."""

    def __init__(self, reporter: Reporter, phase: str, band: tuple[float, float],
                 side: bool = False) -> None:
        self._reporter = reporter
        self.phase = phase
        self._lo, self._hi = band
        self.side = side

    def progress(self, fraction: float, message: str = "", **details: Any) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        overall = None if self.side else self._lo + (self._hi - self._lo) * fraction
        self._reporter.progress(self.phase, fraction, overall, message, details or None)

    def aside(self, phase: str) -> StageReport:
        """A report for a stage working inside another (a conveyor's front stages): its events
        go out under its own name, while the job's phase and percent stay the outer stage's."""
        return StageReport(self._reporter, phase, (self._lo, self._hi), side=True)

    def draft(self, draft: Draft) -> None:
        self._reporter.draft(draft)

    def final(self, cue: Cue, replaces: tuple[str, ...], details: Details | None = None) -> None:
        self._reporter.final(cue, replaces, details)

    def degraded(self, reason: str) -> None:
        self._reporter.degraded(self.phase, reason)


@dataclass(frozen=True)
class StageContext:
    """What a stage may use besides the state: live settings, models, the cancel flag."""

    config: Config
    cache: ModelCache
    cancel: threading.Event
    report: StageReport

    def model(self, spec: ModelSpec) -> Any:
        return self.cache.model(spec)

    def check_cancel(self, doing: str) -> None:
        if self.cancel.is_set():
            raise Cancelled(f"stopped while {doing}")

    @contextmanager
    def inference(self, spec: ModelSpec) -> Iterator[None]:
        """Counts one inference of `spec` in the cache's figures (/status, /metrics)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.cache.record_inference(spec.key, time.perf_counter() - started)


class Stage(Protocol):
    """One step from a media file to cues. `weight` is its share of the progress bar."""

    name: str
    weight: float

    def models(self) -> tuple[ModelSpec, ...]: ...

    def __call__(self, state: JobState, ctx: StageContext) -> JobState: ...


class Skip:
    """The stand-in for an optional stage that is off: no models, no progress, no change."""

    weight = 0.0

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why

    def models(self) -> tuple[ModelSpec, ...]:
        return ()

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        return state


def bands(stages: list[Stage]) -> list[tuple[float, float]]:
    """Each stage's (start, end) share of 0..1, from the weights."""
    total = sum(s.weight for s in stages) or 1.0
    out, at = [], 0.0
    for stage in stages:
        end = at + stage.weight / total
        out.append((at, min(end, 1.0)))
        at = end
    return out
