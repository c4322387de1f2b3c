"""The final transcription: faster-whisper over the VAD's speech windows, with word timestamps.

The windows (cut wide: Whisper needs context) are concatenated and transcribed, then times are
mapped back to the source, exactly as faster-whisper does with `vad_filter=True`, so the cost
matches bare use; a long file goes in groups of a few minutes of speech (`hearing_groups`), so
memory stays that of a group, not of the film. The segment generator is lazy: it is consumed
here, in the worker thread, never on the event loop, and a cancel request is honoured between
segments.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..config import Config, WhisperConfig
from ..domain import Audio, Draft, Segment, SpeechSpan, Word
from ..errors import Cancelled
from ..logs import log_context
from ..models import ModelSpec, WhisperSpec, load_whisper, model_bytes, trim_heap, whisper_spec
from ..subtitles import StyleLimits
from .align import SpeechEdges
from .base import JobState, StageContext
from .features import streamed
from .finals import Finals
from .guards import SegmentGuard

log = logging.getLogger(__name__)

SegmentFn = Callable[[Segment], None]
# Speech per Whisper call. The model's features are computed in bounded memory (features.py:
# about 0.2 MB per second of speech at the peak with the group's audio, against 0.7 MB with
# faster-whisper's own extractor), so a group of 10 minutes holds about 120 MB whatever the
# length of the film. Every group boundary ends in a partly filled 30 s window: at 240 s, a
# 20-minute film took 42 windows where one call over all its speech takes 34 (+5 % CPU); at
# 600 s it takes 34 (bench notes in docs/BENCHMARKS.md).
GROUP_SECONDS = 600.0
AUTO_CUDA_BATCH = 8  # whisper.batch_size = 0 on a GPU: the library's own default


@dataclass(frozen=True)
class WhisperResult:
    language: str
    segments: list[Segment]


def style_limits(config: Config) -> StyleLimits:
    o = config.output
    return StyleLimits(max_line_chars=o.max_line_chars, max_lines=o.max_lines,
                       min_cue_seconds=o.min_cue_seconds, max_cue_seconds=o.max_cue_seconds,
                       max_cps=o.max_cps)


def segment_draft(segment: Segment) -> Draft:
    """Whisper's own segment as the draft, when no faster engine drafts for it."""
    return Draft(str(segment.index), segment.text, segment.start, segment.end,
                 round(math.exp(segment.avg_logprob), 3))


class WhisperModel:
    """The Whisper model of a config, resolved when first asked for (at start-up, by
    `Pipeline.prepare`), so a model that cannot be had stops the start rather than jobs."""

    def __init__(self, config: Config, workers: int) -> None:
        self._config = config
        self._workers = workers

    @cached_property
    def resolved(self) -> WhisperSpec:
        return whisper_spec(self._config.whisper, self._config.models, self._workers)

    @cached_property
    def spec(self) -> ModelSpec:
        resolved = self.resolved
        return ModelSpec("whisper", resolved.key, lambda: load_whisper(resolved),
                         lambda: model_bytes(resolved.path))


class WhisperStage:
    """The final stream in `whisper` mode: one Whisper call over the wide speech windows, with
    word timestamps, as bare faster-whisper with its VAD would; its segments are the drafts.
    Cue edges and the guards go by the fine spans."""

    name = "transcribe"
    weight = 82.0

    def __init__(self, config: Config, workers: int) -> None:
        self._whisper = WhisperModel(config, workers)

    @property
    def spec(self) -> ModelSpec:
        return self._whisper.spec

    def models(self) -> tuple[ModelSpec, ...]:
        return (self.spec,)

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        if not state.spans:  # silence or music only: Whisper is not asked
            return state
        audio = state.heard
        pad = ctx.config.vad.speech_pad_ms / 1000
        edges = SpeechEdges.of(state.voice, state.spans, audio.sample_rate, pad,
                               audio.length)
        finals = Finals(style_limits(ctx.config), audio.duration, edges, ctx.report,
                        state.drafts)

        def on_segment(seg: Segment) -> None:
            with log_context(chunk_id=seg.index):
                finals.draft(segment_draft(seg))
                finals.feed(seg.words)
                ctx.report.progress(seg.end / audio.duration if audio.duration else 1.0)

        model = ctx.model(self.spec)
        guard = SegmentGuard(edges.speech)
        with ctx.inference(self.spec):
            result = transcribe(model, audio, state.hearing, ctx.config.whisper, ctx.cancel,
                                on_segment, guard, voice=state.voice, hint=state.language_hint)
        finals.flush()
        return state.grow(segments=tuple(result.segments), cues=tuple(finals.cues),
                          language=result.language, dropped=tuple(guard.dropped))


