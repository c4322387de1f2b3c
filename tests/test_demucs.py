"""Demucs separation: loading through the users' path, sizes, failures, and block-wise separation.

Random weights separate nothing, so these check plumbing and bounds, not quality. Two models:
a tiny HTDemucs saved as a demucs checkpoint (the real library path end to end, kept to a few
forward passes because even a tiny HTDemucs costs ~0.5 s per second of audio on a CPU), and an
identity "model" (vocals = the mix) that runs through the real `apply_model`, cheap enough for
the 7 s block tests, and exact enough to show the seams: with it the output must be the input.
"""

from __future__ import annotations

import shutil
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("demucs")

from daemon.errors import Cancelled, ModelUnavailable  # noqa: E402
from daemon.pipeline.demucs_engine import (  # noqa: E402
    block_spans,
    demucs_bytes,
    load_demucs,
    release_demucs,
    separate_vocals,
)
from daemon.pipeline.separate import Region, separate_region  # noqa: E402
from testkit.tiny_demucs import make_tiny_demucs  # noqa: E402

SR = 16000
MODEL_SR = 44100


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The tiny model is too small to gain from threads, and on a shared CPU OpenMP's waiting
    threads spin: with torch's default (all cores) this file took 26 s on a busy 2-core machine
    instead of 4 s. torch's thread count is per process, so it is put back afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("demucs")
    return folder, make_tiny_demucs(folder)


@pytest.fixture(scope="module")
def tiny(repo: tuple[Path, str]) -> Any:
    folder, sig = repo
    return load_demucs(sig, str(folder), "cpu")


def identity_model(on_forward: Callable[[], None] = lambda: None) -> Any:
    """Sources = (silence, silence, silence, the mix): what comes back is what went in."""
    import torch

    class Identity(torch.nn.Module):
        sources = ["drums", "bass", "other", "vocals"]
        samplerate = MODEL_SR
        audio_channels = 2
        segment = 1.0

        def forward(self, mix: torch.Tensor) -> torch.Tensor:
            on_forward()
            silent = torch.zeros_like(mix)
            return torch.stack([silent, silent, silent, mix], dim=1)

    return Identity()


