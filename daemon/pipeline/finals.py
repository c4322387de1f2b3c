"""Final cues as the final engine's words arrive, each published with the drafts it replaces.

What is known about where a cue's text came from (Whisper or a draft that stood in, how well
the engines agreed) is given per fed segment and found again for each cue by time, like the
drafts it replaces: a cue can span two segments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..domain import Cue, Draft, Word
from ..subtitles import CueStream, StyleLimits
from .align import SpeechEdges
from .base import StageReport
from .linking import DraftLinks, overlap, spoken_span


class Finals:
    """Feeds words to the cue builder and reports each finished cue, linked by time."""

    def __init__(self, limits: StyleLimits, duration: float, edges: SpeechEdges,
                 report: StageReport, drafts: Iterable[Draft] = ()) -> None:
        self._stream = CueStream(limits, duration, edges.edges, edges.pause_between)
        self._links = DraftLinks(drafts)
        self._report = report
        self._fed: list[tuple[float, float, Mapping[str, Any]]] = []
        self.cues: list[Cue] = []

    def draft(self, draft: Draft) -> None:
        """A draft made on the way (Whisper's own segment when no draft engine runs)."""
        self._links.add(draft)
        self._report.draft(draft)

    def link(self, drafts: Iterable[Draft]) -> None:
        """Drafts published elsewhere (a draft engine) that finals may replace."""
        for draft in drafts:
            self._links.add(draft)

    def feed(self, words: tuple[Word, ...], details: Mapping[str, Any] | None = None) -> None:
        if details and words:
            self._fed.append((words[0].start, words[-1].end, details))
        self._publish(self._stream.feed(words))

    def flush(self) -> None:
        self._publish(self._stream.flush())

    def _publish(self, cues: list[Cue]) -> None:
        for cue in cues:
            self.cues.append(cue)
            self._report.final(cue, self._links.replaces(cue), self._details(cue))

    def _details(self, cue: Cue) -> dict[str, Any] | None:
        """Merged details of the segments under the cue: a draft that stood in wins, the
        weakest agreement is the cue's."""
        span = spoken_span(cue)
        under = [d for a, b, d in self._fed if overlap((a, b), span) > 0 or a == b == span[0]]
        if not under:
            return None
        merged: dict[str, Any] = {}
        for details in under:
            merged.update({k: v for k, v in details.items() if k not in merged or v})
        if any(d.get("source") == "draft" for d in under):
            merged["source"] = "draft"
        scores = [d["alignment_score"] for d in under if d.get("alignment_score") is not None]
        merged["alignment_score"] = min(scores) if scores else None
        self._fed = [f for f in self._fed if f[1] > span[0]]
        return merged
