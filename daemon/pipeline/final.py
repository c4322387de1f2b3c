"""Finals over groups of speech spans, after a draft engine: `dual`, `patch` and `sensevoice`.

Each group (spans up to `vad.max_chunk_seconds` of speech) is decided by a policy: Whisper
(`dual`: always; `patch`: only where a draft is doubtful; `sensevoice`: never), prompted with the
tail of the previous final text and keywords from the group's drafts (never a whole draft
sentence, which Whisper would copy). A Whisper segment that fails a hallucination guard gives
way to the draft for that time, and well-heard words take the draft's timing where Whisper's is
poor (`textalign`); where Whisper gives no text at all for speech the VAD found and the draft
engine heard, the draft stands too. Each final says where its text came from and how well the
engines agreed.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from ..config import Config
from ..domain import Audio, Draft, Segment, SpeechSpan, Word
from ..models import ModelSpec
from .align import SpeechEdges
from .base import JobState, StageContext
from .finals import Finals
from .guards import SegmentGuard, compression_ratio, is_phantom_phrase
from .textalign import CJK, CJK_CHAR, carry_times
from .transcribe import WhisperModel, style_limits, transcribe

POLICIES = {"dual": "always", "patch": "doubtful", "sensevoice": "never"}
PROMPT_TAIL_CHARS = 200  # of the previous final text
MAX_KEYWORDS = 8
MAX_DRAFT_COMPRESSION = 2.4


def group_spans(spans: Sequence[SpeechSpan], max_samples: int) -> list[list[SpeechSpan]]:
    """Consecutive spans whose speech adds up to at most `max_samples` (one span may exceed)."""
    groups: list[list[SpeechSpan]] = []
    size = 0
    for span in spans:
        length = span.end - span.start
        if groups and size + length <= max_samples:
            groups[-1].append(span)
            size += length
        else:
            groups.append([span])
            size = length
    return groups


def heard_for(group: Sequence[SpeechSpan], spans: Sequence[SpeechSpan],
              windows: Sequence[SpeechSpan], total: int) -> list[SpeechSpan]:
    """What Whisper hears for a group of fine spans: the wide windows over it, cut halfway
    into the pauses to the neighbouring groups (no audio is heard twice); the group itself
    where no windows were cut."""
    if not windows:
        return list(group)
    first = bisect.bisect_left([s.start for s in spans], group[0].start)
    last = first + len(group) - 1
    lo = (spans[first - 1].end + group[0].start) // 2 if first > 0 else 0
    hi = (group[-1].end + spans[last + 1].start) // 2 if last + 1 < len(spans) else total
    return [SpeechSpan(max(w.start, lo), min(w.end, hi)) for w in windows
            if w.end > lo and w.start < hi]


def drafts_within(drafts: Sequence[Draft], start: float, end: float) -> list[Draft]:
    return [d for d in drafts if d.start < end and start < d.end]


def draft_words(draft: Draft) -> tuple[Word, ...]:
    """A draft's text as timed words (spread evenly over its span: all a span-level engine
    knows); CJK text becomes one word per character, as Whisper writes it."""
    pieces: list[str] = []
    for chunk in draft.text.split():
        if CJK_CHAR.search(chunk):
            pieces += _cjk_pieces(chunk)
        else:
            pieces.append(f" {chunk}")
    step = max(draft.end - draft.start, 0.0) / max(len(pieces), 1)
    return tuple(Word(p, draft.start + k * step, draft.start + (k + 1) * step,
                      draft.confidence) for k, p in enumerate(pieces))


def _cjk_pieces(chunk: str) -> list[str]:
    """CJK characters one by one and runs of other letters whole, each with the punctuation
    that follows it (as Whisper writes mixed text: no spaces)."""
    out: list[str] = []
    for piece in re.findall(rf"[{CJK}]|(?:(?![{CJK}])[^\W_])+|\W", chunk):
        if out and not piece[0].isalnum() and not CJK_CHAR.match(piece):
            out[-1] += piece
        else:
            out.append(piece)
    return out


def keywords(drafts: Sequence[Draft]) -> list[str]:
    """Distinct longer words of the drafts, for Whisper's prompt (names, rare words)."""
    seen: list[str] = []
    for draft in drafts:
        for word in re.findall(r"[^\W\d_][\w'-]{3,}", draft.text):
            if word.lower() not in {w.lower() for w in seen} and not CJK_CHAR.search(word):
                seen.append(word)
    return seen[:MAX_KEYWORDS]


def doubtful(drafts: Sequence[Draft], spans: Sequence[SpeechSpan], sample_rate: int,
             min_confidence: float) -> bool:
    """Patch mode's test: does this group need Whisper?"""
    for span in spans:
        if not drafts_within(drafts, span.start / sample_rate, span.end / sample_rate):
            return True  # speech the draft engine gave no text for
    return any(d.confidence < min_confidence or compression_ratio(d.text) >
               MAX_DRAFT_COMPRESSION or is_phantom_phrase(d.text) for d in drafts)


