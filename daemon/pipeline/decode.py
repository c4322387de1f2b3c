"""Decode any plain media file PyAV can open into 16 kHz mono float32, and say clearly why not.

faster-whisper's own `decode_audio` silently skips undecodable frames and gives an empty array for
a file with no audio; a daemon needs the reason instead (no audio stream, not media, corrupt), and
a stop request honoured mid-file, so this is a small decoder of our own on the same library.

Of several audio streams, the one in the wanted language is decoded (`tracks.choose_audio`),
and where it starts after the container does, that offset comes back with it: the pipeline
moves every time by it, since players time subtitles from the container's start.

A file in the inbox is hostile until proven otherwise, so the decoder also (`opening`):
- reads only what it opened itself: the path is resolved once, opened without following links,
  checked (through the descriptor) to lie inside the inbox, and decoded from that descriptor, so
  a symlink re-pointed after admission cannot redirect the read;
- lets FFmpeg use only demuxers of self-contained media (`MEDIA_DEMUXERS`): a concat list,
  a playlist or an image sequence names other files, which would read outside the inbox, repeat
  one file into hours, or recurse until the process runs out of descriptors;
- bounds the work (`DecodeLimits`): `jobs.max_duration`, checked from the container's own
  duration before decoding and on the samples actually decoded (headers lie), and the bytes the
  decoded audio holds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..domain import SAMPLE_RATE, Audio
from ..errors import Cancelled, InputError, classify_os_error
from ..libraries import language_for_path, libraries_of
from ..models import ModelSpec, memory_status
from ..naming import whisper_code
from .base import JobState, StageContext
from .opening import inside, open_container, open_input
from .spool import PcmSpool
from .tracks import TrackChoice, choose_audio, frame_offset, preferred_language

# A file whose frames fail this often is damaged beyond what is worth transcribing.
MAX_BAD_FRAME_RATIO = 0.5

# Decoded samples (at the file's own rate) resampled at once: about 10 s at 48 kHz.
GROUP_SAMPLES = 500_000
# At the peak of joining the pieces, each sample is held as int16 (2 bytes) and float32 (4).
PEAK_BYTES_PER_SAMPLE = 6

ProgressFn = Callable[[float], None]


@dataclass(frozen=True)
class DecodeLimits:
    """How much one input may cost: seconds of audio and bytes held (0 = no limit)."""

    max_seconds: float = 0.0
    max_bytes: int = 0

    def check_declared(self, seconds: float | None) -> None:
        """Early: the container's own duration, before anything is decoded."""
        if self.max_seconds and seconds and seconds > self.max_seconds:
            raise InputError("too_long", f"the file lasts {_clock(seconds)}, longer than "
                                         f"jobs.max_duration = {self.max_seconds:g} s")

    def check_decoded(self, samples: int) -> None:
        """While decoding: what was really decoded (a header may claim less)."""
        if self.max_seconds and samples > self.max_seconds * SAMPLE_RATE:
            raise InputError("too_long", f"its audio runs past jobs.max_duration = "
                                         f"{self.max_seconds:g} s ({_clock(self.max_seconds)})")
        if self.max_bytes and samples * PEAK_BYTES_PER_SAMPLE > self.max_bytes:
            raise InputError("too_large", f"its decoded audio would take more than "
                                          f"{self.max_bytes / 2**30:.1f} GiB of memory, the most "
                                          "one file may take here")


def limits_for(config: Config) -> DecodeLimits:
    """`jobs.max_duration`, and at most half the memory this process may use (the machine's, or
    its cgroup's) for one file's decoded audio, whatever the duration limit says."""
    try:
        allowed = memory_status()[1]
    except (OSError, ValueError, KeyError):
        allowed = 0
    return DecodeLimits(config.jobs.max_duration, allowed // 2)


def confinement(path: Path, config: Config) -> Path | None:
    """The folder a read of `path` must stay inside: the inbox or the media library it is
    named in (every job: a link inside a library that leads out of it is not followed, whoever
    named the file, the watcher or a webhook), nothing for a file named elsewhere (`subwatch
    transcribe` on the user's own file, an upload the daemon itself stored)."""
    named = os.path.abspath(path)
    for library in libraries_of(config):
        if inside(named, os.path.abspath(library.root)):
            return library.root
    return None


class DecodeStage:
    """Any plain media file PyAV reads → 16 kHz mono float32."""

    name = "decode"
    weight = 10.0

    def models(self) -> tuple[ModelSpec, ...]:
        return ()

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        ctx.report.progress(0.0, "decoding")
        library_language = language_for_path(ctx.config, state.path)
        audio, chosen = decode_track(
            state.path, ctx.cancel, ctx.report.progress, limits_for(ctx.config),
            confinement(state.path, ctx.config), spool_folder(ctx.config),
            preferred_language(ctx.config, library_language))
        ctx.report.progress(1.0, f"{audio.duration:.1f} s of audio",
                            audio_seconds=round(audio.duration, 3), track=chosen.as_dict())
        hint = library_language or chosen.language
        return state.grow(audio=audio, track=chosen.as_dict(), offset=chosen.offset_seconds,
                          language_hint=whisper_code(hint) if hint else None)


def spool_folder(config: Config) -> Path:
    """Where decoded audio is spooled: beside the journal, on disk (see `spool`)."""
    return config.paths.state_dir / "spool"


def decode(path: Path, cancel: threading.Event | None = None,
           progress: ProgressFn | None = None, limits: DecodeLimits = DecodeLimits(),
           within: Path | None = None, spool: Path | None = None) -> Audio:
    """The audio of `path` (see `decode_track`), without saying which stream it was."""
    return decode_track(path, cancel, progress, limits, within, spool)[0]


def decode_track(path: Path, cancel: threading.Event | None = None,
                 progress: ProgressFn | None = None, limits: DecodeLimits = DecodeLimits(),
                 within: Path | None = None, spool: Path | None = None,
                 language: str | None = None) -> tuple[Audio, TrackChoice]:
    """One audio stream of `path`, resampled; raises InputError/TransientError/Cancelled.
    With `within`, the file read must lie inside that folder (links resolved). With `spool`,
    the samples go to a temporary file in that folder, not memory (`SpooledAudio`). The
    stream is the one in `language`, else the default-flagged one, else the first
    (`tracks.choose_audio`): that choice comes back with the offset of the first decoded
    sample on the container's timeline."""
    sink: _Sink = _Spooled(PcmSpool(spool), limits) if spool is not None else _Samples(limits)
    try:
        return _decode_into(sink, path, cancel, progress, limits, within, language)
    except BaseException:
        sink.discard()
        raise


def _decode_into(sink: _Sink, path: Path, cancel: threading.Event | None,
                 progress: ProgressFn | None, limits: DecodeLimits, within: Path | None,
                 language: str | None) -> tuple[Audio, TrackChoice]:
    import av

    try:
        with open_input(path, within) as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise InputError("empty_file", "the file is empty (0 bytes)")
            with open_container(fh) as container:
                chosen = _decode_container(container, sink, cancel, progress, limits, language)
                return sink.audio(), chosen
    except av.error.InvalidDataError as exc:
        raise InputError("not_media", f"not a readable media file ({_reason(exc)})") from None
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError) and exc.errno not in (None, 0) and not _is_data_error(exc):
            raise classify_os_error(exc, "cannot read the file") from None
        raise InputError("corrupt", f"the media cannot be decoded ({_reason(exc)})") from None
    except OSError as exc:
        raise classify_os_error(exc, "cannot read the file") from None


