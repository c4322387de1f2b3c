"""Plain data that flows through the pipeline; no I/O here, so every stage can be tested alone."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

SAMPLE_RATE = 16000


class Audio:
    """Decoded 16 kHz mono float32 samples of one input, held in memory.

    Stages that can work piece by piece use `length`, `read` and `blocks`, never `samples`,
    so a spooled file (`pipeline.spool.SpooledAudio`: a film kept on disk, not in memory)
    is never loaded whole by them."""

    def __init__(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        self._samples = samples
        self.sample_rate = sample_rate

    @property
    def samples(self) -> np.ndarray:
        """All of it at once (stages that need the whole array: the gate, separation)."""
        return self._samples

    @property
    def length(self) -> int:
        return len(self._samples)

    @property
    def duration(self) -> float:
        return self.length / self.sample_rate

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) as float32."""
        return self.samples[start:end]

    @contextmanager
    def editing(self, start: int, end: int) -> Iterator[np.ndarray]:
        """Samples [start, end) to change in place (separation puts the vocals over the mix);
        the changes are the audio's once the block ends without an error."""
        yield self.samples[start:end]

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        """The whole audio in consecutive pieces of at most `size` samples."""
        for start in range(0, self.length, size):
            yield self.read(start, min(start + size, self.length))

    def close(self) -> None:
        """Release what holds the samples (nothing for audio in memory)."""


@dataclass(frozen=True)
class SpeechSpan:
    """A stretch of speech found by the VAD, in samples of the source audio."""

    start: int
    end: int


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float = 1.0


@dataclass(frozen=True)
class Segment:
    """One decoded Whisper segment, with times already mapped back to the source."""

    index: int
    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class Draft:
    """A fast, provisional subtitle shown until the final cues that cover its time replace it.

    `temp_id` is local to the job (the reporter prefixes the job id). With no draft engine,
    each Whisper segment is published as a draft.
    """

    temp_id: str
    text: str
    start: float
    end: float
    confidence: float = 1.0
    engine: str = "whisper"  # or "sensevoice"
    language: str | None = None  # what the draft engine heard, where it says
    events: tuple[str, ...] = ()  # audio events the draft engine tagged ("BGM", "Laughter", …)


@dataclass(frozen=True)
class SpanVerdict:
    """What the music/noise gate decided for one stretch of audio, and why."""

    start: float
    end: float
    separate: bool
    score: float
    reason: str


@dataclass(frozen=True)
class Cue:
    """One subtitle on screen: its lines are already wrapped to the style limits."""

    start: float
    end: float
    lines: tuple[str, ...]
    words: tuple[Word, ...] = field(default=(), compare=False)

    @property
    def text(self) -> str:
        return " ".join(self.lines)


@dataclass(frozen=True)
class Dropped:
    """A Whisper segment a guard kept out of the subtitles, and why: kept for the record, so a
    missing line can be explained, and counted by the quality bench."""

    text: str
    start: float
    end: float
    reason: str


@dataclass(frozen=True)
class Transcript:
    """What the pipeline hands to the writer."""

    language: str
    duration: float
    segments: tuple[Segment, ...]
    cues: tuple[Cue, ...]
    dropped: tuple[Dropped, ...] = ()
    track: Mapping[str, Any] | None = None  # the audio stream heard (pipeline.tracks)

    def shifted(self, seconds: float) -> Transcript:
        """Every time `seconds` later: onto the container's timeline, for audio that starts
        after the container does (players time subtitles from the container's start)."""
        if not seconds:
            return self
        return replace(self, duration=self.duration + seconds,
                       segments=tuple(later(s, seconds) for s in self.segments),
                       cues=tuple(later(c, seconds) for c in self.cues),
                       dropped=tuple(later(d, seconds) for d in self.dropped))

    @property
    def no_speech(self) -> bool:
        return not self.cues


Timed = TypeVar("Timed", Word, Segment, Cue, Draft, Dropped)


def later(item: Timed, seconds: float) -> Timed:
    """`item` (and its words) `seconds` later on the timeline."""
    if not seconds:
        return item
    changes: dict[str, Any] = {"start": item.start + seconds, "end": item.end + seconds}
    words = getattr(item, "words", None)
    if words:
        changes["words"] = tuple(later(w, seconds) for w in words)
    return replace(item, **changes)
