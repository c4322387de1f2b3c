"""Atomic outputs and error files, on real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from daemon.domain import Cue, Transcript
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
