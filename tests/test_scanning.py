"""Scanning at library scale: what discovery costs in a tree it has already seen.

An event looks at what it names, never the whole tree; poll mode walks the tree once per
`poll_interval` (no second walker); the journal is asked only about files new or changed since
the walk before, and about all of them every `rescan_seconds`; a new file is admitted
`poll_interval + settle_seconds` after it lands. Folder listings are counted through the audit
events CPython raises for every `os.scandir` / `os.listdir` in the process, watchdog's included,
so the counts hold whatever code does the listing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_watcher import FrozenClock, Seen, stop_watcher

from daemon.config import WatchConfig
from daemon.watcher import Settler, Watcher, scan_files
from testkit.daemon import DaemonProcess, lose_inotify_events, wait_until
from testkit.disks import small_tmpfs


class Listings:
    """The folders under `root` listed (by any code in this process) while in the block,
    inbox-relative, one entry per listing."""

    _recording: ClassVar[list[Listings]] = []
    _hooked: ClassVar[bool] = False

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.folders: list[str] = []

    def __enter__(self) -> Listings:
        if not Listings._hooked:  # an audit hook cannot be removed: one, for the session
            sys.addaudithook(Listings._audit)
            Listings._hooked = True
        Listings._recording.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        Listings._recording.remove(self)

    def count(self, folder: str) -> int:
        return self.folders.count(folder)

    @staticmethod
    def _audit(event: str, args: tuple[Any, ...]) -> None:
        if event not in ("os.scandir", "os.listdir") or not Listings._recording:
            return
        try:  # an exception here would be raised in the code doing the listing
            path = os.fsdecode(os.fspath(args[0])) if args and args[0] is not None else "."
            for rec in list(Listings._recording):
                if path == rec.root or path.startswith(rec.root + "/"):
                    rec.folders.append(path[len(rec.root) + 1:])
        except Exception:
            pass


def library(inbox: Path, shows: int = 12, files: int = 20) -> list[str]:
    """A small library: `shows` folders with a season folder each, mostly .nfo/.jpg/.srt and a
    few media files. Returns the media files' inbox-relative paths."""
    media = []
    for s in range(shows):
        season = inbox / f"Show {s:02d}" / "Season 01"
        season.mkdir(parents=True)
        for n in range(files):
            ext = ("mkv", "mp4")[n % 2] if n < 3 else ("nfo", "jpg", "srt")[n % 3]
            (season / f"E{n:02d}.{ext}").write_bytes(b"x" * (n + 1))
            if n < 3:
                media.append(f"Show {s:02d}/Season 01/E{n:02d}.{ext}")
    return sorted(media)


@pytest.fixture
def seen() -> Seen:
    """What was admitted is known from then on, as in the journal; look-ups are counted."""
    return Seen()


async def started(watcher: Watcher) -> asyncio.Task[None]:
    task = asyncio.create_task(watcher.run())
    await wait_until(lambda: watcher.state == "watching", 20, "the first scan")
    return task


async def walked(watcher: Watcher, clock: FrozenClock, seconds: float) -> None:
    """Move the watcher's clock on by `seconds`, and wait until the walk that makes due has
    ended as the watcher sees it: counted, and the next one scheduled. The count alone is not
    enough: it moves in the walk's thread, before the loop schedules the next walk from the
    clock, and a clock moved on again in between puts that next walk out of reach."""
    before = watcher.scans
    clock.now += seconds
    await wait_until(lambda: watcher.scans > before and watcher.describe()["next_scan_in"] > 0,
                     20, "a walk")


async def all_admitted(seen: Seen, names: list[str]) -> None:
    await wait_until(lambda: set(names) <= set(seen.admitted), 30, f"{names} admitted")


# ---------------------------------------------------------------------------- events mode

