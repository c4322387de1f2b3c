"""Cue edges on the voice: snap each cue's start and end to where speech really begins and ends.

Whisper's word times (tiny.en on synthetic speech: first words 0.2–0.5 s early or late, often
stretched over the pause before them) are good enough to know which words form a cue, not to
time it. Silero's speech spans are accurate to a VAD window (32 ms) wherever there is a real
pause, so a cue's start moves to the nearest speech onset within reach of its first word (or
inside it), and its end to the nearest speech offset (plus a small tail) within reach of its
last word (or inside it). Inside continuous speech there is no edge to snap to, and the word
times stand.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from ..domain import SpeechSpan, Word

REACH_SECONDS = 0.5  # how far from Whisper's word time an edge may be and still be its edge
TAIL_SECONDS = 0.15  # subtitles linger a little after the voice stops


def unpadded(span: SpeechSpan, sample_rate: int, pad_seconds: float,
             total_samples: int) -> tuple[float, float]:
    """A VAD span's (start, end) in seconds with the VAD's padding taken off, not past the
    file's ends: where the voice really is."""
    start = span.start / sample_rate + (pad_seconds if span.start > 0 else 0.0)
    end = span.end / sample_rate - (pad_seconds if span.end < total_samples else 0.0)
    return start, max(start, end)


@dataclass(frozen=True)
class SpeechEdges:
    """True onsets and offsets of speech (the VAD's padding taken off), in seconds."""

    onsets: tuple[float, ...]
    offsets: tuple[float, ...]
    speech: tuple[tuple[float, float], ...]  # every span, padding off (not past the file ends)

    @classmethod
    def from_spans(cls, spans: Sequence[SpeechSpan], sample_rate: int, pad_seconds: float,
                   total_samples: int) -> SpeechEdges:
        """Edges only where the VAD saw a real pause: spans that touch (a pause shorter than
        twice the padding, split in the middle) or reach the file's ends say nothing exact."""
        onsets, offsets, speech = [], [], []
        for i, span in enumerate(spans):
            start, end = unpadded(span, sample_rate, pad_seconds, total_samples)
            speech.append((start, end))
            touches_before = i > 0 and spans[i - 1].end >= span.start
            touches_after = i + 1 < len(spans) and spans[i + 1].start <= span.end
            if span.start > 0 and not touches_before:
                onsets.append(start)
            if span.end < total_samples and not touches_after:
                offsets.append(end)
        return cls(tuple(sorted(onsets)), tuple(sorted(offsets)), tuple(speech))

    @classmethod
    def from_voice(cls, voice: Sequence[SpeechSpan], sample_rate: int,
                   total_samples: int) -> SpeechEdges:
        """Edges from where the voice is (the VAD's spans before padding): each start after a
        silence is an onset and each end before one an offset, however short the pause the
        VAD kept; a span cut for length (no silence between) and the file's ends say nothing."""
        onsets, offsets, speech = [], [], []
        for i, span in enumerate(voice):
            start, end = span.start / sample_rate, span.end / sample_rate
            speech.append((start, end))
            if span.start > 0 and (i == 0 or voice[i - 1].end < span.start):
                onsets.append(start)
            if span.end < total_samples and (i + 1 == len(voice) or
                                             voice[i + 1].start > span.end):
                offsets.append(end)
        return cls(tuple(onsets), tuple(offsets), tuple(speech))

    @classmethod
    def of(cls, voice: Sequence[SpeechSpan], spans: Sequence[SpeechSpan], sample_rate: int,
           pad_seconds: float, total_samples: int) -> SpeechEdges:
        """From the voice where the VAD gave it, else from padded spans (set by hand)."""
        if voice:
            return cls.from_voice(voice, sample_rate, total_samples)
        return cls.from_spans(spans, sample_rate, pad_seconds, total_samples)

    def edges(self, words: Sequence[Word]) -> tuple[float, float]:
        """(start, end) for a cue made of `words`."""
        first, last = words[0], words[-1]
        onset = self._onset_of(first)
        start = onset if onset is not None else first.start
        offset = self._offset_of(last)
        end = offset + TAIL_SECONDS if offset is not None else last.end
        return start, max(end, start)

    def pause_between(self, previous: Word, word: Word) -> bool:
        """A real pause (a speech onset heard by the VAD) starts at `word`: a cue break even
        when Whisper wrote no full stop and its word times show no gap."""
        onset = self._onset_of(word)
        return onset is not None and onset > previous.start and \
            onset > previous.end - REACH_SECONDS

    def _onset_of(self, word: Word) -> float | None:
        """The speech onset that starts `word`: near its start, or inside it (Whisper stretches
        a word over the pause before it, starting it up to half a second early)."""
        near = _nearest(self.onsets, word.start, upper=word.end)
        if near is not None:
            return near
        i = bisect.bisect_left(self.onsets, word.start)
        inside = self.onsets[i] if i < len(self.onsets) else None
        return inside if inside is not None and inside < word.end else None


    def _offset_of(self, word: Word) -> float | None:
        """The speech offset that ends `word`: near its end, or inside it (Whisper also
        stretches a last word over the pause after it)."""
        near = _nearest(self.offsets, word.end, lower=word.start)
        if near is not None:
            return near
        i = bisect.bisect_left(self.offsets, word.end)
        inside = self.offsets[i - 1] if i > 0 else None
        return inside if inside is not None and inside > word.start else None


def _nearest(points: tuple[float, ...], t: float, lower: float | None = None,
             upper: float | None = None) -> float | None:
    i = bisect.bisect_left(points, t)
    best = None
    for p in points[max(0, i - 1):i + 1]:
        if abs(p - t) > REACH_SECONDS:
            continue
        if (lower is not None and p <= lower) or (upper is not None and p >= upper):
            continue
        if best is None or abs(p - t) < abs(best - t):
            best = p
    return best
