"""Media files as libraries hold them, written with PyAV: several audio streams with language
tags and default flags, an audio stream that starts late, embedded subtitle streams (forced or
not), and trees of many small files.

Audio is encoded by FFmpeg's own encoders through PyAV, and subtitle packets are muxed as a
real muxer writes them, so every probe in the tests reads a file FFmpeg wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from daemon.config import Config, config_from_dict
from daemon.service import Service
from daemon.worker import Transcribe
from testkit.media import SR

FORMATS = {"mkv": "matroska", "mp4": "mp4", "mov": "mov"}


@dataclass(frozen=True)
class AudioSpec:
    """One audio stream: its samples (None: `seconds` of silence), its language tag, its
    default flag, and where it starts on the container's timeline."""

    samples: np.ndarray | None = None
    seconds: float = 1.0
    language: str | None = None
    default: bool = False
    start: float = 0.0
    sample_rate: int = SR

    def pcm(self) -> np.ndarray:
        if self.samples is not None:
            return np.asarray(self.samples, dtype=np.float32)
        return np.zeros(int(self.seconds * self.sample_rate), np.float32)


@dataclass(frozen=True)
class SubtitleSpec:
    """One embedded SubRip stream with a single cue."""

    language: str | None = "eng"
    forced: bool = False
    text: str = "An embedded line."


def build_media(path: Path, audio: Sequence[AudioSpec] = (AudioSpec(),),
                subtitles: Sequence[SubtitleSpec] = (), video_seconds: float | None = 1.0,
                ext: str | None = None) -> Path:
    """A container with a small video stream from 0 s (None: no video), the audio streams,
    and the subtitle streams (Matroska only), in that stream order."""
    import av

    ext = ext or path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=FORMATS[ext]) as out:
        video = _video_stream(out) if video_seconds else None
        streams = [_audio_stream(out, spec) for spec in audio]
        subs = [_subtitle_stream(out, spec) for spec in subtitles]
        if video is not None and video_seconds:
            _encode_video(out, video, video_seconds)
        for stream, spec in zip(streams, audio, strict=True):
            _encode_audio(out, stream, spec)
        for stream, sub_spec in zip(subs, subtitles, strict=True):
            _mux_cue(out, stream, sub_spec.text)
    return path


def _video_stream(out: object) -> object:
    stream = out.add_stream("mpeg4", rate=10)  # type: ignore[attr-defined]
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    return stream


def _audio_stream(out: object, spec: AudioSpec) -> object:
    import av

    stream = out.add_stream("aac", rate=spec.sample_rate)  # type: ignore[attr-defined]
    stream.layout = "mono"
    if spec.language:
        stream.metadata["language"] = spec.language
    stream.disposition = av.stream.Disposition.default if spec.default else 0
    return stream


def _subtitle_stream(out: object, spec: SubtitleSpec) -> object:
    import av

    stream = out.add_mux_stream("subrip")  # type: ignore[attr-defined]
    if spec.language:
        stream.metadata["language"] = spec.language
    stream.disposition = av.stream.Disposition.forced if spec.forced else 0
    return stream


def _encode_video(out: object, stream: object, seconds: float) -> None:
    import av

    for n in range(max(1, int(seconds * 10))):
        img = np.full((48, 64, 3), (n * 7) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = n
        out.mux(stream.encode(frame))  # type: ignore[attr-defined]
    out.mux(stream.encode(None))  # type: ignore[attr-defined]


def _encode_audio(out: object, stream: object, spec: AudioSpec) -> None:
    """The samples as frames whose timestamps begin at `spec.start`."""
    import av

    ctx = stream.codec_context  # type: ignore[attr-defined]
    rate = ctx.sample_rate
    resampler = av.AudioResampler(format=ctx.format, layout=ctx.layout, rate=rate,
                                  frame_size=ctx.frame_size or None)
    pcm, first = spec.pcm(), round(spec.start * rate)
    pts = first
    frames = []
    for i in range(0, len(pcm), 4096):
        chunk = np.ascontiguousarray(pcm[i:i + 4096]).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate = spec.sample_rate
        frames += resampler.resample(frame)
    frames += resampler.resample(None)
    for frame in frames:
        frame.pts, frame.time_base = pts, Fraction(1, rate)
        pts += frame.samples
        out.mux(stream.encode(frame))  # type: ignore[attr-defined]
    out.mux(stream.encode(None))  # type: ignore[attr-defined]


def _mux_cue(out: object, stream: object, text: str) -> None:
    import av

    packet = av.Packet(text.encode("utf-8"))
    packet.stream = stream
    packet.time_base = Fraction(1, 1000)
    packet.pts = packet.dts = 0
    packet.duration = 1000
    out.mux(packet)  # type: ignore[attr-defined]


def build_tree(root: Path, count: int, template: Path, per_folder: int = 20,
               depth: int = 3) -> list[Path]:
    """`count` copies of `template` in a nested library (`Show 007/Season 2/…/Episode 13.mkv`),
    `per_folder` to a folder, folders `depth` deep; the copies' paths, sorted."""
    paths = []
    for n in range(count):
        folder = root / f"Show {n // per_folder:03d}"
        for level in range(1, depth):
            folder = folder / f"Season {(n // per_folder) % (level + 2) + 1}"
        paths.append(folder / f"Show {n // per_folder:03d} - E{n:04d}{template.suffix}")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
    return sorted(paths)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones too) → the SHA-256 of its content: a listing to
    compare before and after, which shows anything added, changed or removed."""
    import hashlib

    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def library_config(root: Path, libraries: Sequence[dict[str, Any]] = (),
                   **tables: dict[str, Any]) -> Config:
    """A config rooted in `root` (inbox, outbox, state there) with fast settling, the given
    `[[libraries]]` entries (paths relative to `root`) and other tables."""
    raw: dict[str, Any] = {
        "watch": {"settle_seconds": 0.3, "poll_interval": 0.5},
        "jobs": {"retry_backoff_seconds": 0.2},
        "http": {"port": 0},
    }
    for name, values in tables.items():
        raw.setdefault(name, {}).update(values)
    if libraries:
        raw["libraries"] = [dict(lib) for lib in libraries]
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    return config_from_dict(raw, base=root)


@contextlib.asynccontextmanager
async def serve(config: Config, transcribe: Transcribe | None = None) -> AsyncIterator[Service]:
    """A started in-process daemon (real watchers, journal, HTTP) until the block ends."""
    service = Service(config, pipeline=transcribe)
    await service.startup()
    main = asyncio.create_task(service.main_loop())
    try:
        yield service
    finally:
        service.stopping.set()
        await main
        await service.shutdown()
