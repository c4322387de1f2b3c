"""One VAD pass, two cuts: the fine spans that time the cues and the wide windows Whisper hears.

The probabilities-to-spans rule is ours (the model runs once for both cuts), so it is held equal
to faster-whisper's own `get_speech_timestamps` on real speech, clean and under noise, for
both cuts and for a length limit that forces splits.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from daemon.config import VadConfig
from daemon.domain import Audio, SpeechSpan
from daemon.models import ModelCache
from daemon.pipeline.base import JobState, NullReporter, StageContext, StageReport
from daemon.pipeline.final import heard_for
from daemon.pipeline.vad import (
    WINDOW,
    SileroStream,
    SpanRule,
    VadStage,
    spans_from,
    speech_probabilities,
)
from testkit.corpus import corpus
from testkit.daemon import make_config
from testkit.media import to_16k
from testkit.noise import CONDITIONS, spoil


@pytest.fixture(scope="module")
def signals() -> dict[str, np.ndarray]:
    clean = [i for i in corpus(full=False) if i.kind in ("speech", "run_on", "music_bed")]
    out = {i.name: to_16k(i.speech.samples) for i in clean}
    for n, condition in enumerate(CONDITIONS):
        out[f"{clean[0].name}~{condition.name}"] = to_16k(
            spoil(clean[0].speech, condition, seed=n).samples)
    return out


RULES = {
    "fine": SpanRule.fine(VadConfig()),
    "wide": SpanRule.hearing(VadConfig()),
    "split at 4 s": SpanRule(0.5, 500, 300, 4.0),
    "split hard at 1 s": SpanRule(0.5, 2000, 100, 1.0),
}


@pytest.mark.parametrize("rule", RULES, ids=list(RULES))
def test_spans_from_one_pass_equal_faster_whispers_own(signals: dict[str, np.ndarray],
                                                        rule: str) -> None:
    from faster_whisper.vad import get_speech_timestamps

    for name, samples in signals.items():
        probs = speech_probabilities(samples)
        ours = [(s.start, s.end) for s in spans_from(probs, RULES[rule], len(samples))]
        theirs = [(d["start"], d["end"])
                  for d in get_speech_timestamps(samples, RULES[rule].options())]
        assert ours == theirs, name


@pytest.mark.parametrize("blocks", ["odd sizes", "whole windows", "one sample at a time",
                                    "past faster-whisper's own batch"])
def test_silero_fed_in_blocks_equals_one_pass(signals: dict[str, np.ndarray],
                                              blocks: str) -> None:
    """State and context carried across blocks: the same probabilities, bit for bit, as
    faster-whisper's one call over the whole file (so a film can be heard a window at a time),
    also over more windows than one call of theirs takes (10 000) in our smaller batches."""
    from faster_whisper.vad import get_vad_model

    samples = next(iter(signals.values()))
    if blocks == "one sample at a time":
        samples = samples[:3000]
    if blocks == "past faster-whisper's own batch":
        samples = np.tile(samples, 10_500 * WINDOW // len(samples) + 1)
        blocks = "odd sizes"
    whole = get_vad_model()(np.pad(samples, (0, WINDOW - len(samples) % WINDOW))).reshape(-1)
    rng = np.random.default_rng(5)
    stream, out, at = SileroStream(), [], 0
    while at < len(samples):
        size = {"odd sizes": int(rng.integers(1, 40_000)), "whole windows": 7 * WINDOW,
                "one sample at a time": 1}[blocks]
        out.append(stream.feed(samples[at:at + size]))
        at += size
    out.append(stream.finish())
    assert np.array_equal(np.concatenate(out), whole)


def test_stage_cuts_wide_windows_over_the_fine_spans(signals: dict[str, np.ndarray],
                                                     tmp_path: Path) -> None:
    """Four sentences with pauses under 2 s: four fine spans (cue edges at every pause), one
    window (Whisper hears the story whole); every fine span lies inside a window."""
    config = make_config(tmp_path)
    ctx = StageContext(config, ModelCache(2), threading.Event(),
                       StageReport(NullReporter(), "vad", (0.0, 1.0)))
    name = next(n for n in signals if "~" not in n and n != "run-on" and n != "music-bed")
    state = VadStage()(JobState(tmp_path / "x.wav", audio=Audio(signals[name])), ctx)
    assert len(state.spans) == 4 and len(state.windows) == 1
    for span in state.spans:
        assert any(w.start <= span.start and span.end <= w.end for w in state.windows)
    assert state.hearing == state.windows


def test_stage_on_silence_cuts_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    ctx = StageContext(config, ModelCache(2), threading.Event(),
                       StageReport(NullReporter(), "vad", (0.0, 1.0)))
    state = VadStage()(JobState(tmp_path / "x.wav", audio=Audio(np.zeros(48000, np.float32))),
                       ctx)
    assert state.spans == () and state.windows == () and state.hearing == ()


S = SpeechSpan


@pytest.mark.parametrize("group, spans, windows, heard", [
    # no windows cut: the group itself
    ([S(100, 200)], [S(100, 200), S(400, 500)], [], [S(100, 200)]),
    # one window over both groups: each hears up to the middle of the pause between them
    ([S(100, 200)], [S(100, 200), S(400, 500)], [S(50, 600)], [S(50, 300)]),
    ([S(400, 500)], [S(100, 200), S(400, 500)], [S(50, 600)], [S(300, 600)]),
    # a middle group of two spans between neighbours, windows apart
    ([S(300, 350), S(380, 420)], [S(100, 200), S(300, 350), S(380, 420), S(700, 800)],
     [S(80, 450), S(650, 820)], [S(250, 450)]),
    # the last group reaches the file's end
    ([S(700, 800)], [S(100, 200), S(700, 800)], [S(80, 220), S(650, 1000)], [S(650, 1000)]),
])
def test_heard_for_a_group_is_its_windows_cut_between_groups(group, spans, windows,
                                                             heard) -> None:
    assert heard_for(group, spans, windows, 1000) == heard
