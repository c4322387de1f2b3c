"""Atomic outputs and error files, on real files."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from daemon.config import MEDIA_EXTENSIONS
from daemon.domain import Cue, Transcript
from daemon.errors import InputError, TransientError, classify_os_error
from daemon.writer import Outbox, atomic_write, sweep_temp_files


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.srt"
    atomic_write(target, "one\n")
    atomic_write(target, "two\n")
    assert target.read_text() == "two\n"
    assert os.listdir(target.parent) == ["b.srt"]


def test_failed_write_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "b.srt"

    def boom(*_a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, "x")
    assert os.listdir(tmp_path) == []


def test_sweep_removes_only_our_temp_files(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".subwatch-abc.tmp").write_text("partial")
    (tmp_path / "keep.tmp").write_text("not ours")
    assert sweep_temp_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d", "keep.tmp"]


def test_outbox_paths_mirror_folders(tmp_path: Path) -> None:
    box = Outbox(tmp_path, "{stem}.{lang}.{ext}", ["srt", "vtt"])
    assert box.target("shows/s01/-rf $(x).mkv", "en", "srt") == \
        tmp_path / "shows/s01/-rf $(x).en.srt"
    assert box.error_path("a/b.c.mp4") == tmp_path / "a/b.c.error.json"
    with pytest.raises(ValueError):
        box.target("../escape.mp4", "en", "srt")
    transcript = Transcript("en", 2.0, (), (Cue(0.0, 1.0, ("Hi.",)),))
    written = box.write("a/b.c.mp4", transcript)
    assert [p.name for p in written] == ["b.c.en.srt", "b.c.en.vtt"]


def test_existing_subtitle_matches_language_codes_only(tmp_path: Path) -> None:
    box = Outbox(tmp_path, "{stem}.{lang}.{ext}", ["srt"])
    (tmp_path / "movie.part2.en.srt").write_text("x")
    assert box.existing_subtitle("movie.mkv", None) is None
    (tmp_path / "movie.de.srt").write_text("x")
    assert box.existing_subtitle("movie.mkv", None) == tmp_path / "movie.de.srt"
    assert box.existing_subtitle("movie.mkv", "en") is None


def test_error_file_fields(tmp_path: Path) -> None:
    box = Outbox(tmp_path, "{stem}.{lang}.{ext}", ["srt"])
    path = box.write_error("sub/bad.mp4", "not_media", "not a readable media file", 1)
    record = json.loads(path.read_text())
    assert set(record) == {"input", "error", "message", "attempts", "failed_at"}
    assert record["input"] == "sub/bad.mp4" and record["error"] == "not_media"


def one_cue() -> Transcript:
    return Transcript("en", 2.0, (), (Cue(0.0, 1.0, ("Hi.",)),))


def inbox_with(tmp_path: Path, *names: str) -> tuple[Path, Outbox]:
    inbox = tmp_path / "inbox"
    for name in names:
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(b"media")
    box = Outbox(tmp_path / "outbox", "{stem}.{lang}.{ext}", ["srt", "vtt"], inbox=inbox,
                 extensions=MEDIA_EXTENSIONS)
    return inbox, box


def test_same_stem_inputs_get_distinct_outputs(tmp_path: Path) -> None:
    """a.mp4 and a.mkv in one folder: each names its outputs after its whole file name, so
    neither overwrites the other; a file whose stem nobody shares keeps the plain name."""
    _inbox, box = inbox_with(tmp_path, "show/a.mp4", "show/a.MKV", "show/b.mp4")
    mp4 = box.write("show/a.mp4", one_cue())
    mkv = box.write("show/a.MKV", one_cue())
    lone = box.write("show/b.mp4", one_cue())
    assert [p.name for p in mp4] == ["a.mp4.en.srt", "a.mp4.en.vtt"]
    assert [p.name for p in mkv] == ["a.MKV.en.srt", "a.MKV.en.vtt"]
    assert [p.name for p in lone] == ["b.en.srt", "b.en.vtt"]
    assert box.error_path("show/a.mp4") != box.error_path("show/a.MKV")
    assert box.existing_subtitle("show/a.MKV", None) == mkv[0]


def test_success_removes_only_its_own_error_file(tmp_path: Path) -> None:
    """An error file written while a file was alone (plain name) is still its own: its later
    success removes it, and never the error file of a sibling with the same stem."""
    inbox, box = inbox_with(tmp_path, "c.mp4", "d.mkv")
    own_old = box.write_error("c.mp4", "io_error", "share busy", 3)
    sibling_old = box.write_error("d.mkv", "not_media", "no", 1)
    (inbox / "c.mkv").write_bytes(b"media")
    (inbox / "d.mp4").write_bytes(b"media")
    sibling = box.write_error("c.mkv", "not_media", "not a readable media file", 1)
    assert sibling.name == "c.mkv.error.json" and own_old.name == "c.error.json"
    box.write("c.mp4", one_cue())
    box.write("d.mp4", one_cue())
    assert not own_old.exists()
    assert sibling.exists() and sibling_old.exists()
    assert json.loads(sibling_old.read_text())["input"] == "d.mkv"


def test_long_names_fit_name_max_and_stay_distinct(tmp_path: Path) -> None:
    """A 250-byte input name would give a 257-byte subtitle name: stems are cut to fit 255
    bytes with a short hash of the whole name, so two long names stay apart."""
    stem = "é" * 100 + "x" * 49  # 249 bytes: the input names are 254
    first, second = f"{stem}1.wav", f"{stem}2.wav"
    _inbox, box = inbox_with(tmp_path, first, second)
    paths = [*box.write(first, one_cue()), *box.write(second, one_cue()),
             box.write_error(first, "x", "y", 1), box.write_error(second, "x", "y", 1)]
    assert all(len(os.fsencode(p.name)) <= 255 for p in paths)
    assert len({p.name for p in paths}) == 6 and all(p.is_file() for p in paths)
    assert box.target(first, "en", "srt") == paths[0]  # the same name every time
    assert paths[0].name.startswith("é" * 100)
    assert box.target("short.wav", "en", "srt").name == "short.en.srt"


def test_os_errors_that_cannot_heal_are_permanent(tmp_path: Path) -> None:
    """A name too long, an invalid argument, a read-only filesystem or a symlink loop fail the
    same way on every retry: permanent. Storage trouble stays transient."""
    with pytest.raises(OSError) as too_long:
        (tmp_path / ("x" * 300)).write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(OSError) as loop:
        (tmp_path / "loop" / "x").write_text("x")
    for exc in (too_long.value, loop.value, OSError(errno.EINVAL, "Invalid argument"),
                OSError(errno.EROFS, "Read-only file system")):
        assert isinstance(classify_os_error(exc, "cannot write"), InputError), exc
    for code in (errno.ENOSPC, errno.EIO, errno.ENOENT, errno.EACCES):
        assert isinstance(classify_os_error(OSError(code, "x"), "cannot write"), TransientError)


def test_error_file_is_written_where_its_own_folder_cannot_be(tmp_path: Path) -> None:
    """An outbox root longer than the inbox's pushes a deep folder past PATH_MAX: the error
    file cannot go beside the subtitle, so it goes to the outbox root under a hashed name, with
    `input` saying whose it is (a failed job always leaves its error file)."""
    deep = "/".join(["d" * 200] * 20)  # 4 KiB of folders: fine in the inbox, not below a root
    box = Outbox(tmp_path / ("o" * 250), "{stem}.{lang}.{ext}", ["srt"])  # 250 bytes longer
    path = box.write_error(f"{deep}/bad.mp4", "not_media", "not a readable media file", 1)
    assert path.parent == box.root and path.name.endswith(".error.json")
    assert json.loads(path.read_text())["input"] == f"{deep}/bad.mp4"
    assert box.write_error(f"{deep}/bad.mp4", "not_media", "again", 2) == path  # predictable
    box.clear_error(f"{deep}/bad.mp4")
    assert not path.exists()
