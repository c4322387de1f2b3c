"""The streamed log-Mel features are faster-whisper's, bit for bit, in bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from daemon.pipeline import Pipeline
from daemon.pipeline.features import PIECE_FRAMES, StreamedFeatures, streamed
from testkit.media import Speech

SR = 16000


def noise(samples: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(samples) * 0.1).astype(np.float32)


@pytest.mark.parametrize("samples", [
    200, 201, 400, SR, 30 * SR, 30 * SR + 77,  # shorter than one piece of frames
    PIECE_FRAMES * 160 - 160, PIECE_FRAMES * 160, PIECE_FRAMES * 160 + 1,  # at a piece's edge
    61 * SR + 5, 300 * SR + 1,  # several pieces, the last one partial
])
def test_streamed_features_equal_faster_whispers_bit_for_bit(samples: int) -> None:
    audio = noise(samples, seed=samples)
    ours, theirs = StreamedFeatures(), FeatureExtractor()
    assert np.array_equal(ours(audio), theirs(audio))
    assert np.array_equal(ours(audio, padding=0), theirs(audio, padding=0))
    assert np.array_equal(ours(audio, chunk_length=30), theirs(audio, chunk_length=30))
    assert (ours.n_samples, ours.nb_max_frames) == (theirs.n_samples, theirs.nb_max_frames)


def test_streamed_features_of_speech_equal_theirs(short_speech: Speech) -> None:
    """Real speech (quiet stretches clamp at the max - 8 floor) is no different from noise."""
    long = np.concatenate([short_speech.samples] * 12)
    assert np.array_equal(StreamedFeatures()(long), FeatureExtractor()(long))


def test_streamed_features_peak_memory_is_a_fraction_of_faster_whispers() -> None:
    """The transform's working set is a piece of frames: for 5 minutes, under a third of
    faster-whisper's peak (its whole-input transform holds about 7 KB per frame)."""
    audio = noise(300 * SR)
    peaks = {}
    for name, extractor in (("ours", StreamedFeatures()), ("theirs", FeatureExtractor())):
        tracemalloc.start()
        extractor(audio)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["ours"] < peaks["theirs"] / 3, peaks


def test_streamed_swaps_the_models_extractor_once(pipeline: Pipeline) -> None:
    model = streamed(pipeline.model("whisper"))
    extractor = model.feature_extractor
    assert isinstance(extractor, StreamedFeatures)
    assert extractor.mel_filters.shape == (80, 201)
    assert streamed(model).feature_extractor is extractor
