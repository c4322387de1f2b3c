"""Discovery on real folders: filters, settling, symlinks, events and polling."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import WatchConfig
from daemon.watcher import (
    Settled,
    Settler,
    Watcher,
    choose_mode,
    is_candidate_name,
    scan,
    scan_files,
)
from testkit.daemon import wait_until

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
    import daemon.discovery.mode as mode_module

    for fstype, mode in (("nfs4", "poll"), ("cifs", "poll"), ("fuse.sshfs", "poll"),
                         ("ext4", "events"), ("overlay", "events")):
        monkeypatch.setattr(mode_module, "filesystem_type", lambda _p, f=fstype: f)
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


# ---------------------------------------------------------------------------- hostile trees

def nest(top: Path, depth: int, name: str, leaf: str) -> Path:
    """`depth` folders `name` inside each other under `top`, with an empty `leaf` file at the
    bottom. Made through folder descriptors: the whole path may be longer than PATH_MAX.
    Returns the first folder. Remove it with `unnest` (pytest's own clean-up recurses)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open(leaf, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return top / name


def unnest(top: Path, depth: int, name: str, leaf: str) -> None:
    """Remove what `nest` made, bottom up, without recursion."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth):
            fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        os.unlink(leaf, dir_fd=fds[-1])
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir(name, dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture
def nested() -> Iterator[Callable[[Path, int, str, str], Path]]:
    """`nest`, undone after the test whatever its outcome."""
    made: list[tuple[Path, int, str, str]] = []

    def make(top: Path, depth: int, name: str, leaf: str) -> Path:
        made.append((top, depth, name, leaf))
        return nest(top, depth, name, leaf)

    yield make
    for args in made:
        unnest(*args)


def symlink_loop(folder: Path, first: str = "loop1.wav", second: str = "loop2.wav") -> None:
    os.symlink(folder / second, folder / first)
    os.symlink(folder / first, folder / second)


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "daemon.watcher" and r.levelno >= logging.WARNING
            and text in r.getMessage()]


class FrozenClock:
    """The watcher's schedule clock, moved only by the test: backoff is checked as counts."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_scan_skips_a_symlink_loop_and_finds_the_rest(tmp_path: Path) -> None:
    (tmp_path / "good.wav").write_bytes(b"x")
    symlink_loop(tmp_path)
    assert scan(tmp_path, WatchConfig()) == ["good.wav"]
    assert set(scan_files(tmp_path, WatchConfig()).problems) == {"loop1.wav", "loop2.wav"}


def test_scan_walks_a_tree_deeper_than_the_recursion_limit(
        tmp_path: Path, nested: Callable[..., Path]) -> None:
    nested(tmp_path, 1100, "a", "deep.wav")
    (tmp_path / "top.wav").write_bytes(b"x")
    assert scan(tmp_path, WatchConfig()) == ["a/" * 1100 + "deep.wav", "top.wav"]


def test_scan_skips_a_folder_it_cannot_list_and_finds_the_rest(
        tmp_path: Path, nested: Callable[..., Path]) -> None:
    # A path over PATH_MAX cannot be listed (ENAMETOOLONG), even by root, like another user's
    # 0700 folder or lost+found is for the service account.
    nested(tmp_path, 20, "b" * 250, "lost.wav")
    (tmp_path / "good.wav").write_bytes(b"x")
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "after.mp3").write_bytes(b"x")
    assert scan(tmp_path, WatchConfig()) == ["good.wav", "z/after.mp3"]
    ((where, why),) = scan_files(tmp_path, WatchConfig()).problems.items()
    assert where.startswith("b" * 250 + "/") and "too long" in why


def test_scan_finds_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.wav")
    (tmp_path / name).write_bytes(b"x")
    assert scan(tmp_path, WatchConfig()) == [name]


async def run_watcher(watcher: Watcher) -> asyncio.Task[None]:
    task = asyncio.create_task(watcher.run())
    await wait_until(lambda: watcher.state != "starting", 10, "first scan")
    return task


async def stop_watcher(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def outside_symlink(inbox: Path) -> str:
    outside = inbox.parent / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"x")
    os.symlink(outside / "secret.wav", inbox / "evil.wav")
    return "'evil.wav'"


def loop_of_symlinks(inbox: Path) -> str:
    symlink_loop(inbox)
    return "'loop1.wav'"


RESCANNING = WatchConfig(mode="events", settle_seconds=0.1, rescan_seconds=0.2)


class Seen:
    """What a watcher admitted and asked about: each full scan looks every candidate up once,
    so the look-ups count the rescans."""

    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.looked_up: list[str] = []

    async def admit(self, item: Settled) -> None:
        self.admitted.append(item.rel_path)

    def is_known(self, rel: str, _st: os.stat_result) -> bool:
        self.looked_up.append(rel)
        return rel in self.admitted


@pytest.mark.parametrize("make_bad_entry", [outside_symlink, loop_of_symlinks, "unlistable"])
async def test_a_bad_entry_is_warned_about_once_across_rescans(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, nested: Callable[..., Path],
        make_bad_entry: Callable[[Path], str] | str) -> None:
    caplog.set_level(logging.INFO, "daemon.watcher")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    if callable(make_bad_entry):
        warning = make_bad_entry(inbox)
    else:
        nested(inbox, 20, "b" * 250, "lost.wav")
        warning = "cannot be listed"
    (inbox / "good.wav").write_bytes(b"x")
    seen = Seen()
    watcher = Watcher(inbox, RESCANNING, seen.is_known, seen.admit)
    task = asyncio.create_task(watcher.run())
    await wait_until(lambda: seen.looked_up.count("good.wav") >= 5, 30, "five full scans")
    await stop_watcher(task)
    assert seen.admitted == ["good.wav"] and watcher.state == "watching"
    assert len(warnings_about(caplog, warning)) == 1, warnings_about(caplog, "")
    assert not warnings_about(caplog, "unavailable")