def _decode_container(container: Any, sink: _Sink, cancel: threading.Event | None,
                      progress: ProgressFn | None, limits: DecodeLimits,
                      language: str | None) -> TrackChoice:
    import av

    choice = choose_audio(container, language)
    if choice is None:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise InputError("no_audio", f"the file has no audio stream (it has: {', '.join(kinds)})")
    stream = container.streams[choice.index]
    total = float(stream.duration * stream.time_base) if stream.duration else (
        container.duration / 1_000_000 if container.duration else None)
    limits.check_declared(total)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    offset = None
    for frame in _grouped(_frames(container, stream)):
        if cancel is not None and cancel.is_set():
            raise Cancelled("stopped while decoding")
        if offset is None:  # the first frame: where decoded sample 0 sits (tracks.frame_offset)
            offset = frame_offset(container, frame)
        sink.add(resampler.resample(frame))
        if progress and total:
            progress(min(sink.count / SAMPLE_RATE / total, 1.0))
    sink.add(resampler.resample(None))
    return replace(choice, offset_seconds=choice.offset_seconds if offset is None else offset)


def _grouped(frames: Iterator[Any]) -> Iterator[Any]:
    """Frames joined into pieces of about `GROUP_SAMPLES` before resampling, as faster-whisper's
    own decoder does: an AAC film is 1 024-sample frames, and a resampler call (and a progress
    report) for each cost 1.6 s per 20 minutes. The first frame goes alone, with its timestamp,
    so the offset of decoded sample 0 is read from it."""
    import av

    fifo = av.AudioFifo()
    for number, frame in enumerate(frames):
        if number == 0:
            yield frame
            continue
        frame.pts = None  # joined frames are one stream: no timestamp checks between them
        fifo.write(frame)
        if fifo.samples >= GROUP_SAMPLES:
            yield fifo.read()
    if fifo.samples:
        yield fifo.read()


class _Sink:
    """Where the resampled int16 pieces of one file go, counted against the limits."""

    def __init__(self, limits: DecodeLimits) -> None:
        self._limits = limits
        self.count = 0

    def add(self, frames: Iterable[Any]) -> None:
        for out in frames:
            piece = out.to_ndarray().reshape(-1)
            self._keep(piece)
            self.count += len(piece)
        self._limits.check_decoded(self.count)

    def audio(self) -> Audio:
        if not self.count:
            raise InputError("no_audio", "the audio stream holds no decodable sound")
        return self._audio()

    def _keep(self, piece: np.ndarray) -> None:
        raise NotImplementedError

    def _audio(self) -> Audio:
        raise NotImplementedError

    def discard(self) -> None:
        """Drop what was kept (the job failed or stopped)."""


class _Samples(_Sink):
    """In memory: the pieces joined at the end (decoding without a spool folder)."""

    def __init__(self, limits: DecodeLimits) -> None:
        super().__init__(limits)
        self._pieces: list[np.ndarray] = []

    def _keep(self, piece: np.ndarray) -> None:
        self._pieces.append(piece)

    def _audio(self) -> Audio:
        joined = np.concatenate(self._pieces)
        self._pieces.clear()  # keep the peak at int16 + float32, not two int16 copies besides
        samples = joined.astype(np.float32)
        del joined
        samples /= 32768.0
        return Audio(samples)


class _Spooled(_Sink):
    """On disk: each piece appended to the spool as it comes; memory holds one frame."""

    def __init__(self, spool: PcmSpool, limits: DecodeLimits) -> None:
        # the bytes guard is about memory, which a spool does not use: only the duration
        # holds (a 1 GiB NAS would refuse every film past 93 minutes otherwise)
        super().__init__(replace(limits, max_bytes=0))
        self._spool = spool

    def _keep(self, piece: np.ndarray) -> None:
        self._spool.write(piece)

    def _audio(self) -> Audio:
        return self._spool.audio()

    def discard(self) -> None:
        self._spool.discard()


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


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
