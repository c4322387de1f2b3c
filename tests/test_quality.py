"""Subtitle quality: each guard, the edge snapping, and the figures end to end on real speech."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from daemon.domain import Segment, SpeechSpan, Word
from daemon.pipeline import Pipeline
from daemon.pipeline.align import TAIL_SECONDS, SpeechEdges
from daemon.pipeline.guards import SegmentGuard, compression_ratio, is_phantom_phrase
from testkit.corpus import Shown, corpus, onset_errors, phantoms, within_style
from testkit.media import write_wav
from testkit.noise import CONDITIONS, noisy_corpus
from testkit.speech import wer


def seg(text: str, start: float, end: float, no_speech: float = 0.0,
        logprob: float = -0.2) -> Segment:
    words = tuple(Word(" " + t, start + i * 0.3, start + i * 0.3 + 0.25)
                  for i, t in enumerate(text.split()))
    return Segment(0, text, start, end, words, logprob, no_speech)


@pytest.mark.parametrize("segment, speech, reason", [
    (seg("Hello there.", 1, 2, no_speech=0.9, logprob=-1.5), [(0, 10)], "doubts"),
    (seg("Hello there.", 1, 2, no_speech=0.9, logprob=-0.3), [(0, 10)], None),
    (seg("the the the the the the the the the the the the the the the the", 1, 5), [(0, 10)],
     "looping"),
    (seg("Thanks for watching!", 5, 7), [(0, 2)], "phantom"),
    (seg("Thanks for watching!", 5, 7), [(4, 8)], None),  # someone really said it
    (seg("you", 3, 3.5), [(0, 1)], "phantom"),
    (seg("Subtitles by the Amara.org community", 3, 6), [], "phantom"),
    (seg("The weather is nice today.", 1, 3), [(0, 4)], None),
])
def test_guard_rules(segment: Segment, speech, reason: str | None) -> None:
    got = SegmentGuard(speech).reason_to_drop(segment)
    assert (got is None) if reason is None else (got is not None and reason in got)


def test_repeats_of_the_previous_segment_are_dropped() -> None:
    guard = SegmentGuard([(0, 100)])
    assert guard.reason_to_drop(seg("We went to the market.", 0, 2)) is None
    assert "repeat" in guard.reason_to_drop(seg("We went to the market.", 2, 4))
    assert "repeat" in guard.reason_to_drop(seg("we went to the market", 4, 6))
    assert guard.reason_to_drop(seg("Then we went home.", 6, 8)) is None


def test_phantom_and_ratio_helpers() -> None:
    assert is_phantom_phrase(" Thank you for watching. ")
    assert not is_phantom_phrase("Thank you, Sam")
    assert compression_ratio("abc " * 50) > 2.4 > compression_ratio("The quick brown fox jumps.")


def test_edges_snap_to_pauses_only() -> None:
    sr, pad = 16000, 0.3
    spans = [SpeechSpan(int(0.5 * sr), int(3.3 * sr)),   # speech 0.8–3.0, a real pause after
             SpeechSpan(int(4.0 * sr), int(6.0 * sr)),   # touches the next: no exact edge
             SpeechSpan(int(6.0 * sr), int(9.0 * sr))]
    edges = SpeechEdges.from_spans(spans, sr, pad, int(10 * sr))
    assert edges.onsets == pytest.approx((0.8, 4.3))
    assert edges.offsets == pytest.approx((3.0, 8.7))
    first = [Word(" Early", 0.55, 0.9), Word(" word.", 0.9, 2.8)]
    assert edges.edges(first) == pytest.approx((0.8, 3.0 + TAIL_SECONDS))
    inside = [Word(" middle", 6.1, 6.4)]  # no edge within reach: word times stand
    assert edges.edges(inside) == pytest.approx((6.1, 6.4))
    # a heard pause breaks the cue even without a full stop or a gap in Whisper's word times
    assert edges.pause_between(Word(" mornings", 2.4, 4.1), Word(" Farmers", 4.1, 4.6))
    assert not edges.pause_between(Word(" in", 6.4, 6.6), Word(" the", 6.6, 6.8))


def test_edges_from_the_voice_keep_a_short_pause() -> None:
    """A 0.58 s pause (kept by the VAD's 0.5 s rule) between two sentences: padded by 0.3 s
    each side the spans would meet in the middle and the pause's edges be lost; the voice
    before padding keeps both. A last word Whisper stretched over the pause ends at the
    voice's offset inside it."""
    sr = 16000
    voice = [SpeechSpan(int(3.74 * sr), int(5.66 * sr)), SpeechSpan(int(6.24 * sr),
                                                                     int(7.87 * sr))]
    edges = SpeechEdges.from_voice(voice, sr, int(10 * sr))
    assert edges.onsets == pytest.approx((3.74, 6.24)) and \
        edges.offsets == pytest.approx((5.66, 7.87))
    padded = [SpeechSpan(s.start - int(0.3 * sr), s.end + int(0.3 * sr)) for s in voice]
    assert SpeechEdges.from_spans(padded, sr, 0.3, int(10 * sr)).onsets == \
        pytest.approx((3.74,))
    stretched = [Word(" fresh", 5.18, 5.42), Word(" eggs,", 5.42, 6.26)]
    assert edges.edges(stretched)[1] == pytest.approx(5.66 + TAIL_SECONDS)
    assert edges.pause_between(stretched[-1], Word(" and", 6.44, 6.48))


def test_quality_figures_end_to_end(pipeline: Pipeline, tmp_path: Path) -> None:
    """The issue's acceptance figures on a small corpus (every kind of input in it)."""
    model = pipeline.model("whisper")
    refs, ours, bare, errors, shown_all = [], [], [], [], []
    for item in corpus(full=False):
        path = write_wav(tmp_path / f"{item.name}.wav", item.speech.samples)
        shown = [Shown(c.start, c.end, c.lines) for c in pipeline.run(path).cues]
        shown_all += shown
        if not item.has_speech:
            assert shown == [], (item.name, shown)  # silence, music only: no text at all
            continue
        assert phantoms(shown, item) == 0
        errors += onset_errors(shown, item)
        segments, _ = model.transcribe(str(path), beam_size=5, word_timestamps=True)
        refs.append(item.speech.text)
        ours.append(" ".join(s.text for s in shown))
        bare.append(" ".join(s.text for s in segments))
    assert wer(" ".join(refs), " ".join(ours)) <= wer(" ".join(refs), " ".join(bare)) + 0.02
    assert all(within_style(s) for s in shown_all)
    assert statistics.median(errors) <= 0.05 and max(errors) <= 0.4, errors


NOISY_SLICE = tuple(c for c in CONDITIONS if c.name in ("pink10", "babble12", "reverb-pink20"))


def test_quality_under_noise_and_reverb_end_to_end(pipeline: Pipeline, tmp_path: Path) -> None:
    """Noisy and reverberant speech (issue 16's targets on a slice of the noisy corpus): no
    more word errors than bare faster-whisper, with or without its VAD; onsets still close;
    every cue inside the style limits; nothing written over noise alone."""
    model = pipeline.model("whisper")
    clean = [i for i in corpus(full=False) if i.kind == "speech"]
    refs: list[str] = []
    hyps: dict[str, list[str]] = {"subwatch": [], "bare": [], "bare + VAD": []}
    errors: list[float] = []
    for item in noisy_corpus(clean, NOISY_SLICE):
        path = write_wav(tmp_path / f"{item.name}.wav", item.speech.samples)
        transcript = pipeline.run(path)
        shown = [Shown(c.start, c.end, c.lines) for c in transcript.cues]
        assert all(within_style(s) for s in shown), (item.name, shown)
        if not item.has_speech:
            assert shown == [], (item.name, shown)
            continue
        errors += onset_errors(shown, item)
        refs.append(item.speech.text)
        hyps["subwatch"].append(" ".join(s.text for s in shown))
        for name, vad in (("bare", False), ("bare + VAD", True)):
            segments, _ = model.transcribe(str(path), beam_size=5, word_timestamps=True,
                                           vad_filter=vad)
            hyps[name].append(" ".join(s.text for s in segments))
    rates = {name: wer(" ".join(refs), " ".join(h)) for name, h in hyps.items()}
    # Whisper hears what bare faster-whisper's own VAD gives it, so anything worse is ours
    # (a guard eating real words); against bare without VAD, one run on a slice this small
    # moves by a word or two either way (the whole corpus is bench/quality.py's).
    assert rates["subwatch"] <= rates["bare + VAD"], rates
    assert rates["subwatch"] <= rates["bare"] + 0.02, rates
    assert statistics.median(errors) <= 0.25, errors
