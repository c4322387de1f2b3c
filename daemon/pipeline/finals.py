"""Final cues as Whisper's words arrive, each published with the drafts it replaces."""

from __future__ import annotations

from collections.abc import Iterable

from ..domain import Cue, Draft, Word
from ..subtitles import CueStream, StyleLimits
from .align import SpeechEdges
from .base import StageReport
from .linking import DraftLinks


class Finals:
    """Feeds words to the cue builder and reports each finished cue, linked by time."""

    def __init__(self, limits: StyleLimits, duration: float, edges: SpeechEdges,
                 report: StageReport, drafts: Iterable[Draft] = ()) -> None:
        self._stream = CueStream(limits, duration, edges.edges, edges.pause_between)
        self._links = DraftLinks(drafts)
        self._report = report
        self.cues: list[Cue] = []

    def draft(self, draft: Draft) -> None:
        """A draft made on the way (Whisper's own segment when no draft engine runs)."""
        self._links.add(draft)
        self._report.draft(draft)

    def feed(self, words: Iterable[Word]) -> None:
        self._publish(self._stream.feed(words))

    def flush(self) -> None:
        self._publish(self._stream.flush())

    def _publish(self, cues: list[Cue]) -> None:
        for cue in cues:
            self.cues.append(cue)
            self._report.final(cue, self._links.replaces(cue))
