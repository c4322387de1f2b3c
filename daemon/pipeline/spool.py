"""Decoded audio kept on disk rather than in memory: what lets a 3-hour film fit beside a
media server on a small NAS.

Decoding a whole file to float32 costs 230 MB per audio hour, held for the whole job. The
decoder writes the 16 kHz int16 samples to an unlinked temporary file in `state_dir` instead
(115 MB per hour of disk, gone when the job ends or the process dies, since no name points
at it), and stages read back only the windows they work on. A sample read back is the same
float32 the in-memory path gives (int16 / 32768), bit for bit.

The folder is `state_dir`, not the system's temp folder: on Debian that is a tmpfs, i.e.
memory again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from ..domain import SAMPLE_RATE, Audio
from ..errors import SPOOL_FULL, TransientError

log = logging.getLogger(__name__)

BYTES_PER_SAMPLE = 2  # int16
FLOAT_BYTES = 4  # an edited sample, float32 as the stages hold it
SCALE = 32768.0


class PcmSpool:
    """The writing side: int16 pieces appended as the decoder makes them."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._file: IO[bytes] = _temporary_file(folder)
        self.count = 0

    def write(self, piece: np.ndarray) -> None:
        with _no_room(self._folder):
            self._file.write(np.ascontiguousarray(piece, dtype=np.int16).tobytes())
        self.count += len(piece)

    def audio(self) -> SpooledAudio:
        """The finished spool as audio to read from (the spool hands its file over)."""
        with _no_room(self._folder):
            self._file.flush()
        return SpooledAudio(self._file, self.count, overlay_folder=self._folder)

    def discard(self) -> None:
        """Close and so free the file; what is still buffered is dropped, never an error (the
        disk that refused it is what the job failed on)."""
        try:
            self._file.close()
        except OSError:
            pass


class SpooledAudio(Audio):
    """Audio read from a spool file window by window; `samples` (the whole array) is loaded
    only for a stage that asks for it, and then kept. What a stage changes (`editing`: the
    separated vocals of a flagged stretch) goes to an overlay beside the spool, as float32, and
    every later read sees it: a film with music is separated without being loaded whole."""

    def __init__(self, file: IO[bytes], length: int, sample_rate: int = SAMPLE_RATE,
                 overlay_folder: Path | None = None) -> None:
        super().__init__(np.zeros(0, np.float32), sample_rate)
        self._file = file
        self._length = length
        self._loaded: np.ndarray | None = None
        self._overlay = Overlay(overlay_folder)

    @property
    def samples(self) -> np.ndarray:
        if self._loaded is None:
            self._loaded = self._pread(0, self._length)
        return self._loaded

    @property
    def length(self) -> int:
        return self._length

    def read(self, start: int, end: int) -> np.ndarray:
        start, end = max(0, start), min(end, self._length)
        if self._loaded is not None:
            return self._loaded[start:end]
        return self._pread(start, end)

    @contextlib.contextmanager
    def editing(self, start: int, end: int) -> Iterator[np.ndarray]:
        if self._loaded is not None:
            yield self._loaded[start:end]
            return
        start, end = max(0, start), min(end, self._length)
        samples = self.read(start, end)  # a fresh array, with earlier edits in it
        yield samples
        self._overlay.write(start, samples)

    def close(self) -> None:
        self._loaded = None
        self._overlay.close()
        self._file.close()

    def _pread(self, start: int, end: int) -> np.ndarray:
        if end <= start:
            return np.zeros(0, np.float32)
        want = (end - start) * BYTES_PER_SAMPLE
        raw = os.pread(self._file.fileno(), want, start * BYTES_PER_SAMPLE)
        if len(raw) != want:
            raise OSError(f"the audio spool ended early ({len(raw)} of {want} bytes)")
        samples = np.frombuffer(raw, np.int16).astype(np.float32)
        samples /= SCALE
        return self._overlay.over(start, samples)


class Overlay:
    """Edited stretches of a spooled audio, as float32 at their own place in an unlinked,
    sparse file (4 bytes a sample where something was written, nothing elsewhere): the edits
    keep every bit, cost disk rather than memory, and go with the spool."""

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder or Path(tempfile.gettempdir())
        self._file: IO[bytes] | None = None
        self._spans: list[tuple[int, int]] = []  # edited [start, end), merged, in order

    def write(self, start: int, samples: np.ndarray) -> None:
        with _no_room(self._folder):
            if self._file is None:
                self._file = _temporary_file(self._folder)
            data = memoryview(np.ascontiguousarray(samples, np.float32).tobytes())
            at = start * FLOAT_BYTES
            while data:
                n = os.pwrite(self._file.fileno(), data, at)
                data, at = data[n:], at + n
        self._spans = _merged([*self._spans, (start, start + len(samples))])

    def over(self, start: int, samples: np.ndarray) -> np.ndarray:
        """`samples` (read from `start` of the spool) with the edits inside them put in."""
        end = start + len(samples)
        for lo, hi in self._spans:
            lo, hi = max(lo, start), min(hi, end)
            if lo < hi and self._file is not None:
                raw = os.pread(self._file.fileno(), (hi - lo) * FLOAT_BYTES, lo * FLOAT_BYTES)
                if len(raw) != (hi - lo) * FLOAT_BYTES:
                    raise OSError("the overlay of edited audio ended early")
                samples[lo - start:hi - start] = np.frombuffer(raw, np.float32)
        return samples

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._spans = []


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


@contextlib.contextmanager
def _no_room(folder: Path) -> Iterator[None]:
    """A spool that cannot be written (state_dir full) is the daemon's shortage, not the
    file's: the job waits for room without being charged an attempt."""
    try:
        yield
    except OSError as exc:
        raise TransientError(SPOOL_FULL, f"no room for the decoded audio in "
                                           f"{folder}: {exc.strerror or exc}") from None


def _temporary_file(folder: Path) -> IO[bytes]:
    """An unlinked file in `folder`; in the system's temp folder where `folder` cannot be
    made or written (`subwatch transcribe` run by a user with the service's config, whose
    state_dir is not theirs; a read-only state folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        return tempfile.TemporaryFile(dir=folder, prefix="pcm-")
    except OSError as exc:
        log.debug("cannot spool in %s (%s); using %s", folder, exc, tempfile.gettempdir())
        return tempfile.TemporaryFile(prefix="subwatch-pcm-")
