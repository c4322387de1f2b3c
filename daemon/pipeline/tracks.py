"""Which audio stream of a file to transcribe, and where it sits on the file's timeline.

Dual-audio films and anime carry several audio streams; the first is often not the one the user
wants subtitles for. The choice, by the container's own tags: the stream in the preferred
language (the library's `language`, else `whisper.language`), else the one flagged default,
else the first. The chosen stream's language (from its tag) is what the subtitle is in when
nothing else says so.

WEB-DL files often start their audio stream later than the container (subgen PR #305,
Bazarr #3154): decoded samples begin at the audio's first frame, while players time subtitles
from the container's start, so every cue must move by the audio's `start_time` less the
container's (`offset_seconds`).

Also here: what a probe of the file's header says (duration, embedded subtitle streams), for
the skip rules. Opening goes through decode's guards (a plain media demuxer only, opened once
without following links), so a probe reads nothing a decode would refuse.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..naming import normalize
from .opening import open_container, open_input

log = logging.getLogger(__name__)

AV_TIME_BASE = 1_000_000  # FFmpeg's unit for the container's start_time and duration


@dataclass(frozen=True)
class TrackChoice:
    """The audio stream to decode and why.

    `index` is the container's stream index (`container.streams[index]`), `audio_index` the
    stream's place among the audio streams (FFmpeg's `0:a:N`); `language` the ISO 639-1 code
    its tag names (None: untagged or unknown); `offset_seconds` where its first sample sits on
    the container's timeline (add it to every cue time); `reason` one of "language",
    "default", "first"."""

    index: int
    audio_index: int
    language: str | None
    offset_seconds: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "audio_index": self.audio_index,
                "language": self.language, "offset_seconds": self.offset_seconds,
                "reason": self.reason}


@dataclass(frozen=True)
class EmbeddedSubtitle:
    index: int
    language: str | None  # ISO 639-1, None when untagged
    forced: bool
    codec: str


@dataclass(frozen=True)
class MediaInfo:
    """What the header of a media file says, for the skip rules."""

    duration: float | None  # seconds; None when the container does not say
    audio: TrackChoice | None  # the stream that would be transcribed
    audio_languages: tuple[str | None, ...]  # every audio stream's language, in order
    subtitles: tuple[EmbeddedSubtitle, ...]


def preferred_language(config: Config, library_language: str | None = None) -> str | None:
    """The audio language to look for: the library's, else `whisper.language`, else English
    for an English-only model transcribing (it can hear nothing else); None prefers none."""
    whisper = config.whisper
    if library_language:
        return library_language
    if whisper.language != "auto":
        return whisper.language
    if whisper.task == "transcribe" and whisper.model.endswith(".en"):
        return "en"
    return None


def stream_language(stream: Any) -> str | None:
    """A stream's language tag as an ISO 639-1 code (None for none, `und`, or unknown)."""
    return normalize(stream.metadata.get("language") or stream.metadata.get("LANGUAGE"))


def _flag(stream: Any, name: str) -> bool:
    import av

    return bool(int(stream.disposition) & int(getattr(av.stream.Disposition, name)))


def audio_offset(container: Any, stream: Any) -> float:
    """Seconds from the container's start to the stream's first sample (0 when either start is
    unknown), rounded to the millisecond."""
    if stream.start_time is None or container.start_time is None:
        return 0.0
    start = float(stream.start_time * stream.time_base)
    return round(max(0.0, start - container.start_time / AV_TIME_BASE), 3)


def frame_offset(container: Any, frame: Any) -> float | None:
    """Seconds from the container's start to a decoded frame's first sample (None when the
    frame has no timestamp). Given the first frame a decode yields, this is where decoded
    sample 0 sits: it follows a decoder that drops priming samples, which the header's
    `start_time` does not, so a decode should prefer it to `TrackChoice.offset_seconds`."""
    if frame.pts is None or frame.time_base is None:
        return None
    start = (container.start_time or 0) / AV_TIME_BASE
    return round(max(0.0, float(frame.pts * frame.time_base) - start), 3)


def choose_audio(container: Any, preferred: str | None = None) -> TrackChoice | None:
    """The audio stream to transcribe from an open PyAV container; None when it has none.
    `preferred` is any language spelling (`ja`, `jpn`, `Japanese`); "auto" or None prefers
    nothing."""
    streams = list(container.streams.audio)
    if not streams:
        return None
    wanted = normalize(preferred) if preferred and preferred != "auto" else None
    picked, reason = streams[0], "first"
    by_language = [s for s in streams if wanted and stream_language(s) == wanted]
    defaults = [s for s in streams if _flag(s, "default")]
    if by_language:
        picked, reason = by_language[0], "language"
    elif defaults and len(streams) > 1:
        picked, reason = defaults[0], "default"
    return TrackChoice(picked.index, streams.index(picked), stream_language(picked),
                       audio_offset(container, picked), reason)


def embedded_subtitles(container: Any) -> tuple[EmbeddedSubtitle, ...]:
    return tuple(EmbeddedSubtitle(s.index, stream_language(s), _flag(s, "forced"),
                                  s.codec_context.name if s.codec_context else "")
                 for s in container.streams.subtitles)


def container_duration(container: Any) -> float | None:
    if container.duration:
        return float(container.duration) / AV_TIME_BASE
    durations = [float(s.duration * s.time_base) for s in container.streams
                 if s.duration and s.time_base]
    return max(durations) if durations else None


@contextlib.contextmanager
def opened(path: Path, within: Path | None = None) -> Iterator[Any]:
    """`path` as an open PyAV container, through decode's guards (see the module docstring).
    Raises what PyAV and `open_input` raise, and InputError for a demuxer that is not plain
    media."""
    with open_input(path, within) as fh, open_container(fh) as container:
        yield container


def probe(path: Path, preferred: str | None = None,
          within: Path | None = None) -> MediaInfo | None:
    """The header of `path`, or None when it cannot be read as media (the job itself then
    fails with the decoder's clear reason; a skip rule never guesses)."""
    try:
        with opened(path, within) as container:
            return MediaInfo(container_duration(container), choose_audio(container, preferred),
                             tuple(stream_language(s) for s in container.streams.audio),
                             embedded_subtitles(container))
    except Exception as exc:  # PyAV's errors, an unreadable file, a refused demuxer
        log.debug("cannot probe %s: %s", path, exc)
        return None
