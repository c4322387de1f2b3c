"""Decode any container PyAV can open into 16 kHz mono float32, and say clearly why not.

faster-whisper's own `decode_audio` silently skips undecodable frames and gives an empty array for
a file with no audio; a daemon needs the reason instead (no audio stream, not media, corrupt), and
a stop request honoured mid-file, so this is a small decoder of our own on the same library.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..domain import SAMPLE_RATE, Audio
from ..errors import Cancelled, InputError, classify_os_error
from ..models import ModelSpec
from .base import JobState, StageContext

# A file whose frames fail this often is damaged beyond what is worth transcribing.
MAX_BAD_FRAME_RATIO = 0.5

ProgressFn = Callable[[float], None]


class DecodeStage:
    """Any container PyAV reads → 16 kHz mono float32."""

    name = "decode"
    weight = 10.0

    def models(self) -> tuple[ModelSpec, ...]:
        return ()

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        ctx.report.progress(0.0, "decoding")
        audio = decode(state.path, ctx.cancel, ctx.report.progress)
        ctx.report.progress(1.0, f"{audio.duration:.1f} s of audio",
                            audio_seconds=round(audio.duration, 3))
        return state.grow(audio=audio)


def decode(path: Path, cancel: threading.Event | None = None,
           progress: ProgressFn | None = None) -> Audio:
    """The whole audio track of `path`, resampled; raises InputError/TransientError/Cancelled."""
    import av

    try:
        if path.stat().st_size == 0:
            raise InputError("empty_file", "the file is empty (0 bytes)")
        with av.open(str(path), metadata_errors="ignore") as container:
            return _decode_container(container, cancel, progress)
    except av.error.InvalidDataError as exc:
        raise InputError("not_media", f"not a readable media file ({_reason(exc)})") from None
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError) and exc.errno not in (None, 0) and not _is_data_error(exc):
            raise classify_os_error(exc, "cannot read the file") from None
        raise InputError("corrupt", f"the media cannot be decoded ({_reason(exc)})") from None
    except OSError as exc:
        raise classify_os_error(exc, "cannot read the file") from None


def _decode_container(container: Any, cancel: threading.Event | None,
                      progress: ProgressFn | None) -> Audio:
    import av

    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise InputError("no_audio", f"the file has no audio stream (it has: {', '.join(kinds)})")
    stream = container.streams.audio[0]
    total = float(stream.duration * stream.time_base) if stream.duration else (
        container.duration / 1_000_000 if container.duration else None)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    pieces: list[np.ndarray] = []
    decoded_seconds = 0.0
    for frame in _frames(container, stream):
        if cancel is not None and cancel.is_set():
            raise Cancelled("stopped while decoding")
        for out in resampler.resample(frame):
            pieces.append(out.to_ndarray().reshape(-1))
        if frame.time is not None:
            decoded_seconds = frame.time
        if progress and total:
            progress(min(decoded_seconds / total, 1.0))
    for out in resampler.resample(None):
        pieces.append(out.to_ndarray().reshape(-1))
    if not pieces:
        raise InputError("no_audio", "the audio stream holds no decodable sound")
    joined = np.concatenate(pieces)
    pieces.clear()  # keep the peak at int16 + float32, not two int16 copies besides
    samples = joined.astype(np.float32)
    del joined
    samples /= 32768.0
    return Audio(samples=samples)


def _frames(container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames; a few damaged packets are skipped, a mostly damaged file is refused."""
    import av

    good = bad = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            bad += 1
            continue
        good += 1
        yield from frames
    if bad and bad > MAX_BAD_FRAME_RATIO * (good + bad):
        raise InputError("corrupt", f"{bad} of {good + bad} audio packets are damaged")


def _is_data_error(exc: Exception) -> bool:
    import av

    return isinstance(exc, (av.error.InvalidDataError, av.error.EOFError,
                            av.error.PatchWelcomeError, av.error.DecoderNotFoundError,
                            av.error.DemuxerNotFoundError, av.error.BugError))


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