async def test_a_file_event_lists_no_folder_and_asks_the_journal_only_about_that_file(
        tmp_path: Path, seen: Seen) -> None:
    inbox = tmp_path / "inbox"
    media = library(inbox)
    cfg = WatchConfig(mode="events", settle_seconds=0.2, rescan_seconds=3600)
    watcher = Watcher(inbox, cfg, seen.is_known, seen.admit)
    task = await started(watcher)
    await all_admitted(seen, media)
    seen.looked_up.clear()
    with Listings(inbox) as listed:
        for _ in range(3):  # a copy in progress: a file grows in several writes
            with open(inbox / "Show 03" / "Season 01" / "new.mkv", "ab") as fh:
                fh.write(b"y" * 1000)
            await asyncio.sleep(0.05)
        await all_admitted(seen, ["Show 03/Season 01/new.mkv"])
        await asyncio.sleep(1.0)  # a few more ticks: nothing else happens after the admission
    await stop_watcher(task)
    assert listed.folders == [], listed.folders  # before: the whole tree, once a tick
    assert set(seen.looked_up) <= {"Show 03/Season 01/new.mkv"}, seen.looked_up
    assert watcher.scans == 1


async def test_a_folder_moved_in_is_scanned_alone_with_its_subfolders(
        tmp_path: Path, seen: Seen) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    media = library(inbox)
    (outside / "New Show" / "Season 01").mkdir(parents=True)
    (outside / "New Show" / "Season 01" / "E01.mkv").write_bytes(b"z")
    (outside / "New Show" / "poster.jpg").write_bytes(b"z")
    cfg = WatchConfig(mode="events", settle_seconds=0.2, rescan_seconds=3600)
    watcher = Watcher(inbox, cfg, seen.is_known, seen.admit)
    task = await started(watcher)
    await all_admitted(seen, media)
    seen.looked_up.clear()
    with Listings(inbox) as listed:
        (outside / "New Show").rename(inbox / "New Show")  # its files bring no events
        await all_admitted(seen, ["New Show/Season 01/E01.mkv"])
        await asyncio.sleep(1.0)
    await stop_watcher(task)
    ours = [f for f in listed.folders if f.startswith("New Show")]
    assert set(listed.folders) == set(ours), listed.folders  # no other folder listed
    assert set(seen.looked_up) == {"New Show/Season 01/E01.mkv"}, seen.looked_up
    assert watcher.describe()["folder_scans"] >= 1 and watcher.scans == 1


# ---------------------------------------------------------------------------- poll mode

async def test_poll_mode_has_no_second_walker(tmp_path: Path, seen: Seen) -> None:
    inbox = tmp_path / "inbox"
    media = library(inbox, shows=4)
    cfg = WatchConfig(mode="poll", settle_seconds=0.1, poll_interval=0.3, rescan_seconds=3600)
    watcher = Watcher(inbox, cfg, seen.is_known, seen.admit)
    task = await started(watcher)
    await all_admitted(seen, media)
    with Listings(inbox) as listed:
        first = watcher.scans
        await wait_until(lambda: watcher.scans >= first + 6, 30, "six walks")
        walks = watcher.scans - first
    await stop_watcher(task)
    for folder in ("", "Show 02", "Show 02/Season 01"):
        # before: a polling observer listed every folder once more per interval
        assert listed.count(folder) <= walks + 1, (folder, walks, listed.folders)