def transcribe(model: Any, audio: Audio, spans: Sequence[SpeechSpan], cfg: WhisperConfig,
               cancel: threading.Event | None = None,
               on_segment: SegmentFn | None = None,
               guard: SegmentGuard | None = None, prompt: str | None = None,
               voice: Sequence[SpeechSpan] = (),
               group_seconds: float = GROUP_SECONDS,
               hint: str | None = None) -> WhisperResult:
    """Whisper over `spans` of `audio`, a group at a time (`hearing_groups`), the segments'
    times mapped back to the source. The language is `whisper.language`; left to detection,
    it is the `hint` (the library's language, the audio track's tag) for a multilingual
    model, else detected once, on the first group, as one call over all the speech would,
    and later groups are told it."""
    model = streamed(model)  # the model's features in bounded memory (features.py)
    language = cfg.language if cfg.language != "auto" else _usable(hint, model)
    segments: list[Segment] = []
    found: str | None = None
    index = 0  # Whisper's own segment numbers, dropped ones included, across the groups
    for group in hearing_groups(spans, voice, audio.sample_rate, group_seconds):
        if cancel is not None and cancel.is_set():
            raise Cancelled("stopped while transcribing")
        found, index = _transcribe_group(model, audio, group, cfg, language or found, cancel,
                                         (segments, index), on_segment, guard, prompt)
    detected = found or language or "en"
    return WhisperResult("en" if cfg.task == "translate" else detected, segments)


def _transcribe_group(model: Any, audio: Audio, group: Sequence[SpeechSpan],
                      cfg: WhisperConfig, language: str | None,
                      cancel: threading.Event | None, into: tuple[list[Segment], int],
                      on_segment: SegmentFn | None, guard: SegmentGuard | None,
                      prompt: str | None) -> tuple[str, int]:
    """One Whisper call over a group's concatenated speech: its kept segments appended to
    `into` (numbered on from its index); gives the language heard and the next index."""
    from faster_whisper.transcribe import restore_speech_timestamps

    segments, number = into
    chunks = [{"start": s.start, "end": s.end} for s in group]
    # One concatenation (faster-whisper's collect_chunks re-concatenates per chunk: quadratic
    # on a film with thousands of speech spans).
    speech = gathered(audio, group)
    options = {"language": language, "task": cfg.task, "beam_size": cfg.beam_size,
               "word_timestamps": True, "condition_on_previous_text": False,
               "vad_filter": False, "initial_prompt": prompt or None}
    batch = batch_size(cfg, model)
    if batch > 1:
        raw, info = _batched(model, speech, group, batch, options)
    else:
        raw, info = model.transcribe(speech, **options)
    del speech  # the features are made: the group's audio would only sit in memory
    trim_heap()  # and what making them freed goes back too, not kept for the decoding
    for seg in restore_speech_timestamps(raw, chunks, audio.sample_rate):
        if cancel is not None and cancel.is_set():
            raise Cancelled("stopped while transcribing")
        segment = _segment(number, seg)
        number += 1
        if not segment.words:
            continue
        reason = guard.reason_to_drop(segment) if guard else None
        if reason:
            log.info("dropped segment %d %r: %s", segment.index, segment.text, reason)
            continue
        segments.append(segment)
        if on_segment:
            on_segment(segment)
    trim_heap()  # the decoder's working memory: freed, but resident until handed back
    return str(info.language), number


def gathered(audio: Audio, group: Sequence[SpeechSpan]) -> np.ndarray:
    """The group's spans end to end in one array, filled span by span: never a list of the
    pieces and their concatenation alive together (two copies of ten minutes of speech)."""
    out = np.empty(sum(s.end - s.start for s in group), np.float32)
    at = 0
    for span in group:
        piece = audio.read(span.start, span.end)
        out[at:at + len(piece)] = piece
        at += len(piece)
    return out[:at]


