"""Draft and final text aligned token by token (Needleman–Wunsch), to carry timing across.

A draft engine (SenseVoice) and the final engine (Whisper) hear the same span; where Whisper's
word times are poor (a word stretched over a pause, a zero-length word) the draft's timing can
stand in, but only for words the two engines agree on, and only when they agree enough overall:
the alignment score says how much. Chinese, Japanese and Korean text has no spaces between
words, so it is compared character by character; other text word by word; mixed text both
ways at once ("我们用Python写code" → 我 们 用 python 写 code).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from ..domain import Word

MATCH, MISMATCH, GAP = 2, -1, -1
# A token is one CJK character, or a run of letters/digits/apostrophes of any other script.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"  # a class body
CJK_CHAR = re.compile(f"[{CJK}]")
_WORD = rf"(?:(?![{CJK}])[^\W_])+"
_TOKEN = re.compile(rf"[{CJK}]|{_WORD}(?:'{_WORD})*")


def tokens(text: str) -> list[str]:
    """Comparable tokens: case and width folded, punctuation dropped."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _TOKEN.findall(folded)


@dataclass(frozen=True)
class Alignment:
    pairs: tuple[tuple[int | None, int | None], ...]  # (index in a, index in b); None = a gap
    score: float  # matched tokens / tokens of the longer side, 0..1

    def matched(self) -> dict[int, int]:
        """Index in b → index in a, for tokens that are the same on both sides."""
        return {j: i for i, j in self.pairs if i is not None and j is not None}


def align(a: Sequence[str], b: Sequence[str]) -> Alignment:
    """Global alignment of two token lists; equal tokens match, anything else is a gap."""
    if not a or not b:
        return Alignment(tuple((i, None) for i in range(len(a))) +
                         tuple((None, j) for j in range(len(b))), 0.0)
    table = _fill(a, b)
    pairs = _trace(table, a, b)
    same = sum(1 for i, j in pairs if i is not None and j is not None and a[i] == b[j])
    kept = tuple((i, j) if i is None or j is None or a[i] == b[j] else (i, None)
                 for i, j in pairs)
    return Alignment(kept, same / max(len(a), len(b)))


def _fill(a: Sequence[str], b: Sequence[str]) -> list[list[int]]:
    rows, cols = len(a) + 1, len(b) + 1
    table = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        table[i][0] = i * GAP
    for j in range(cols):
        table[0][j] = j * GAP
    for i in range(1, rows):
        prev, row, ai = table[i - 1], table[i], a[i - 1]
        for j in range(1, cols):
            diag = prev[j - 1] + (MATCH if ai == b[j - 1] else MISMATCH)
            row[j] = max(diag, prev[j] + GAP, row[j - 1] + GAP)
    return table


def _trace(table: list[list[int]], a: Sequence[str],
           b: Sequence[str]) -> list[tuple[int | None, int | None]]:
    i, j = len(a), len(b)
    pairs: list[tuple[int | None, int | None]] = []
    while i > 0 or j > 0:
        if i > 0 and j > 0 and table[i][j] == table[i - 1][j - 1] + (
                MATCH if a[i - 1] == b[j - 1] else MISMATCH):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and table[i][j] == table[i - 1][j] + GAP:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def spread_times(count: int, start: float, end: float) -> list[tuple[float, float]]:
    """Times for `count` tokens of a draft that only has a span's start and end: evenly
    spread, which is what a span-level engine's timing is worth."""
    if count <= 0:
        return []
    step = max(end - start, 0.0) / count
    return [(start + k * step, start + (k + 1) * step) for k in range(count)]


# Word times outside this range are not what was heard: zero-length words, or a word stretched
# over the pause before it (Whisper does both at the edges of noisy speech).
POOR_MIN_SECONDS, POOR_MAX_SECONDS = 0.02, 1.5
MIN_SCORE = 0.5  # below this the engines heard different things: keep Whisper's own times


def poor_time(word: Word) -> bool:
    duration = word.end - word.start
    return duration < POOR_MIN_SECONDS or duration > POOR_MAX_SECONDS


def carry_times(words: Sequence[Word], draft_text: str, start: float, end: float,
                min_score: float = MIN_SCORE) -> tuple[tuple[Word, ...], float]:
    """Whisper's words, with the draft's timing for poorly timed words the draft also has;
    unchanged when the alignment score is under `min_score`. Returns (words, score)."""
    draft = tokens(draft_text)
    final, owner = [], []
    for k, word in enumerate(words):
        for token in tokens(word.text):
            final.append(token)
            owner.append(k)
    result = align(draft, final)
    if result.score < min_score:
        return tuple(words), result.score
    times, matched = spread_times(len(draft), start, end), result.matched()
    out = list(words)
    for k, word in enumerate(words):
        heard = [matched[j] for j, o in enumerate(owner) if o == k and j in matched]
        if heard and poor_time(word):
            out[k] = dataclasses.replace(word, start=times[heard[0]][0], end=times[heard[-1]][1])
    return tuple(out), result.score
