"""SenseVoice drafts: the rich-tag parser, the CTC confidence, and the engine on a tiny random
model built once per module (funasr is imported once, by the first load: it is slow to import)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.errors import ModelUnavailable
from daemon.pipeline.sensevoice_engine import (
    EMPTY,
    MIN_SAMPLES,
    RichText,
    ctc_confidence,
    load_sensevoice,
    parse_rich,
    recognise,
)
from testkit.tiny_sensevoice import make_tiny_sensevoice


@pytest.mark.parametrize(("raw", "expected"), [
    ("<|en|><|NEUTRAL|><|Speech|><|woitn|>the weather is nice today",
     RichText("the weather is nice today", "en", "neutral", ("Speech",), False)),
    ("<|zh|><|NEUTRAL|><|Speech|><|withitn|>今天天气很好。",
     RichText("今天天气很好。", "zh", "neutral", ("Speech",), True)),
    ("<|en|><|NEUTRAL|><|BGM|><|woitn|>la la la",
     RichText("la la la", "en", "neutral", ("BGM",), False)),
    ("<|nospeech|><|EMO_UNKNOWN|><|Event_UNK|><|woitn|>",
     RichText("", None, None, (), False)),
    ("<|ja|><|HAPPY|><|Laughter|><|Applause|><|withitn|>すごい！",
     RichText("すごい！", "ja", "happy", ("Laughter", "Applause"), True)),
    ("<|en|><|SAD|><|Speech|><|withitn|>  so   long,\n and  thanks  ",
     RichText("so long, and thanks", "en", "sad", ("Speech",), True)),
    ("", RichText("", None, None, (), False)),
    # funasr's merged VAD output: tagged stretches one after another
    ("<|zh|><|NEUTRAL|><|Speech|><|withitn|>你好。<|zh|><|ANGRY|><|BGM|><|withitn|>再见。",
     RichText("你好。再见。", "zh", "neutral", ("Speech", "BGM"), True)),
    ("<|ko|><|NEUTRAL|><|Speech|><|withitn|>안녕하세요 반갑습니다",
     RichText("안녕하세요 반갑습니다", "ko", "neutral", ("Speech",), True)),
    ("<|de|><|NEUTRAL|><|Speech|><|woitn|>hallo", RichText("hallo", None, "neutral", ("Speech",),
                                                          False)),
])
def test_parse_rich(raw: str, expected: RichText) -> None:
    assert parse_rich(raw) == expected


def test_has_bgm() -> None:
    assert parse_rich("<|en|><|NEUTRAL|><|BGM|><|woitn|>la").has_bgm
    assert not parse_rich("<|en|><|NEUTRAL|><|Speech|><|woitn|>la").has_bgm


def log_posteriors(frames: list[list[float]]) -> np.ndarray:
    return np.log(np.asarray(frames, dtype=np.float64))


def test_confidence_is_the_geometric_mean_of_token_peaks() -> None:
    tags = [[0.1, 0.9, 0.001]] * 4  # the query frames are not scored
    text = [[0.3, 0.7, 0.001], [0.2, 0.8, 0.001], [0.9, 0.1, 0.001], [0.6, 0.001, 0.4]]
    # token 1 spans two frames (peak 0.8), then blank (id 0) twice
    assert ctc_confidence(log_posteriors(tags + text), blank_id=0) == pytest.approx(0.8)
    text[3] = [0.001, 0.5, 0.5]  # a tie goes to the lower id: a second token 1, peak 0.5
    assert ctc_confidence(log_posteriors(tags + text), 0) == pytest.approx((0.8 * 0.5) ** 0.5)


def test_confidence_without_tokens_is_how_sure_the_silence_is() -> None:
    frames = [[0.9, 0.1]] * 4 + [[0.9, 0.1], [0.4, 0.2]]
    assert ctc_confidence(log_posteriors(frames), 0) == pytest.approx((0.9 * 0.4) ** 0.5)
    assert ctc_confidence(log_posteriors([[0.5, 0.5]] * 3), 0) == 0.0


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sensevoice(tmp_path_factory.mktemp("sensevoice"))


@pytest.fixture(scope="module")
def model(tiny_folder: Path) -> Iterator[Any]:
    """Loaded with one torch thread: the tiny model's operations are too small to share out, and
    on a busy machine the threads' hand-offs cost more than the work (funasr puts the thread
    count it was loaded with back on every call, so the module's loads all run with one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_sensevoice(str(tiny_folder), "cpu")
    finally:
        torch.set_num_threads(threads)


def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(24000) / 16000)
    return [(tone + 0.01 * rng.standard_normal(24000)).astype(np.float32),
            (0.1 * rng.standard_normal(9000)).astype(np.float32)]


def test_recognise_gives_one_result_per_clip(model: Any) -> None:
    results = recognise(model, clips())
    assert len(results) == 2
    for rich, confidence in results:
        assert isinstance(rich.text, str) and "<|" not in rich.text
        assert 0.0 <= confidence <= 1.0


def test_recognise_is_repeatable(model: Any) -> None:
    assert recognise(model, clips()) == recognise(model, clips())


def test_too_short_clips_never_reach_funasr(model: Any) -> None:
    # funasr's fbank kills the process on an empty or one-sample clip
    short = [np.zeros(0, np.float32), np.zeros(1, np.float32),
             np.zeros(MIN_SAMPLES - 1, np.float32)]
    results = recognise(model, [*short, clips()[0]])
    assert results[:3] == [(EMPTY, 0.0)] * 3
    assert results[3] == recognise(model, clips()[:1])[0]
    assert recognise(model, []) == []


def test_load_is_quiet(model: Any, tiny_folder: Path, capsys: pytest.CaptureFixture[str],
                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    load_sensevoice(str(tiny_folder), "cpu")
    assert capsys.readouterr().out == ""
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    assert (root.handlers, root.level) == (handlers, level)


def test_a_moved_folder_still_loads(model: Any, tiny_folder: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for file in tiny_folder.iterdir():
        (moved / file.name).write_bytes(file.read_bytes())
    assert len(recognise(load_sensevoice(str(moved), "cpu"), clips()[:1])) == 1


def test_missing_folder_is_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"sensevoice\.model = .*no such folder"):
        load_sensevoice(str(tmp_path / "nowhere"), "cpu")


def test_folder_without_weights_is_model_unavailable(tiny_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_bytes((tiny_folder / "config.yaml").read_bytes())
    with pytest.raises(ModelUnavailable, match=r"no weights \(model\.pt\)"):
        load_sensevoice(str(tmp_path), "cpu")


def test_broken_config_is_model_unavailable(model: Any, tiny_folder: Path,
                                            tmp_path: Path) -> None:
    for file in tiny_folder.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    config = (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(config.replace("model: SenseVoiceSmall",
                                                         "model: NoSuchModel"))
    with pytest.raises(ModelUnavailable) as caught:
        load_sensevoice(str(tmp_path), "cpu")
    message = str(caught.value)
    assert message.startswith("sensevoice.model = ") and "\n" not in message
