"""Vocal separation with Demucs, only where a music bed or noise would hurt recognition.

`auto` asks the music/noise gate about every speech span (with SenseVoice's BGM tags when drafts
ran first) and sends only the flagged stretches through Demucs; `always` sends all speech. The
vocals replace the mix in place for those stretches only (the mix is not needed again, and one
copy of a film's audio is enough), Demucs working on one bounded block at a time. A spooled
film is never loaded whole for it: each stretch is read, separated and put back (`Audio.editing`),
and a stretch is at most `REGION_SECONDS` long. A model that cannot be had does not fail the job:
it goes on unseparated, and the daemon says so once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..config import Config, SeparationConfig
from ..domain import Audio, Draft, SpanVerdict, SpeechSpan
from ..errors import ModelUnavailable
from ..models import ModelSpec
from .base import JobState, StageContext
from .gate import AudioSlices, judge

CONTEXT_SECONDS = 0.5  # audio kept either side of a flagged span, so Demucs hears the bed
# The longest stretch held at once (38 MB of float32): flagged spans that run on for longer (a
# musical, `mode = always` on a talk show) are separated in stretches cut between two spans.
REGION_SECONDS = 600.0
# A model that could not be had is not asked for again before this: an offline download costs
# tens of seconds of retries, and one `signal.degraded` is the whole story until a restart.
RETRY_LOAD_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class Region:
    """A stretch of audio (samples) Demucs will process: flagged spans merged with context."""

    start: int
    end: int


def regions(spans: Sequence[SpeechSpan], verdicts: Sequence[SpanVerdict], sample_rate: int,
            limits: tuple[int, int]) -> list[Region]:
    """Flagged spans with context (never past `limits`: the speech of other groups, which the
    final engine may be reading), overlapping ones merged, in order. A merge that would pass
    REGION_SECONDS starts a new region instead, where the last one ends (no sample twice)."""
    pad, most = int(CONTEXT_SECONDS * sample_rate), int(REGION_SECONDS * sample_rate)
    out: list[Region] = []
    for span, verdict in zip(spans, verdicts, strict=True):
        if not verdict.separate:
            continue
        start, end = max(limits[0], span.start - pad), min(limits[1], span.end + pad)
        if not out or start > out[-1].end:
            out.append(Region(start, end))
        elif max(out[-1].end, end) - out[-1].start <= most:
            out[-1] = Region(out[-1].start, max(out[-1].end, end))
        elif end > out[-1].end:
            out.append(Region(out[-1].end, end))
    return out


def bgm_tags(spans: Sequence[SpeechSpan], drafts: Sequence[Draft], sample_rate: int,
             focus: tuple[int, int] | None = None) -> list[bool]:
    """Per span: did a draft engine tag background music in it? Only the spans in `focus` are
    looked at (a conveyor's group: on a film, checking every span per group is quadratic)."""
    first, last = focus or (0, len(spans))
    if first >= last:
        return [False] * len(spans)
    lo, hi = spans[first].start / sample_rate, spans[last - 1].end / sample_rate
    tagged = [(d.start, d.end) for d in drafts if "BGM" in d.events and d.start < hi and lo < d.end]
    return [first <= i < last and any(a < s.end / sample_rate and s.start / sample_rate < b
                                      for a, b in tagged) for i, s in enumerate(spans)]


class SeparationStage:
    name = "separation"
    weight = 15.0

    def __init__(self, config: Config) -> None:
        self._cfg: SeparationConfig = config.separation
        self._lock = threading.Lock()
        self._unavailable: tuple[float, str] | None = None  # (until, why)

    @cached_property
    def spec(self) -> ModelSpec:
        from .demucs_engine import demucs_bytes, load_demucs, release_demucs

        cfg = self._cfg
        return ModelSpec("demucs", ("demucs", cfg.model, cfg.repo, cfg.device),
                         lambda: load_demucs(cfg.model, cfg.repo, cfg.device),
                         lambda: demucs_bytes(cfg.model, cfg.repo), release_demucs)

    def models(self) -> tuple[ModelSpec, ...]:
        return (self.spec,)

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        audio = state.heard
        verdicts = self._verdicts(state, audio)
        todo = regions(state.active_spans, verdicts, audio.sample_rate, _limits(state, audio))
        if not todo:
            ctx.report.progress(1.0, "no separation needed", status="skipped",
                                reason=_why_skipped(verdicts))
            return state.grow(music=state.music + verdicts)
        model = self._model(ctx)
        if model is None:
            ctx.report.progress(1.0, "separation unavailable", status="skipped",
                                reason="the separation model cannot be had")
            return state.grow(music=state.music + verdicts)
        return self._separate(state, ctx, model, audio, todo, verdicts)

    def _verdicts(self, state: JobState, audio: Audio) -> tuple[SpanVerdict, ...]:
        if self._cfg.mode == "always":
            sr = audio.sample_rate
            return tuple(SpanVerdict(s.start / sr, s.end / sr, True, 1.0,
                                     "separation.mode = always") for s in state.active_spans)
        bgm = bgm_tags(state.spans, state.drafts, audio.sample_rate, state.focus)
        return judge(AudioSlices(audio), audio.sample_rate, state.spans, bgm, focus=state.focus)

    def _separate(self, state: JobState, ctx: StageContext, model: Any, audio: Audio,
                  todo: list[Region], verdicts: tuple[SpanVerdict, ...]) -> JobState:
        started, total = time.perf_counter(), sum(r.end - r.start for r in todo)
        done = 0
        for region in todo:
            with ctx.inference(self.spec):
                separate_region(model, audio, region, ctx.cancel, self._cfg.block_seconds)
            done += region.end - region.start
            ctx.report.progress(done / total)
        spent = time.perf_counter() - started
        flagged = [v for v in verdicts if v.separate]
        ctx.report.progress(1.0, f"{len(flagged)} spans separated in {spent:.1f} s",
                            status="done", spans=len(flagged), seconds=round(spent, 3),
                            audio_seconds=round(total / audio.sample_rate, 3),
                            reason=flagged[0].reason)
        return state.grow(music=state.music + verdicts, vocals=audio)

    def _model(self, ctx: StageContext) -> Any:
        """The Demucs model, or None (said once) when it cannot be had."""
        with self._lock:
            if self._unavailable and time.monotonic() < self._unavailable[0]:
                ctx.report.degraded(self._unavailable[1])
                return None
        try:
            return ctx.model(self.spec)
        except ModelUnavailable as exc:
            why = f"{exc}; jobs go on without separation"
            with self._lock:
                self._unavailable = (time.monotonic() + RETRY_LOAD_SECONDS, why)
            ctx.report.degraded(why)
            return None


def separate_region(model: Any, audio: Audio, region: Region,
                    cancel: threading.Event | None, block_seconds: float) -> None:
    """The vocals of `region` put over its mix in `audio`: read, separated in place, put back
    (a spooled film holds one region in memory, never the whole)."""
    from .demucs_engine import separate_in_place

    with audio.editing(region.start, region.end) as samples:
        separate_in_place(model, samples, cancel, block_seconds)


def _limits(state: JobState, audio: Audio) -> tuple[int, int]:
    """Where this pass may write: between the speech before and after its group."""
    if state.focus is None:
        return 0, audio.length
    first, last = state.focus
    before = state.spans[first - 1].end if first > 0 else 0
    after = state.spans[last].start if last < len(state.spans) else audio.length
    return before, after


def _why_skipped(verdicts: Sequence[SpanVerdict]) -> str:
    if not verdicts:
        return "no speech"
    return verdicts[0].reason if len(verdicts) == 1 else \
        f"{len(verdicts)} spans clean; first: {verdicts[0].reason}"