def _usable(hint: str | None, model: Any) -> str | None:
    """A language hint an English-only model cannot take is no hint."""
    multilingual = getattr(getattr(model, "model", None), "is_multilingual", True)
    return hint if multilingual else None


def batch_size(cfg: WhisperConfig, model: Any) -> int:
    """`whisper.batch_size`, with 0 resolved: batched on CUDA, one window at a time on CPU."""
    if cfg.batch_size:
        return cfg.batch_size
    device = getattr(getattr(model, "model", None), "device", "cpu")  # CTranslate2's own
    return AUTO_CUDA_BATCH if device == "cuda" else 1


def _batched(model: Any, speech: np.ndarray, group: Sequence[SpeechSpan], batch: int,
             options: dict[str, Any]) -> tuple[Any, Any]:
    """The group through faster-whisper's BatchedInferencePipeline: its windows packed into
    clips of up to 30 s of the concatenated speech (as the library packs its own VAD's), so
    each batch item is a full window's worth, not a 2 s scrap padded to 30 s. Without
    timestamp tokens, as the library runs it by default: with them, a clip's last sentence
    was lost now and then (a whole sentence in 44 s of speech here); words keep their times
    from the word alignment either way, and each clip comes back as one segment."""
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(model)
    return pipeline.transcribe(speech, batch_size=batch, without_timestamps=True,
                               clip_timestamps=batch_clips(group), **options)


def batch_clips(group: Sequence[SpeechSpan], sample_rate: int = 16000,
           longest: float = 30.0) -> list[dict[str, float]]:
    """Consecutive stretches of the group's concatenated speech, each at most `longest` s
    (one longer window is a clip of its own, cut into 30 s pieces)."""
    clips: list[dict[str, float]] = []
    at = 0.0
    for span in group:
        length = (span.end - span.start) / sample_rate
        while length > 0:
            piece = min(length, longest)
            if clips and clips[-1]["end"] - clips[-1]["start"] + piece <= longest:
                clips[-1]["end"] = at + piece
            else:
                clips.append({"start": at, "end": at + piece})
            at += piece
            length -= piece
    return clips


def hearing_groups(spans: Sequence[SpeechSpan], voice: Sequence[SpeechSpan],
                   sample_rate: int,
                   group_seconds: float = GROUP_SECONDS) -> list[list[SpeechSpan]]:
    """The spans Whisper hears, in consecutive groups of at most `group_seconds` of speech:
    what one Whisper call takes. A span longer than that (a film's dialogue with no 2 s pause)
    is cut in the middle of a pause of the voice, or hard where the voice never pauses."""
    limit = int(group_seconds * sample_rate)
    groups: list[list[SpeechSpan]] = []
    size = limit + 1
    for piece in (p for span in spans for p in _cut(span, voice, limit)):
        length = piece.end - piece.start
        if size + length > limit:
            groups.append([])
            size = 0
        groups[-1].append(piece)
        size += length
    return groups


def _cut(span: SpeechSpan, voice: Sequence[SpeechSpan], limit: int) -> list[SpeechSpan]:
    """`span` in pieces of at most `limit` samples, cut at the middles of the voice's pauses."""
    pauses = [(a.end + b.start) // 2 for a, b in zip(voice, voice[1:], strict=False)
              if span.start < a.end and b.start < span.end]
    pieces, start = [], span.start
    while span.end - start > limit:
        fits = [p for p in pauses if start < p <= start + limit]
        cut = fits[-1] if fits else start + limit
        pieces.append(SpeechSpan(start, cut))
        start = cut
    pieces.append(SpeechSpan(start, span.end))
    return pieces


def _segment(index: int, seg: Any) -> Segment:
    words = tuple(Word(text=w.word, start=float(w.start), end=float(w.end),
                       probability=float(w.probability)) for w in (seg.words or ()))
    return Segment(index=index, text=seg.text.strip(), start=float(seg.start), end=float(seg.end),
                   words=words, avg_logprob=float(seg.avg_logprob),
                   no_speech_prob=float(seg.no_speech_prob))