class SpanFinalStage:
    name = "transcribe"
    weight = 82.0

    def __init__(self, config: Config, workers: int, mode: str) -> None:
        self._policy = POLICIES[mode]
        self._whisper = WhisperModel(config, workers)

    def models(self) -> tuple[ModelSpec, ...]:
        return () if self._policy == "never" else (self._whisper.spec,)

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        if not state.spans:
            return state
        run = self.open(state, ctx)
        groups = group_spans(state.spans, max_group(state, ctx))
        for n, group in enumerate(groups):
            ctx.check_cancel("transcribing")
            run.group(group)
            ctx.report.progress((n + 1) / len(groups))
        return run.close()

    def open(self, state: JobState, ctx: StageContext) -> GroupRun:
        """One job's pass, group by group (a conveyor feeds it as its drafts arrive)."""
        return GroupRun(self, state, ctx)

    def whisper_needed(self, drafts: Sequence[Draft], spans: Sequence[SpeechSpan],
                       sample_rate: int, ctx: StageContext) -> bool:
        if self._policy == "always":
            return True
        if self._policy == "never":
            return False
        return doubtful(drafts, spans, sample_rate, ctx.config.pipeline.patch_min_confidence)

    @property
    def spec(self) -> ModelSpec:
        return self._whisper.spec


def max_group(state: JobState, ctx: StageContext) -> int:
    return int(ctx.config.vad.max_chunk_seconds * state.heard.sample_rate)


class GroupRun:
    """One job's pass over its span groups: the cue stream, the text so far, the segments."""

    def __init__(self, stage: SpanFinalStage, state: JobState, ctx: StageContext) -> None:
        self._stage, self._state, self._ctx = stage, state, ctx
        self._audio: Audio = state.heard
        pad = ctx.config.vad.speech_pad_ms / 1000
        self._edges = SpeechEdges.of(state.voice, state.spans, self._audio.sample_rate, pad,
                                     self._audio.length)
        self._guard = SegmentGuard(self._edges.speech)
        self._finals = Finals(style_limits(ctx.config), self._audio.duration, self._edges,
                              ctx.report, state.drafts)
        self._segments: list[Segment] = []
        self._drafts: tuple[Draft, ...] = state.drafts
        self._languages: dict[str, float] = {}
        self._model: Any = None

    def group(self, spans: Sequence[SpeechSpan], new_drafts: Sequence[Draft] = ()) -> None:
        """Finals for one group; `new_drafts` are drafts made for it since the run opened."""
        self._finals.link(new_drafts)
        self._drafts += tuple(new_drafts)
        sr = self._audio.sample_rate
        drafts = drafts_within(self._drafts, spans[0].start / sr, spans[-1].end / sr)
        if self._stage.whisper_needed(drafts, spans, sr, self._ctx):
            self._whisper(spans, drafts)
        else:
            for draft in drafts:
                self._keep(_draft_segment(draft), {"source": "draft", "engine": draft.engine})

    def _whisper(self, spans: Sequence[SpeechSpan], drafts: list[Draft]) -> None:
        ctx = self._ctx
        if self._model is None:
            self._model = ctx.model(self._stage.spec)
        with ctx.inference(self._stage.spec):
            heard = heard_for(spans, self._state.spans, self._state.windows,
                              self._audio.length)
            result = transcribe(self._model, self._audio, heard, ctx.config.whisper, ctx.cancel,
                                prompt=self._prompt(drafts), voice=self._state.voice,
                                hint=self._state.language_hint)
        speech = sum(s.end - s.start for s in spans) / self._audio.sample_rate
        self._languages[result.language] = self._languages.get(result.language, 0.0) + speech
        kept = [k for seg in result.segments for k in self._checked(seg, drafts)]
        for draft in drafts:  # speech the VAD found and the draft heard, Whisper did not
            if not any(s.start < draft.end and draft.start < s.end for s, _ in kept):
                kept.append((_draft_segment(draft), {
                    "source": "draft", "engine": draft.engine,
                    "whisper_dropped": "Whisper gave no text here"}))
        for segment, details in sorted(kept, key=lambda k: k[0].start):
            self._keep(segment, details)

    def _checked(self, segment: Segment,
                 drafts: list[Draft]) -> list[tuple[Segment, dict[str, Any]]]:
        """A Whisper segment as kept (its words retimed where the draft agrees), or the drafts
        that stand in for it when it fails a guard, or nothing."""
        under = drafts_within(drafts, segment.start, segment.end)
        reason = self._guard.reason_to_drop(segment)
        if reason is None:
            text = " ".join(d.text for d in under)
            words, score = (carry_times(segment.words, text, under[0].start, under[-1].end)
                            if under else (segment.words, None))
            return [(dataclasses.replace(segment, words=words),
                     {"source": "whisper", "alignment_score": _rounded(score)})]
        return [(_draft_segment(d), {"source": "draft", "engine": d.engine,
                                     "whisper_dropped": reason}) for d in under]

    def _keep(self, segment: Segment, details: dict[str, Any]) -> None:
        segment = dataclasses.replace(segment, index=len(self._segments))
        self._segments.append(segment)
        self._finals.feed(segment.words, details)

    def _prompt(self, drafts: Sequence[Draft]) -> str:
        previous = " ".join(s.text for s in self._segments)[-PROMPT_TAIL_CHARS:]
        words = keywords(drafts)
        return " ".join(p for p in (previous, ", ".join(words)) if p)

    def close(self, state: JobState | None = None) -> JobState:
        """The job's state with the finals (and, from a conveyor, what its front stages made)."""
        self._finals.flush()
        state = state or self._state
        language = (max(self._languages, key=lambda k: self._languages[k])
                    if self._languages else state.language)
        return state.grow(segments=tuple(self._segments), cues=tuple(self._finals.cues),
                          language=language, drafts=self._drafts,
                          dropped=tuple(self._guard.dropped))


def _draft_segment(draft: Draft) -> Segment:
    """A draft as a final segment (indexed when kept)."""
    return Segment(0, draft.text, draft.start, draft.end, draft_words(draft))


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 3)
