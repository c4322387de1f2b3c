"""Table tests for the pure cue builder: what people see on screen."""

from __future__ import annotations

import pytest

from daemon.domain import Cue, Segment, Transcript, Word
from daemon.subtitles import (
    MAX_DELAY_SECONDS,
    CueStream,
    StyleLimits,
    build_cues,
    render,
    to_srt,
    to_vtt,
    wrap,
)

LIMITS = StyleLimits()


def words_at(text: str, start: float = 0.0, word_seconds: float = 0.3,
             gap: float = 0.05) -> list[Word]:
    """Evenly spaced words, each with the leading space Whisper gives them."""
    out, t = [], start
    for token in text.split():
        out.append(Word(" " + token, round(t, 3), round(t + word_seconds, 3)))
        t += word_seconds + gap
    return out


def seg(words: list[Word], index: int = 0) -> Segment:
    text = "".join(w.text for w in words).strip()
    return Segment(index, text, words[0].start, words[-1].end, tuple(words))


def assert_within_limits(cues: list[Cue], limits: StyleLimits = LIMITS,
                         duration: float | None = None) -> None:
    for i, cue in enumerate(cues):
        assert 1 <= len(cue.lines) <= limits.max_lines, cue
        assert all(0 < len(line) <= limits.max_line_chars for line in cue.lines), cue
        length = cue.end - cue.start
        assert limits.min_cue_seconds - 1e-6 <= length <= limits.max_cue_seconds + 1e-6, cue
        assert len(cue.text) / length <= limits.max_cps + 1e-6, cue
        if i:
            assert cue.start >= cues[i - 1].end + limits.min_gap_seconds - 1e-6, (cues[i - 1], cue)
        if duration is not None:
            assert cue.end <= duration + 1e-6


@pytest.mark.parametrize("text, expected", [
    ("Short line.", ("Short line.",)),
    ("exactly forty-two characters long, okay??", ("exactly forty-two characters long, okay??",)),
    ("This sentence is long enough that it needs two balanced lines.",
     ("This sentence is long enough that", "it needs two balanced lines.")),
])
def test_wrap_balances_lines(text: str, expected: tuple[str, ...]) -> None:
    assert wrap(words_at(text), LIMITS) == expected


def test_wrap_refuses_what_cannot_fit() -> None:
    text = " ".join(["word"] * 30)
    assert wrap(words_at(text), LIMITS) is None


def test_wrap_never_leaves_one_word_alone_when_avoidable() -> None:
    lines = wrap(words_at("one two three four five six seven eight nine ten eleven twelve"),
                 LIMITS)
    assert lines is not None and len(lines) == 2
    assert all(len(line.split()) > 1 for line in lines)


@pytest.mark.parametrize("case", [
    "two sentences",
    "long run-on",
    "dense fast speech",
    "tiny words with pauses",
    "long single word",
])
def test_cues_stay_within_limits(case: str) -> None:
    if case == "two sentences":
        segments = [seg(words_at("Hello there my friend.")),
                    seg(words_at("How are you doing today?", start=2.0), 1)]
    elif case == "long run-on":
        # 120 words at 2.5 words/s, about 12 characters per second: a fast, breathless talker
        talk = "so we went down to the river and then we walked along it for a while and"
        segments = [seg(words_at(" ".join([talk] * 8), gap=0.1))]
    elif case == "dense fast speech":
        segments = [seg(words_at("extraordinarily complicated international negotiations "
                                 "continued throughout", word_seconds=0.12, gap=0.0))]
    elif case == "tiny words with pauses":
        segments = [seg(words_at("Yes.")), seg(words_at("No.", start=0.5), 1),
                    seg(words_at("Maybe.", start=1.0), 2)]
    else:
        segments = [seg([Word(" Aaaaaah", 1.0, 12.0)])]
    cues = build_cues(segments, LIMITS, duration=60.0)
    assert cues
    assert_within_limits(cues, duration=60.0)
    spoken = " ".join(w.text.strip() for s in segments for w in s.words)
    assert " ".join(c.text for c in cues) == spoken  # nothing lost, nothing repeated


def test_sentence_end_starts_a_new_cue() -> None:
    segments = [seg(words_at("It was late. We went home."))]
    cues = build_cues(segments, StyleLimits(min_cue_seconds=0.5), duration=10)
    assert [c.text for c in cues] == ["It was late.", "We went home."]


def test_pause_starts_a_new_cue() -> None:
    first = words_at("and then we waited")
    second = words_at("for a long time", start=first[-1].end + 1.5)
    cues = build_cues([seg(first + second)], LIMITS, duration=10)
    assert [c.text for c in cues] == ["and then we waited", "for a long time"]


