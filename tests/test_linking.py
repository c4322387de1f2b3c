"""Draft/final linking by time: which drafts each final cue replaces (n:1, 1:n, none, stale)."""

from __future__ import annotations

import pytest

from daemon.domain import Cue, Draft, Word
from daemon.pipeline.linking import DraftLinks


def cue(start: float, end: float, text: str = "words") -> Cue:
    """A cue whose words were heard over [start, end]."""
    return Cue(start - 0.2, end + 0.4, (text,), words=(Word(text, start, end),))


def drafts(*spans: tuple[float, float]) -> list[Draft]:
    return [Draft(f"d{i}", "draft", a, b) for i, (a, b) in enumerate(spans)]


@pytest.mark.parametrize("name, published, finals, expected", [
    ("1:1", [(0.0, 2.0), (3.0, 5.0)], [(0.1, 1.9), (3.1, 4.8)], [("d0",), ("d1",)]),
    ("n:1, one final over two drafts", [(0.0, 1.0), (1.1, 2.0)], [(0.1, 1.9)],
     [("d0", "d1")]),
    ("1:n, two finals from one draft", [(0.0, 4.0)], [(0.1, 1.9), (2.1, 3.9)],
     [("d0",), ("d0",)]),
    ("no draft at all", [], [(0.1, 1.9)], [()]),
    ("a sliver of overlap is timing noise", [(0.0, 2.0), (1.95, 4.0)], [(0.1, 2.0)],
     [("d0",)]),
    ("a short draft inside the final still links", [(1.0, 1.05)], [(0.5, 2.0)], [("d0",)]),
    ("a stale draft no final covered goes with the next final", [(0.0, 1.0), (2.0, 3.0)],
     [(2.1, 2.9)], [("d0", "d1")]),
    ("a replaced draft is not stale again", [(0.0, 1.0), (5.0, 6.0)],
     [(0.1, 0.9), (5.1, 5.9)], [("d0",), ("d1",)]),
])
def test_links(name: str, published: list[tuple[float, float]],
               finals: list[tuple[float, float]], expected: list[tuple[str, ...]]) -> None:
    links = DraftLinks(drafts(*published))
    assert [links.replaces(cue(a, b)) for a, b in finals] == expected, name


def test_drafts_added_while_finals_stream() -> None:
    links = DraftLinks()
    links.add(Draft("w0", "one", 0.0, 2.0))
    assert links.replaces(cue(0.2, 1.0)) == ("w0",)
    links.add(Draft("w1", "two", 2.5, 4.0))
    assert links.replaces(cue(1.2, 3.5)) == ("w0", "w1")  # spans the boundary
    assert links.replaces(cue(3.6, 3.9)) == ("w1",)


def test_a_cue_without_words_links_by_its_edges() -> None:
    links = DraftLinks(drafts((0.0, 2.0)))
    assert links.replaces(Cue(0.5, 1.5, ("x",))) == ("d0",)