async def test_poll_mode_lists_only_folders_whose_times_moved(tmp_path: Path,
                                                              seen: Seen) -> None:
    inbox = tmp_path / "inbox"
    seen.admitted += library(inbox, shows=4)  # known: nothing to settle
    clock = FrozenClock()
    cfg = WatchConfig(mode="poll", settle_seconds=1.0, poll_interval=5.0, rescan_seconds=600.0)
    watcher = Watcher(inbox, cfg, seen.is_known, seen.admit, clock=clock)
    task = await started(watcher)

    async def walk(seconds: float = cfg.poll_interval) -> list[str]:
        with Listings(inbox) as listed:
            await walked(watcher, clock, seconds)
        return listed.folders

    everything = sorted(["", *(f"Show {s:02d}" for s in range(4)),
                         *(f"Show {s:02d}/Season 01" for s in range(4))])
    assert sorted(await walk()) == everything  # listed again: first seen only a walk ago
    assert await walk() == []  # nothing moved: every listing reused
    (inbox / "Show 01" / "Season 01" / "new.mkv").write_bytes(b"n")
    seen.looked_up.clear()
    assert await walk() == ["Show 01/Season 01"]
    assert seen.looked_up == ["Show 01/Season 01/new.mkv"]
    assert await walk() == ["Show 01/Season 01"]  # once more, after its times have held
    assert await walk() == []
    assert sorted(await walk(cfg.rescan_seconds)) == everything  # the full rescan lists all
    await stop_watcher(task)
    assert watcher.stats["folders_reused"] > 0