@pytest.fixture
def blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of the mix in each of our calls to apply_model. apply_model calls itself (once
    per demucs segment) through the same module name, so only outermost calls are counted."""
    import demucs.apply

    real = demucs.apply.apply_model
    lengths: list[int] = []
    depth = [0]

    def counting(model: Any, mix: Any, **kwargs: Any) -> Any:
        if depth[0] == 0:
            lengths.append(int(mix.shape[-1]))
        depth[0] += 1
        try:
            return real(model, mix, **kwargs)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(demucs.apply, "apply_model", counting)
    return lengths


def tones(seconds: float, offset: float = 0.0) -> np.ndarray:
    """A mix of tones well inside the band the 16k <-> 44.1k round trip keeps."""
    t = np.arange(int(seconds * SR)) / SR
    parts = ((0.3, 220.0), (0.2, 1000.0), (0.1, 3100.0))
    mix = sum(a * np.sin(2 * np.pi * f * t) for a, f in parts)
    return (mix + offset).astype(np.float32)


def noise(seconds: float) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(int(seconds * SR))).astype(np.float32)


def model_length(seconds: float) -> int:
    """Samples at the model's rate for `seconds` of 16 kHz audio (julius' full length)."""
    return -(-int(seconds * SR) * MODEL_SR // SR)


# ---------------------------------------------------------------------------- loading


def test_loads_through_the_users_path(tiny: Any) -> None:
    from demucs.htdemucs import HTDemucs

    assert isinstance(tiny, HTDemucs)
    assert not tiny.training
    assert "vocals" in tiny.sources and tiny.samplerate == MODEL_SR
    assert next(tiny.parameters()).device.type == "cpu"


def test_auto_device_is_cpu_without_a_gpu(repo: tuple[Path, str]) -> None:
    import torch

    folder, sig = repo
    model = load_demucs(sig, str(folder), "auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(model.parameters()).device.type == expected


def test_a_bag_yaml_in_the_repo_loads(repo: tuple[Path, str], tmp_path: Path) -> None:
    from demucs.apply import BagOfModels

    folder, sig = repo
    shutil.copy(folder / f"{sig}.th", tmp_path / f"{sig}.th")
    (tmp_path / "mybag.yaml").write_text(f"models: ['{sig}']\n")
    assert isinstance(load_demucs("mybag", str(tmp_path), "cpu"), BagOfModels)
    assert demucs_bytes("mybag", str(tmp_path)) == demucs_bytes(sig, str(folder)) > 0


def assert_one_line(exc: pytest.ExceptionInfo[ModelUnavailable], *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_an_unknown_name_is_model_unavailable(repo: tuple[Path, str]) -> None:
    folder, _ = repo
    with pytest.raises(ModelUnavailable) as exc:
        load_demucs("nosuchmodel", str(folder), "cpu")
    assert_one_line(exc, "separation.model = 'nosuchmodel'", "separation.repo",
                    "neither a single pre-trained model or a bag")


def test_a_missing_folder_is_model_unavailable_not_an_exit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelUnavailable) as exc:
        load_demucs("htdemucs", str(tmp_path / "missing"), "cpu")
    assert_one_line(exc, "separation.model = 'htdemucs'", "separation.repo", "not a folder")
    assert capsys.readouterr().err == ""


def test_a_corrupt_checkpoint_is_model_unavailable(tmp_path: Path) -> None:
    (tmp_path / "broken.th").write_bytes(b"not a checkpoint\n" * 10)
    with pytest.raises(ModelUnavailable) as exc:
        load_demucs("broken", str(tmp_path), "cpu")
    assert_one_line(exc, "separation.model = 'broken'", "separation.repo")


def test_demucs_exiting_the_process_becomes_model_unavailable(
        repo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """demucs.utils.fatal calls sys.exit(1), which in a worker thread ends only the thread."""
    import demucs.pretrained

    def fatal(*args: Any, **kwargs: Any) -> Any:
        raise SystemExit(1)

    monkeypatch.setattr(demucs.pretrained, "get_model", fatal)
    folder, sig = repo
    with pytest.raises(ModelUnavailable) as exc:
        load_demucs(sig, str(folder), "cpu")
    assert_one_line(exc, "separation.model", "SystemExit")


def test_cuda_without_a_gpu_is_model_unavailable(repo: tuple[Path, str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    folder, sig = repo
    with pytest.raises(ModelUnavailable) as exc:
        load_demucs(sig, str(folder), "cuda")
    assert_one_line(exc, "separation.device = 'cuda'")


def test_size_is_the_checkpoint_held_as_float32(repo: tuple[Path, str], tiny: Any) -> None:
    folder, sig = repo
    size = demucs_bytes(sig, str(folder))
    assert size == 2 * (folder / f"{sig}.th").stat().st_size
    held = sum(t.numel() * t.element_size() for t in tiny.state_dict().values())
    assert held <= size < 2 * held
    assert demucs_bytes("nosuchmodel", str(folder)) == 0
    assert demucs_bytes("nosuchmodel", "") == 0
    release_demucs()  # a no-op; it must simply be callable


# ---------------------------------------------------------------------------- separation


def test_separates_a_few_seconds(tiny: Any, blocks: list[int]) -> None:
    mix = noise(1.5)
    vocals = separate_vocals(tiny, mix)
    assert vocals.dtype == np.float32 and vocals.shape == mix.shape
    assert np.isfinite(vocals).all()
    assert 0 < np.abs(vocals).max() < 10 * np.abs(mix).max()
    assert blocks == [model_length(1.5)]  # shorter than a block: one call


def test_real_model_in_blocks_matches_one_block(tiny: Any, blocks: list[int]) -> None:
    """1.5 s in 1 s blocks with 0.25 s overlap: two blocks, joined without a hole or a jump;
    what differs from the one-block result is the context each block lacks, not a seam."""
    mix = noise(1.5)
    whole = separate_vocals(tiny, mix)
    parts = separate_vocals(tiny, mix, block_seconds=1.0, overlap_seconds=0.25)
    assert blocks[1:] == [model_length(1.0), model_length(0.75)]
    assert parts.dtype == np.float32 and parts.shape == mix.shape and np.isfinite(parts).all()
    seam = parts[int(0.75 * SR):SR]
    assert np.count_nonzero(seam == 0) == 0
    rms = float(np.sqrt(np.mean(whole**2)))
    assert float(np.sqrt(np.mean((parts - whole) ** 2))) < 0.25 * rms


def test_blocks_join_without_seams(blocks: list[int]) -> None:
    """7 s in 2 s blocks with 0.5 s overlap through the identity model: five calls, none longer
    than a block, and the output is the input everywhere, seams included."""
    mix = tones(7.0, offset=0.05)
    vocals = separate_vocals(identity_model(), mix, block_seconds=2.0, overlap_seconds=0.5)
    assert len(blocks) == 5 and max(blocks) == model_length(2.0)
    assert vocals.dtype == np.float32 and vocals.shape == mix.shape
    assert np.abs(vocals - mix).max() < 0.02
    whole = separate_vocals(identity_model(), mix)
    assert np.abs(vocals - whole).max() < 0.02


def test_block_spans_cover_the_input_once_with_overlaps() -> None:
    assert list(block_spans(7 * SR, 2 * SR, SR // 2)) == [
        (0, 32000), (24000, 56000), (48000, 80000), (72000, 104000), (96000, 112000)]
    assert list(block_spans(100, 200, 10)) == [(0, 100)]


def test_silence_stays_silent() -> None:
    vocals = separate_vocals(identity_model(), np.zeros(SR, dtype=np.float32))
    assert np.isfinite(vocals).all() and not vocals.any()


def test_empty_and_read_only_input() -> None:
    assert separate_vocals(identity_model(), np.zeros(0, dtype=np.float32)).shape == (0,)
    frozen = np.frombuffer(tones(0.5).tobytes(), dtype=np.float32)  # read-only, like a buffer
    assert separate_vocals(identity_model(), frozen).shape == frozen.shape


def test_cancel_is_honoured_between_blocks(monkeypatch: pytest.MonkeyPatch,
                                           blocks: list[int]) -> None:
    """A cancel that comes as the first block finishes: that block ran whole (three 1 s
    segments for 2 s), the next never starts."""
    import demucs.apply

    cancel = threading.Event()
    counting: Callable[..., Any] = demucs.apply.apply_model
    depth = [0]
    forwards: list[int] = []

    def then_cancel(model: Any, mix: Any, **kwargs: Any) -> Any:
        depth[0] += 1
        try:
            return counting(model, mix, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:  # our call, not apply_model's own per segment
                cancel.set()

    monkeypatch.setattr(demucs.apply, "apply_model", then_cancel)
    with pytest.raises(Cancelled, match="stopped while separating"):
        separate_vocals(identity_model(lambda: forwards.append(1)), tones(7.0), cancel,
                        block_seconds=2.0, overlap_seconds=0.5)
    assert len(blocks) == 1 and len(forwards) == 3


def test_cancel_is_honoured_inside_a_block(blocks: list[int]) -> None:
    """One 7 s block is seven-plus demucs segments; a cancel during the first stops the rest."""
    cancel = threading.Event()
    forwards: list[int] = []

    def first_forward_cancels() -> None:
        forwards.append(1)
        cancel.set()

    with pytest.raises(Cancelled, match="stopped while separating"):
        separate_vocals(identity_model(first_forward_cancels), tones(7.0), cancel)
    assert len(blocks) == 1 and len(forwards) == 1


def test_a_cancel_before_the_start_runs_nothing(blocks: list[int]) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        separate_vocals(identity_model(), tones(1.0), cancel)
    assert blocks == []


@pytest.mark.parametrize("block, overlap", [(0.0, 0.0), (2.0, 2.0), (2.0, -1.0)])
def test_impossible_blocks_are_refused(block: float, overlap: float) -> None:
    with pytest.raises(ValueError, match="overlap < block"):
        separate_vocals(identity_model(), tones(1.0), block_seconds=block,
                        overlap_seconds=overlap)


def test_a_spooled_film_is_separated_a_region_at_a_time_with_the_same_samples(
        tiny: Any, tmp_path: Path) -> None:
    """Before, separating any stretch of a spooled film loaded the film whole (230 MB an hour);
    now a region is read, separated and put back: the same vocals as in memory, bit for bit,
    while memory holds a region."""
    from daemon.pipeline.decode import decode
    from testkit.media import encode

    path = encode(tmp_path / "film.flac", noise(120.0), sample_rate=SR)
    held, spooled = decode(path), decode(path, spool=tmp_path / "spool")
    todo = [Region(s * SR, (s + 2) * SR) for s in (10, 50, 100)]
    try:
        for region in todo:
            separate_region(tiny, held, region, None, 30.0)
        tracemalloc.start()
        try:
            for region in todo:
                separate_region(tiny, spooled, region, None, 30.0)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert not np.array_equal(held.samples, decode(path).samples)  # vocals went in
        assert np.array_equal(spooled.read(0, spooled.length), held.samples)
        assert peak < held.length * 4 // 8, peak  # the film is 7.7 MB of float32
    finally:
        spooled.close()


def test_regions_merge_flagged_spans_but_never_past_the_longest_stretch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans flagged back to back (a musical) would merge into one region as long as the film;
    a region stops at REGION_SECONDS and the next starts where it ends: each sample once."""
    from daemon.domain import SpanVerdict, SpeechSpan
    from daemon.pipeline import separate

    monkeypatch.setattr(separate, "REGION_SECONDS", 10.0)
    spans = [SpeechSpan(t * SR // 2, t * SR // 2 + int(1.8 * SR)) for t in range(0, 60, 4)]
    verdicts = [SpanVerdict(s.start / SR, s.end / SR, True, 1.0, "music") for s in spans]
    out = separate.regions(spans, verdicts, SR, (0, 40 * SR))
    assert len(out) >= 3 and all(r.end - r.start <= 10 * SR for r in out)
    assert all(a.end == b.start for a, b in zip(out, out[1:], strict=False))
    assert out[0].start == 0 and out[-1].end == spans[-1].end + SR // 2
