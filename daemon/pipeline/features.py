"""Whisper's log-Mel features in a fraction of faster-whisper's memory, bit for bit the same.

faster-whisper's `FeatureExtractor` takes the short-time Fourier transform of the whole input at
once: the windowed frames (float32), numpy's complex128 transform, a complex64 copy and the
magnitudes are all alive together, about 7 KB per 10 ms frame: 170 MB for 4 minutes of speech,
2.5 GB per hour. `StreamedFeatures` transforms `PIECE_FRAMES` frames at a time, read from the
audio itself (no padded copy), into one float32 array of magnitudes (0.8 KB per frame) and then
runs the same Mel projection, log and clamp over the whole of it. Every frame's transform is
independent of the others, and the projection sees the same array, shape and layout as
faster-whisper's, so the features are identical (tests/test_features.py); only the peak
memory changes, and with it the length of speech one Whisper call can take
(transcribe.GROUP_SECONDS).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

# 10 s of frames per transform: its working set (the frames, numpy's complex128 transform and
# its complex64 copy) is about 10 MB; at 30 s it was 25 MB, on top of the magnitudes, and no
# faster (each frame's transform is its own, so the size changes nothing in the result)
PIECE_FRAMES = 1_000


class StreamedFeatures(FeatureExtractor):  # type: ignore[misc]
    """A drop-in `FeatureExtractor` (the model's `feature_extractor`) with a bounded working set."""

    def __call__(self, waveform: np.ndarray, padding: int = 160,
                 chunk_length: int | None = None) -> np.ndarray:
        if chunk_length is not None:  # as faster-whisper's: the model's window length
            self.n_samples = chunk_length * self.sampling_rate
            self.nb_max_frames = self.n_samples // self.hop_length
        magnitudes = self._magnitudes(_Centred(waveform, padding, self.n_fft // 2))
        spec: np.ndarray = self.mel_filters @ magnitudes
        del magnitudes
        # faster-whisper's log, clamp and scale, each in place: the same float32 operations
        # (so the same bits) without four more arrays of the features' size
        np.clip(spec, 1e-10, None, out=spec)
        np.log10(spec, out=spec)
        np.maximum(spec, spec.max() - 8.0, out=spec)
        spec += 4.0
        spec /= 4.0
        return spec

    def _magnitudes(self, source: _Centred) -> np.ndarray:
        """|STFT|² of every frame but the last (faster-whisper drops it), as one C-ordered
        (bins, frames) float32 array, transformed a piece of frames at a time."""
        n_fft, hop = self.n_fft, self.hop_length
        frames = 1 + (source.length - n_fft) // hop
        window = np.hanning(n_fft + 1)[:-1].astype("float32")
        out = np.empty((n_fft // 2 + 1, frames - 1), np.float32)
        for first in range(0, frames - 1, PIECE_FRAMES):
            last = min(first + PIECE_FRAMES, frames - 1)
            piece = source.slice(first * hop, (last - 1) * hop + n_fft)
            out[:, first:last] = _power(piece, last - first, n_fft, hop, window)
        return out


class _Centred:
    """The input as faster-whisper's stft sees it (`padding` zeros after the audio, then
    `edge` samples reflected at each end, as numpy's reflect pad makes them), read a slice at
    a time without a padded copy of the whole: a slice inside the audio is a view of it, one
    that reaches an end is built from an index map."""

    def __init__(self, waveform: np.ndarray, padding: int, edge: int) -> None:
        self.audio = waveform.astype(np.float32, copy=False)
        self.n = len(self.audio) + padding  # the body the reflection mirrors
        self.edge = edge
        self.length = self.n + 2 * edge
        self.small: np.ndarray | None = None
        if self.n <= edge:  # too short to reflect once: numpy's repeated reflection
            self.small = np.pad(np.pad(self.audio, (0, padding)), edge, mode="reflect")

    def slice(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end) of the padded input."""
        if self.small is not None:
            return self.small[start:end]
        first, stop = start - self.edge, end - self.edge  # in the body's own indices
        if first >= 0 and stop <= len(self.audio):
            return self.audio[first:stop]
        at = np.abs(np.arange(first, stop))  # the left end mirrors x[1:edge + 1]
        beyond = at >= self.n
        at[beyond] = 2 * (self.n - 1) - at[beyond]  # the right end mirrors x[-edge - 1:-1]
        out = np.zeros(end - start, np.float32)  # the padding's zeros stay zero
        real = at < len(self.audio)
        out[real] = self.audio[at[real]]
        return out


def _power(piece: np.ndarray, count: int, n_fft: int, hop: int,
           window: np.ndarray) -> np.ndarray:
    """|FFT|² of the `count` frames in `piece`, computed as faster-whisper's stft does
    (complex128 transform of float32 windowed frames, then complex64)."""
    frames = np.lib.stride_tricks.as_strided(
        piece, (count, n_fft), (hop * piece.strides[0], piece.strides[0]))
    spectrum = np.fft.rfft(frames * window, n=n_fft, axis=-1).T.astype(np.complex64)
    power: np.ndarray = np.abs(spectrum) ** 2
    return power


def streamed(model: Any) -> Any:
    """`model` (a faster-whisper WhisperModel) with its feature extractor swapped for the
    streamed one of the same settings; returned for chaining at load time."""
    extractor = getattr(model, "feature_extractor", None)
    if isinstance(extractor, FeatureExtractor) and not isinstance(extractor, StreamedFeatures):
        model.feature_extractor = StreamedFeatures(**model.feat_kwargs)
    return model
