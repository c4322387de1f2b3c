"""Opening a file from the inbox the way every reader must: a hostile file until proven
otherwise (see decode's docstring). Decode, the track probe and the upload check share it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError

# FFmpeg demuxers that read one self-contained audio or video file (names as in
# `container.format.name`). Everything else is refused: concat/ffconcat, hls, dash, image2,
# sdp/rtsp, tee, lavfi and the like open other files or URLs by name.
MEDIA_DEMUXERS = frozenset({
    "mov", "mp4", "m4a", "matroska", "webm", "mp3", "wav", "w64", "flac", "ogg", "aac", "asf",
    "avi", "mpegts", "mpeg", "flv", "aiff", "caf", "wv", "ape", "amr", "ac3", "eac3", "dts",
    "truehd", "mlp", "au", "rm", "nut", "dv", "loas", "tta", "dsf", "mpc", "mpc8", "xwma",
})
# format_whitelist: FFmpeg refuses any other demuxer while probing, before it reads anything
# the file names; enable_drefs=0: MOV's external data references stay off (FFmpeg's default).
DEMUX_OPTIONS = {"format_whitelist": ",".join(sorted(MEDIA_DEMUXERS)), "enable_drefs": "0"}
REFUSED_NOTE = ("concat lists, playlists, image sequences and other formats that refer to other "
                "files are refused")


def open_input(path: Path, within: Path | None = None) -> BinaryIO:
    """`path` opened once for reading: resolved, opened without following a link, a regular
    file, and (with `within`) inside that folder as the descriptor itself says, so nothing
    re-pointed between the check and the read can move the read elsewhere."""
    real = os.path.realpath(path)
    if within is not None and not inside(real, os.path.realpath(within)):
        raise InputError("outside_inbox", "the file resolves to a place outside the inbox")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError("not_a_file", "not a regular file")
        if within is not None and not inside(_opened_path(fd) or real,
                                              os.path.realpath(within)):
            raise InputError("outside_inbox", "the file was moved outside the inbox while "
                                              "it was being opened")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _opened_path(fd: int) -> str | None:
    """Where an open descriptor really points (Linux), or None where that cannot be asked."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def open_container(fh: BinaryIO) -> Any:
    """The container, from a media demuxer only; a reference format is a permanent error."""
    import av

    try:
        container = av.open(fh, metadata_errors="ignore", options=DEMUX_OPTIONS)
    except av.error.ArgumentError:  # EINVAL: what FFmpeg says of a demuxer off the whitelist
        raise InputError("unsafe_container",
                         f"not a plain media file: {_looks_like(fh)} ({REFUSED_NOTE})") from None
    if not set(container.format.name.split(",")) & MEDIA_DEMUXERS:  # in case a build ignores
        container.close()                                            # format_whitelist
        raise InputError("unsafe_container", f"not a plain media file: FFmpeg reads it as "
                                             f"{container.format.name!r} ({REFUSED_NOTE})")
    return container


def _looks_like(fh: BinaryIO) -> str:
    """A name for what the file is, for the error message, from its first bytes."""
    fh.seek(0)
    head = fh.read(64).lstrip()
    if head.startswith(b"ffconcat"):
        return "an FFmpeg concat list"
    if head.startswith(b"#EXTM3U"):
        return "a playlist"
    return "FFmpeg reads it only with a demuxer that is not for audio or video files"
