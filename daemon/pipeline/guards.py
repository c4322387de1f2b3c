"""Hallucination guards: Whisper segments that are not what was said are dropped before anyone
sees them (draft, final or file).

VAD in front of Whisper removes most phantoms (silence and music never reach it). What can still
slip through, each with its own rule so each is testable:
- a segment Whisper itself doubts: high no-speech probability and a low average log-probability;
- a looping decode: text that compresses too well (the same words over and over);
- a repeat: the same (or nearly the same) text as the segment just kept;
- a known phantom phrase ("Thanks for watching", "Subtitles by …", a lone "you"), dropped only
  when the audio under it is mostly not speech, so a person who says it keeps it.
"""

from __future__ import annotations

import difflib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..domain import Dropped, Segment

NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
MAX_COMPRESSION_RATIO = 2.4
NEAR_REPEAT = 0.9
MIN_SPEECH_UNDER_PHANTOM = 0.5

PHANTOMS = [re.compile(p, re.IGNORECASE) for p in (
    r"^(thanks?|thank you)( so much)? for watching[.!]*$",
    r"^(please )?(like and )?subscribe[.!]*$",
    r"^subtitles? (by|from) .*$",
    r"^(subtitled|captioned|transcribed) by .*$",
    r"^you[.!]*$",
    r"^thank you[.!]*$",
    r"^\W*$",
)]


def normalise(text: str) -> str:
    return re.sub(r"[^\w' ]+", "", text.lower()).strip()


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_phantom_phrase(text: str) -> bool:
    stripped = text.strip()
    return any(p.match(stripped) for p in PHANTOMS)


@dataclass
class SegmentGuard:
    """Decides, segment by segment in order, what to keep; `speech` are (start, end) seconds of
    real speech (the VAD's spans without their padding)."""

    speech: Sequence[tuple[float, float]]
    _previous: str = ""
    dropped: list[Dropped] = field(default_factory=list)  # every segment dropped, and why

    def reason_to_drop(self, seg: Segment) -> str | None:
        reason = self._reason(seg)
        if reason is not None:
            self.dropped.append(Dropped(seg.text, seg.start, seg.end, reason))
        return reason

    def _reason(self, seg: Segment) -> str | None:
        if seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < LOW_LOGPROB:
            return "whisper doubts there is speech"
        if compression_ratio(seg.text) > MAX_COMPRESSION_RATIO:
            return "looping text"
        text = normalise(seg.text)
        if text and self._previous and difflib.SequenceMatcher(
                None, text, self._previous).ratio() >= NEAR_REPEAT:
            return "repeat of the previous segment"
        if is_phantom_phrase(seg.text) and self.speech_share(seg.start, seg.end) < \
                MIN_SPEECH_UNDER_PHANTOM:
            return "phantom phrase over non-speech"
        self._previous = text
        return None

    def speech_share(self, start: float, end: float) -> float:
        """How much of [start, end] the VAD heard as speech."""
        if end <= start:
            return 0.0
        covered = sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.speech)
        return covered / (end - start)
