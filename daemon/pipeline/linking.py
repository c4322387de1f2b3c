"""Which drafts a final cue replaces, decided by time alone.

Drafts may come from another engine that segments differently (SenseVoice), so a final cue can
replace several drafts (n:1), one draft can be replaced by several cues (1:n), or a cue can have
no draft at all. Identity (which segment a word came from) cannot say this; time can: a cue
replaces every draft its spoken words overlap by more than a sliver, plus any earlier draft no
final covered (a phrase the final engine heard differently or dropped as a phantom), so no
stale draft is left on screen behind the finals.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from ..domain import Cue, Draft

# Overlaps shorter than this are timing noise between engines (a word stretched over a pause),
# not shared speech; a draft shorter than it still links when it lies inside the cue.
SLIVER_SECONDS = 0.1


def spoken_span(cue: Cue) -> tuple[float, float]:
    """Where the cue's words were heard (display edges are stretched for reading time)."""
    if cue.words:
        return cue.words[0].start, cue.words[-1].end
    return cue.start, cue.end


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def shares_speech(draft: Draft, span: tuple[float, float]) -> bool:
    shared = overlap((draft.start, draft.end), span)
    inside = span[0] <= draft.start and draft.end <= span[1]
    return shared > SLIVER_SECONDS or (inside and draft.end >= draft.start)


class DraftLinks:
    """The drafts published so far, and which of them each final cue replaces.

    Finals arrive in time order, so a draft that ends before a final's words begin can never
    be linked again and is forgotten: on a film this keeps the work per cue small.
    """

    def __init__(self, drafts: Iterable[Draft] = ()) -> None:
        self._drafts: list[Draft] = sorted(drafts, key=lambda d: d.start)
        self._linked: set[str] = set()

    def add(self, draft: Draft) -> None:
        bisect.insort(self._drafts, draft, key=lambda d: d.start)

    def replaces(self, cue: Cue) -> tuple[str, ...]:
        """Temp ids this cue replaces, in time order; the first is where it goes on screen."""
        span = spoken_span(cue)
        chosen = [d for d in self._drafts
                  if shares_speech(d, span)
                  or (d.end <= span[0] and d.temp_id not in self._linked)]
        self._linked.update(d.temp_id for d in chosen)
        self._drafts = [d for d in self._drafts if d.end > span[0]]
        return tuple(d.temp_id for d in chosen)