def test_folder_times_that_do_not_follow_changes_turn_the_shortcut_off(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A stand-in for a filesystem whose folders keep their times whatever happens in them
    (a FUSE mount may): the full rescan sees a listing that changed under unmoved times."""
    from daemon.discovery.folders import FolderTimes

    library(tmp_path, shows=2)
    clock = FrozenClock()

    def frozen_folders(path: str | Path) -> os.stat_result:
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            return st
        return os.stat_result((st.st_mode, 0, 0, 2, 0, 0, 4096, 1, 1, 1))

    times = FolderTimes(enabled=True, clock=clock, stat=frozen_folders)
    cfg = WatchConfig()

    def walk(reuse: bool) -> list[str]:
        clock.now += 5.0
        result = scan_files(tmp_path, cfg, lister=times.lister(reuse))
        times.walked()
        return [rel for rel, _st in result.files]

    walk(reuse=False)
    walk(reuse=False)  # trusted from here on
    (tmp_path / "Show 00" / "Season 01" / "late.mkv").write_bytes(b"l")
    assert "Show 00/Season 01/late.mkv" not in walk(reuse=True)  # what the shortcut would miss
    assert "Show 00/Season 01/late.mkv" in walk(reuse=False)  # the rescan's check finds it
    assert not times.enabled and "do not follow changes" in caplog.text
    (tmp_path / "Show 01" / "Season 01" / "later.mkv").write_bytes(b"l")
    assert "Show 01/Season 01/later.mkv" in walk(reuse=True)  # every poll lists again


@pytest.mark.parametrize("fstype, kept", [("ext4", True), ("nfs4", True), ("cifs", True),
                                          ("fuse.rclone", False), ("fuse", False)])
def test_fuse_mounts_never_skip_listings(monkeypatch: pytest.MonkeyPatch, fstype: str,
                                         kept: bool) -> None:
    import daemon.discovery.folders as folders

    monkeypatch.setattr(folders, "filesystem_type", lambda _p: fstype)
    assert folders.times_are_kept(Path("/x")) is kept


async def test_poll_mode_asks_the_journal_only_about_new_or_changed_files(
        tmp_path: Path, seen: Seen) -> None:
    inbox = tmp_path / "inbox"
    media = library(inbox, shows=5)
    clock = FrozenClock()
    cfg = WatchConfig(mode="poll", settle_seconds=1.0, poll_interval=5.0, rescan_seconds=60.0)
    watcher = Watcher(inbox, cfg, seen.is_known, seen.admit, clock=clock)
    task = await started(watcher)

    async def walk() -> None:
        await walked(watcher, clock, cfg.poll_interval)

    await walk()  # found by the first walk; settled since
    await all_admitted(seen, media)
    await walk()  # looked up once more: now the journal knows them
    seen.looked_up.clear()
    for _ in range(3):
        await walk()
    assert seen.looked_up == []  # before: every file, every walk
    changed = inbox / media[4]
    changed.write_bytes(b"a new version")
    await walk()
    assert seen.looked_up == [media[4]]
    seen.looked_up.clear()
    clock.now += cfg.rescan_seconds  # the slow rescan asks about every file again
    await walk()
    await stop_watcher(task)
    assert sorted(seen.looked_up) == media


async def test_poll_mode_admits_a_new_file_poll_interval_plus_settle_seconds_after_it_lands(
        tmp_path: Path) -> None:
    """On the watcher's clock (schedule and settling share it, moved here by hand): a file
    written just after a walk is found by the next, `poll_interval` later, and admitted
    `settle_seconds` after that walk, not a tick later. The real-time figure with the default
    settings is in bench/scanning.py."""
    inbox = tmp_path / "inbox"
    seen = Seen()
    seen.admitted += library(inbox, shows=3)  # known already: only the new file is pending
    ticks: list[str] = []

    async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
        ticks.append(getattr(fn, "__name__", ""))
        return await asyncio.to_thread(fn, *args)

    clock = FrozenClock()
    cfg = WatchConfig(mode="poll", settle_seconds=60.0, poll_interval=5.0)
    watcher = Watcher(inbox, cfg, seen.is_known, seen.admit, blocking, clock=clock)
    task = await started(watcher)
    landed = clock.now
    (inbox / "Show 01" / "new.mkv").write_bytes(b"n" * 100)
    clock.now += cfg.poll_interval
    await wait_until(lambda: watcher.scans == 2, 20, "the next walk")
    assert watcher.describe()["pending"] == 1
    clock.now = landed + cfg.poll_interval + cfg.settle_seconds - 0.5
    settler_ticks = ticks.count("tick")
    await wait_until(lambda: ticks.count("tick") >= settler_ticks + 2, 20, "two settling ticks")
    assert "Show 01/new.mkv" not in seen.admitted  # still settling
    clock.now = landed + cfg.poll_interval + cfg.settle_seconds
    await wait_until(lambda: "Show 01/new.mkv" in seen.admitted, 20, "the admission")
    await stop_watcher(task)


# ---------------------------------------------------------------------------- a real daemon

def test_lost_events_ask_for_a_rescan_at_once(daemon_factory: Any, tmp_path: Path) -> None:
    """The inotify queue overflows (the daemon stopped while more changes were made than the
    kernel queues); the files made meanwhile are found at once, not at the next periodic
    rescan (an hour away here)."""
    inbox = tmp_path / "inbox"
    d: DaemonProcess = daemon_factory(watch={"mode": "events", "rescan_seconds": 3600.0},
                                      models={"preload": []}).start()
    names = ["lost1.wav", "later/lost2.wav"]

    def make() -> None:
        (inbox / names[0]).write_bytes(b"not audio")
        (inbox / "later").mkdir()
        shutil.copy(inbox / names[0], inbox / names[1])

    lose_inotify_events(d, inbox, make)
    d.wait_for(lambda: "Inotify queue overflowed" in d.log.read_text(), 60, "the overflow")
    d.wait_for(lambda: {j["rel_path"] for j in d.get("/jobs")["jobs"]} >= set(names), 60,
               "the lost files admitted")
    assert d.status()["watcher"]["scans"] >= 2


def test_a_share_mounted_over_the_inbox_after_the_start_is_watched_not_left_to_the_rescan(
        daemon_factory: Any, tmp_path: Path) -> None:
    """A share mounted over the inbox after the daemon started (a unit without
    RequiresMountsFor=, a NAS that came up late): the OS watch set on the folder beneath sees
    nothing of it. The daemon notices that the inbox is on another filesystem now, walks it and
    watches it, so files dropped there are found in seconds, not at the next periodic rescan
    (an hour away here); the same once the share is unmounted again."""
    inbox = tmp_path / "inbox"
    d: DaemonProcess = daemon_factory(watch={"mode": "events", "rescan_seconds": 3600.0},
                                      models={"preload": []}).start()

    def admitted() -> set[str]:
        return {j["rel_path"] for j in d.get("/jobs")["jobs"]}

    with small_tmpfs(inbox):
        (inbox / "on-share.wav").write_bytes(b"not audio")  # found by the walk of the new mount
        d.wait_for(lambda: "on-share.wav" in admitted(), 30, "the share's file admitted")
        (inbox / "later").mkdir()  # found by the watch on the new mount (no walk is due)
        (inbox / "later" / "dropped.wav").write_bytes(b"not audio")
        d.wait_for(lambda: "later/dropped.wav" in admitted(), 30, "a file dropped on the share")
    (inbox / "after-unmount.wav").write_bytes(b"not audio")
    d.wait_for(lambda: "after-unmount.wav" in admitted(), 30, "a file dropped after unmounting")
    assert "another filesystem" in d.log.read_text()
    assert d.status()["watcher"]["state"] == "watching"


async def test_auto_mode_follows_a_share_mounted_over_the_inbox_and_is_chosen_off_the_loop(
        tmp_path: Path, seen: Seen, monkeypatch: pytest.MonkeyPatch) -> None:
    """watch.mode = "auto": a network share mounted over the inbox after the start turns the
    watcher to polling (inotify sees no change made on another machine), and unmounting it
    turns it back to events. The filesystem is looked up (realpath, /proc/mounts: what a NAS
    that hangs can block) in a thread, never on the loop. The share here is a tmpfs that the
    lookup reports as NFS: this machine has no NFS server."""
    from daemon.discovery import mode as mode_module

    real, inbox = mode_module.filesystem_type, tmp_path / "inbox"
    asked_on: set[threading.Thread] = set()

    def looked_up(path: Path) -> str:
        asked_on.add(threading.current_thread())
        fstype = real(path)
        return "nfs4" if fstype == "tmpfs" else fstype

    monkeypatch.setattr(mode_module, "filesystem_type", looked_up)
    inbox.mkdir()
    cfg = WatchConfig(mode="auto", settle_seconds=0.1, poll_interval=0.3, rescan_seconds=3600)
    watcher = Watcher(inbox, cfg, seen.is_known, seen.admit)
    assert not asked_on  # nothing looked up before the loop runs
    task = await started(watcher)
    assert watcher.mode == "events"
    with small_tmpfs(inbox):
        await wait_until(lambda: watcher.mode == "poll", 20, "polling the share")
        (inbox / "on-share.mkv").write_bytes(b"s")
        await all_admitted(seen, ["on-share.mkv"])
    await wait_until(lambda: watcher.mode == "events", 20, "events again, unmounted")
    (inbox / "local.mkv").write_bytes(b"l")
    await all_admitted(seen, ["local.mkv"])
    await stop_watcher(task)
    assert asked_on and threading.current_thread() not in asked_on


# ---------------------------------------------------------------------------- settling

def test_settling_counts_from_the_event_or_the_walk_not_from_the_next_look(
        tmp_path: Path) -> None:
    (tmp_path / "named.mkv").write_bytes(b"a")
    (tmp_path / "walked.mkv").write_bytes(b"b")
    clock = FrozenClock()
    settler = Settler(tmp_path, settle_seconds=2.0, clock=clock)
    settler.add("named.mkv", at=clock.now)  # an event named it now
    settler.add("walked.mkv", os.stat(tmp_path / "walked.mkv"))  # a walk saw it now
    assert settler.wait() == 2.0
    assert settler.tick(now=clock.now + 1.0) == []  # the first look: still settling
    settler.add("named.mkv", at=clock.now + 1.5)  # it changed again
    settled = settler.tick(now=clock.now + 2.0)
    assert [s.rel_path for s in settled] == ["walked.mkv"]
    assert settler.tick(now=clock.now + 3.4) == []
    (done,) = settler.tick(now=clock.now + 3.5)
    assert done.rel_path == "named.mkv" and len(settler) == 0
