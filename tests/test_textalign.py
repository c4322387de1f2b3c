"""Draft/final token alignment: word level for spaced scripts, character level for CJK."""

from __future__ import annotations

import pytest

from daemon.domain import Word
from daemon.pipeline.textalign import align, carry_times, tokens


@pytest.mark.parametrize("text, expected", [
    ("Hello, World! It's fine.", ["hello", "world", "it's", "fine"]),
    ("今天天气很好。", ["今", "天", "天", "气", "很", "好"]),
    ("我们用Python写code", ["我", "们", "用", "python", "写", "code"]),
    ("ＡＢＣ１２３", ["abc123"]),  # full-width folded
    ("", []),
])
def test_tokens(text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


@pytest.mark.parametrize("a, b, score, matched", [
    ("the cat sat", "the cat sat", 1.0, {0: 0, 1: 1, 2: 2}),
    ("the cat sat", "the black cat sat", 0.75, {0: 0, 2: 1, 3: 2}),
    ("the cat sat", "a dog ran", 0.0, {}),
    ("今天天气很好", "今天天气真好", 5 / 6, {0: 0, 1: 1, 2: 2, 3: 3, 5: 5}),
    ("我们用Python写code", "我们用 python 写 code", 1.0, {k: k for k in range(6)}),
    ("", "anything", 0.0, {}),
])
def test_align(a: str, b: str, score: float, matched: dict[int, int]) -> None:
    result = align(tokens(a), tokens(b))
    assert result.score == pytest.approx(score)
    assert result.matched() == matched


def test_poorly_timed_words_take_the_drafts_times_when_the_engines_agree() -> None:
    words = [Word(" The", 0.0, 2.5), Word(" cat", 2.5, 2.8), Word(" sat", 2.8, 2.8)]
    carried, score = carry_times(words, "the cat sat", 2.0, 3.2)
    assert score == 1.0
    assert (carried[0].start, carried[0].end) == pytest.approx((2.0, 2.4))  # was 2.5 s long
    assert carried[1] == words[1]  # well timed: Whisper's own times stand
    assert (carried[2].start, carried[2].end) == pytest.approx((2.8, 3.2))  # was zero-length


def test_low_agreement_keeps_whispers_times() -> None:
    words = [Word(" Dogs", 0.0, 2.5), Word(" bark", 2.5, 2.5)]
    carried, score = carry_times(words, "the cat sat", 2.0, 3.2)
    assert score < 0.5 and carried == tuple(words)


def test_chinese_words_split_into_characters_for_alignment() -> None:
    words = [Word("今天", 0.0, 0.0), Word("天气", 0.0, 0.4), Word("很好", 0.4, 0.8)]
    carried, score = carry_times(words, "今天天气很好", 0.0, 1.2)
    assert score == 1.0
    assert (carried[0].start, carried[0].end) == pytest.approx((0.0, 0.4))