def test_cue_starts_at_first_word_not_segment() -> None:
    words = words_at("Right on time.", start=3.2)
    segment = Segment(0, "Right on time.", 0.0, 9.0, tuple(words))  # coarse segment times
    (cue,) = build_cues([segment], LIMITS, duration=10)
    assert cue.start == pytest.approx(3.2)


def test_short_cue_is_extended_into_free_time() -> None:
    (cue,) = build_cues([seg([Word(" Hi.", 1.0, 1.2)])], LIMITS, duration=10)
    assert cue.start == pytest.approx(1.0)
    assert cue.end == pytest.approx(1.8)


def spoken_in(text: str, start: float, seconds: float) -> list[Word]:
    """`text` spoken back to back over exactly `seconds` (no pause inside)."""
    tokens = text.split()
    step = seconds / len(tokens)
    return [Word(" " + t, round(start + k * step, 3), round(start + (k + 1) * step, 3))
            for k, t in enumerate(tokens)]


def test_dense_run_with_no_time_to_spare_delays_the_next_cue_a_little() -> None:
    """Three sentences of about 50 characters back to back (no two fit one cue), the middle
    one spoken 2 % faster than 20 cps allows and neither neighbour with time to spare: the middle
    cue gets its reading time by starting the next one up to `MAX_DELAY_SECONDS` late, not by
    breaking the limit."""
    first = spoken_in("The first sentence of this run has fifty letters.", 0.0, 2.45)
    second = spoken_in("The second one is spoken just a little too fast ok.", 2.533, 2.5)
    third = spoken_in("The third sentence of this run has fifty letters.", 5.116, 2.45)
    cues = build_cues([seg(first + second + third)], LIMITS)
    assert [c.text[:9] for c in cues] == ["The first", "The secon", "The third"]
    assert_within_limits(cues)
    assert 5.116 < cues[2].start <= 5.116 + MAX_DELAY_SECONDS


def test_end_is_clamped_to_media_duration() -> None:
    (cue,) = build_cues([seg([Word(" Bye.", 4.8, 4.95)])], LIMITS, duration=5.0)
    assert cue.end <= 5.0
    assert cue.end - cue.start >= LIMITS.min_cue_seconds - 1e-6


def test_no_words_no_cues() -> None:
    assert build_cues([], LIMITS) == []


def test_srt_and_vtt_text() -> None:
    cues = [Cue(0.5, 2.25, ("Hello,", "world.")), Cue(3661.001, 3662.5, ("Later.",))]
    assert to_srt(cues) == (
        "1\n00:00:00,500 --> 00:00:02,250\nHello,\nworld.\n\n"
        "2\n01:01:01,001 --> 01:01:02,500\nLater.\n")
    assert to_vtt(cues).startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nHello,\nworld.\n")


def test_vtt_escapes_markup_in_cue_text() -> None:
    """WebVTT reads `&`, `<` and `>` as markup (entities, tags, the `-->` arrow): cue text
    must carry them escaped, or a player shows garbage or drops the cue."""
    cues = [Cue(0.0, 1.5, ("Tom & Jerry <3", "a --> b")), Cue(2.0, 3.0, ("<i>not a tag</i>",))]
    vtt = to_vtt(cues)
    body = vtt.split("\n\n", 1)[1]
    assert "Tom &amp; Jerry &lt;3\na --&gt; b\n" in body
    assert "&lt;i&gt;not a tag&lt;/i&gt;" in body
    assert body.count("-->") == 2  # only the two timing lines
    assert "Tom & Jerry <3" in to_srt(cues)  # SRT stays plain text


def test_render_all_formats() -> None:
    words = words_at("Hello world.")
    transcript = Transcript("en", 5.0, (seg(words),), tuple(build_cues([seg(words)], LIMITS)))
    for fmt in ("srt", "vtt", "txt", "json"):
        assert "Hello world." in render(fmt, transcript)
    with pytest.raises(ValueError):
        render("doc", transcript)


def test_streamed_cues_equal_the_whole_file_build() -> None:
    talk = ("Well, I thought we would go. But then it rained, and the road was closed; so we "
            "stayed in and played cards until late. Nobody won. ")
    segments, t = [], 0.0
    for i, sentence in enumerate((talk * 4).split(". ")):
        if not sentence.strip():
            continue
        words = words_at(sentence.strip() + ".", start=t, word_seconds=0.25, gap=0.08)
        segments.append(seg(words, i))
        t = words[-1].end + (1.0 if i % 3 == 0 else 0.2)
    whole = build_cues(segments, LIMITS, duration=t + 1)
    stream = CueStream(LIMITS, duration=t + 1)
    streamed = [c for s in segments for c in stream.feed(s.words)] + stream.flush()
    assert [(c.start, c.end, c.lines) for c in streamed] == \
        [(c.start, c.end, c.lines) for c in whole]
    assert_within_limits(streamed, duration=t + 1)
