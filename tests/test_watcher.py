"""Discovery on real folders: filters, settling, symlinks, events and polling."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from daemon.config import WatchConfig
from daemon.watcher import Settled, Settler, Watcher, choose_mode, is_candidate_name, scan

EXTS = WatchConfig().extensions


@pytest.mark.parametrize("rel, ok", [
    ("movie.mkv", True),
    ("Show/S01/E01.MP4", True),
    ("-rf $(x).mp4", True),
    ("line\nbreak.wav", True),
    ("notes.txt", False),
    (".hidden.mp4", False),
    (".done/old.mp4", False),
    ("dl/movie.mp4.part", False),
    ("movie.partial", False),
    ("movie.mp4.crdownload", False),
    ("~lock.wav", False),
    ("upload.tmp", False),
    ("noext", False),
])
def test_candidate_names(rel: str, ok: bool) -> None:
    assert is_candidate_name(rel, EXTS) is ok


def test_scan_skips_symlinks_outside_and_non_recursive(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    (inbox / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"x")
    (inbox / "a.wav").write_bytes(b"x")
    (inbox / "sub" / "b.mp3").write_bytes(b"x")
    os.symlink(outside / "secret.wav", inbox / "evil.wav")
    os.symlink(inbox / "a.wav", inbox / "alias.wav")
    assert scan(inbox, WatchConfig()) == ["a.wav", "alias.wav", "sub/b.mp3"]
    assert scan(inbox, WatchConfig(recursive=False)) == ["a.wav", "alias.wav"]


def test_scan_of_missing_inbox_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        scan(tmp_path / "gone", WatchConfig())


def test_settler_waits_for_size_and_mtime_to_hold(tmp_path: Path) -> None:
    (tmp_path / "f.wav").write_bytes(b"a")
    settler = Settler(tmp_path, settle_seconds=2.0)
    settler.add("f.wav")
    assert settler.tick(now=0.0) == []
    with open(tmp_path / "f.wav", "ab") as fh:
        fh.write(b"more")
    assert settler.tick(now=1.9) == []  # changed: the clock restarts
    assert settler.tick(now=3.8) == []
    (done,) = settler.tick(now=4.0)
    assert done.rel_path == "f.wav" and done.size == 5
    assert len(settler) == 0


def test_auto_mode_polls_on_network_filesystems(monkeypatch: pytest.MonkeyPatch) -> None:
    import daemon.watcher as watcher

    for fstype, mode in (("nfs4", "poll"), ("cifs", "poll"), ("fuse.sshfs", "poll"),
                         ("ext4", "events"), ("overlay", "events")):
        monkeypatch.setattr(watcher, "filesystem_type", lambda _p, f=fstype: f)
        assert choose_mode("auto", Path("/x")) == mode
    assert choose_mode("poll", Path("/x")) == "poll"


@pytest.mark.parametrize("mode", ["events", "poll"])
async def test_watcher_admits_each_file_once_after_a_slow_copy(tmp_path: Path, mode: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    admitted: list[Settled] = []

    async def admit(item: Settled) -> None:
        admitted.append(item)

    cfg = WatchConfig(mode=mode, settle_seconds=1.0, poll_interval=0.3)
    watcher = Watcher(inbox, cfg, lambda rel, _st: any(a.rel_path == rel for a in admitted),
                      admit)
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(0.5)
    assert watcher.state == "watching" and watcher.mode == mode

    def slow_copy() -> None:
        with open(inbox / "slow.wav", "wb") as fh:
            for _ in range(6):
                fh.write(os.urandom(20000))
                fh.flush()
                time.sleep(0.4)  # shorter than settle_seconds

    copier = threading.Thread(target=slow_copy)
    copier.start()
    (inbox / "deep" / "er").mkdir(parents=True)
    (inbox / "deep" / "er" / "quick.mp3").write_bytes(b"y" * 10)
    while copier.is_alive():
        await asyncio.sleep(0.1)
        assert all(a.rel_path != "slow.wav" for a in admitted), "admitted while still growing"
    deadline = time.monotonic() + 10
    while len(admitted) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sorted(a.rel_path for a in admitted) == ["deep/er/quick.mp3", "slow.wav"]
    slow = next(a for a in admitted if a.rel_path == "slow.wav")
    assert slow.size == 120000


async def test_watcher_survives_a_vanishing_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    admitted: list[str] = []

    async def admit(item: Settled) -> None:
        admitted.append(item.rel_path)

    cfg = WatchConfig(mode="events", settle_seconds=0.2, rescan_seconds=0.3)
    watcher = Watcher(inbox, cfg, lambda rel, _st: rel in admitted, admit)
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(0.5)
    inbox.rename(tmp_path / "unmounted")
    for _ in range(30):
        await asyncio.sleep(0.1)
        if watcher.state == "unavailable":
            break
    assert watcher.state == "unavailable" and "unavailable" in (watcher.last_error or "")
    (tmp_path / "unmounted").rename(inbox)
    (inbox / "back.wav").write_bytes(b"z")
    for _ in range(50):
        await asyncio.sleep(0.1)
        if admitted:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert admitted == ["back.wav"] and watcher.state == "watching"