async def test_a_symlink_loop_made_while_watching_does_not_kill_the_watcher(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "daemon.watcher")
    admitted: list[str] = []

    async def admit(item: Settled) -> None:
        admitted.append(item.rel_path)

    # no rescan during the test: only inotify events can find the new file
    cfg = WatchConfig(mode="events", settle_seconds=0.1, rescan_seconds=3600)
    watcher = Watcher(tmp_path, cfg, lambda rel, _st: rel in admitted, admit)
    task = await run_watcher(watcher)
    symlink_loop(tmp_path)
    (tmp_path / "after.wav").write_bytes(b"x")
    await wait_until(lambda: admitted, 20, "the file made after the loop")
    await stop_watcher(task)
    assert admitted == ["after.wav"] and watcher.state == "watching"
    assert not warnings_about(caplog, "stopped")


async def test_failing_scans_back_off_and_are_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The inbox is a file: its stat works, listing it does not. Before, the root check saw the
    # root fine and rescanned at once, flipping available/unavailable many times a second.
    caplog.set_level(logging.INFO, "daemon.watcher")
    inbox = tmp_path / "inbox"
    inbox.write_bytes(b"not a folder")
    attempts: list[str] = []

    async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
        attempts.append(getattr(fn, "__name__", ""))
        return await asyncio.to_thread(fn, *args)

    async def admit(item: Settled) -> None:
        raise AssertionError(item)

    clock = FrozenClock()
    cfg = WatchConfig(mode="events", settle_seconds=0.1, rescan_seconds=0.2)
    watcher = Watcher(inbox, cfg, lambda _rel, _st: False, admit, blocking, clock=clock)
    task = asyncio.create_task(watcher.run())

    def scans() -> int:  # the walk of the whole inbox, as handed to the executor
        return attempts.count("walk")

    def ticks_after(count: int) -> Callable[[], bool]:
        start = attempts.count("stat")
        return lambda: attempts.count("stat") >= start + count

    delays = []
    for failures in range(1, 5):
        await wait_until(lambda n=failures: watcher.scan_failures == n, 20, f"failure {failures}")
        await wait_until(ticks_after(4), 20, "four more ticks")
        assert scans() == failures  # the clock has not moved: no retry yet, however many ticks
        delays.append(watcher.describe()["next_scan_in"])
        clock.now += float(delays[-1])
    await stop_watcher(task)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert watcher.state == "unavailable" and watcher.scans_failing()
    assert len(warnings_about(caplog, "unavailable")) == 1
    assert not warnings_about(caplog, "available again")


async def test_an_unexpected_scan_error_is_retried_later_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "daemon.watcher")
    (tmp_path / "a.wav").write_bytes(b"x")
    broken = True
    admitted: list[str] = []
    calls: list[str] = []

    def is_known(rel: str, _st: os.stat_result) -> bool:
        calls.append(rel)
        if broken:  # the journal failing as a whole (not one name): the scan fails
            raise sqlite3.OperationalError("database is locked")
        return rel in admitted

    async def admit(item: Settled) -> None:
        admitted.append(item.rel_path)

    clock = FrozenClock()
    cfg = WatchConfig(mode="events", settle_seconds=0.1, rescan_seconds=0.2)
    watcher = Watcher(tmp_path, cfg, is_known, admit, clock=clock)
    task = asyncio.create_task(watcher.run())
    await wait_until(lambda: watcher.scan_failures == 1, 20, "the first failure")
    await asyncio.sleep(1.0)  # several ticks: before, each one rescanned and logged a traceback
    assert len(calls) == 1 and watcher.describe()["next_scan_in"] == 1.0
    clock.now += 1.0
    await wait_until(lambda: watcher.scan_failures == 2, 20, "the second failure")
    assert watcher.scans_failing()
    broken = False
    clock.now += 2.0
    await wait_until(lambda: watcher.scan_failures == 0, 20, "a scan that works")
    clock.now += 1.0  # settling runs on the watcher's clock too
    await wait_until(lambda: admitted, 20, "admitted once the journal works")
    await stop_watcher(task)
    assert watcher.scan_failures == 0 and not watcher.scans_failing()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "scan" in errors[0].getMessage()


async def test_a_tree_too_deep_to_watch_is_still_scanned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, nested: Callable[..., Path]) -> None:
    # watchdog walks a recursive watch with recursion of its own: past ~1000 levels it cannot
    # start. The daemon says so once (degraded: no events) and finds files by its rescans.
    caplog.set_level(logging.INFO, "daemon.watcher")
    nested(tmp_path, 1100, "a", "deep.wav")
    (tmp_path / "top.wav").write_bytes(b"x")
    seen = Seen()
    watcher = Watcher(tmp_path, RESCANNING, seen.is_known, seen.admit)
    task = asyncio.create_task(watcher.run())
    await wait_until(lambda: seen.looked_up.count("top.wav") >= 4, 60, "four full scans")
    await stop_watcher(task)
    assert sorted(seen.admitted) == ["a/" * 1100 + "deep.wav", "top.wav"]
    assert watcher.state == "degraded" and "watcher failed" in (watcher.last_error or "")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot watch" in errors[0], errors
