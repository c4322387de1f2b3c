"""Discovery: which files in the inbox are media, complete and new. The only watchdog importer.

Events (inotify) or polling only say "look here"; truth comes from scans: a full scan at start,
a periodic rescan, and a rescan whenever the OS watcher fails or the inbox comes back after
vanishing (a NAS that unmounts). A file is admitted only after its size and mtime have held
still for `settle_seconds`, so a slow copy is never read early.

A share left alone for months collects entries no scan should choke on: symlink loops, names
that are not UTF-8, folders nobody may list, trees nested past any sane depth. Each is skipped
and warned about once; the rest of the inbox is admitted as usual. Only an inbox that cannot be
listed at all is "unavailable", and failing scans are retried with a growing delay, never in a
loop.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver

from .config import WatchConfig
from .journal import JournalUnavailable

log = logging.getLogger(__name__)

TEMP_PATTERNS = ("*.part", "*.partial", "*.tmp", "*.crdownload", "~*", "*.!qb", "*.download")
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "ceph", "glusterfs",
              "afs", "davfs", "fuse", "sshfs", "lustre", "gpfs", "beegfs", "virtiofs")
MAX_BACKOFF = 60.0  # seconds between two tries of a scan that keeps failing
FAILURES_UNHEALTHY = 2  # failed scans in a row that /healthz reports


# ---------------------------------------------------------------------------- filters

def is_candidate_name(rel_path: str, extensions: Iterable[str]) -> bool:
    """A listed media extension (the config keeps them in lower case), and no hidden or
    temporary part anywhere in the path."""
    parts = rel_path.split("/")
    if any(p.startswith(".") for p in parts):
        return False
    name = parts[-1]
    if any(fnmatch.fnmatchcase(name.lower(), pat) for pat in TEMP_PATTERNS):
        return False
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return ext in extensions


def link_problem(inbox: Path, path: Path) -> str | None:
    """Why the symlink at `path` must not be followed; None when `path` is no symlink or one
    whose target stays inside the inbox."""
    try:
        if not path.is_symlink():
            return None
        target = path.resolve(strict=True)
        inside = target.is_relative_to(inbox.resolve())
    except RuntimeError:  # Python 3.11 and 3.12 say "Symlink loop" this way
        return "a symlink loop"
    except OSError as exc:
        return "a symlink loop" if exc.errno == errno.ELOOP else "a broken symlink"
    return None if inside else "a symlink that resolves outside the inbox"


def relative_inside(inbox: Path, path: Path) -> str | None:
    """The inbox-relative POSIX path of `path`, or None if it (or its link target) is outside."""
    try:
        rel = path.relative_to(inbox)
    except ValueError:
        return None
    return None if link_problem(inbox, path) else rel.as_posix()


# ---------------------------------------------------------------------------- mode

def filesystem_type(path: Path) -> str:
    """The fstype of the mount holding `path`, from /proc/mounts ('' if unknown)."""
    try:
        real = os.path.realpath(path)
        best, fstype = "", ""
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, fstype = mount, fields[2]
        return fstype
    except OSError:
        return ""


def choose_mode(mode: str, inbox: Path) -> str:
    """events or poll; `auto` polls on network filesystems, where inotify sees no remote change."""
    if mode != "auto":
        return mode
    fstype = filesystem_type(inbox)
    network = any(fstype == n or fstype.startswith(n + ".") for n in NETWORK_FS)
    return "poll" if network else "events"


# ---------------------------------------------------------------------------- settling

@dataclass
class _Pending:
    size: int
    mtime_ns: int
    since: float


@dataclass(frozen=True)
class Settled:
    rel_path: str
    size: int
    mtime_ns: int
    inode: int


class Settler:
    """Holds candidate files until their size and mtime stop changing for `settle_seconds`."""

    def __init__(self, inbox: Path, settle_seconds: float) -> None:
        self.inbox = inbox
        self.settle_seconds = settle_seconds
        self._pending: dict[str, _Pending | None] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, rel_path: str) -> None:
        self._pending.setdefault(rel_path, None)

    def tick(self, now: float | None = None) -> list[Settled]:
        """Stat every pending file (blocking: call from a thread); return those now settled."""
        now = time.monotonic() if now is None else now
        settled = []
        for rel, seen in list(self._pending.items()):
            try:
                st = os.stat(self.inbox / rel)
            except OSError:
                del self._pending[rel]  # gone (or the share is): a rescan finds it again
                continue
            if not stat.S_ISREG(st.st_mode):
                del self._pending[rel]
                continue
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._pending[rel] = _Pending(st.st_size, st.st_mtime_ns, now)
                if self.settle_seconds > 0:
                    continue
            elif now - seen.since < self.settle_seconds:
                continue
            del self._pending[rel]
            settled.append(Settled(rel, st.st_size, st.st_mtime_ns, st.st_ino))
        return settled


# ---------------------------------------------------------------------------- scanning

@dataclass
class ScanResult:
    """What one walk found: candidate files with their stat, and what it skipped and why."""

    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # inbox-relative path → reason


def scan(inbox: Path, cfg: WatchConfig) -> list[str]:
    """Every candidate file under the inbox (blocking). Raises OSError if the inbox is gone."""
    return [rel for rel, _st in scan_files(inbox, cfg).files]


def scan_files(inbox: Path, cfg: WatchConfig) -> ScanResult:
    """Candidate files with their stat: one lstat per candidate (a share is slow to ask).

    Walks with a list of folders still to visit, not recursion, so a tree of any depth is
    walked. A folder that cannot be listed is skipped and named in `problems`; only an inbox
    that cannot be listed itself raises (OSError)."""
    inbox.stat()
    result = ScanResult()
    folders = [""]
    while folders:
        rel_dir = folders.pop()
        for entry in _entries(inbox, rel_dir, result):
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                _visit(inbox, cfg, entry, rel, folders, result)
            except Exception as exc:  # one odd entry never stops discovery
                result.problems[rel] = f"{type(exc).__name__}: {exc}"
    result.files.sort(key=lambda found: found[0])
    return result


def _entries(inbox: Path, rel_dir: str, result: ScanResult) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(inbox / rel_dir if rel_dir else inbox) as entries:
            return list(entries)
    except OSError as exc:
        if not rel_dir:
            raise
        result.problems[rel_dir] = f"a folder that cannot be listed ({exc.strerror or exc})"
        return []


def _visit(inbox: Path, cfg: WatchConfig, entry: os.DirEntry[str], rel: str,
           folders: list[str], result: ScanResult) -> None:
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        return  # gone during the walk
    if is_dir:
        if cfg.recursive and not entry.name.startswith("."):
            folders.append(rel)
        return
    if not is_candidate_name(rel, cfg.extensions):
        return
    st, problem = _candidate_stat(inbox, Path(entry.path))
    if problem is not None:
        result.problems[rel] = problem
    elif st is not None:
        result.files.append((rel, st))


def _candidate_stat(inbox: Path, path: Path) -> tuple[os.stat_result | None, str | None]:
    """The stat of a regular file (followed through a symlink that stays inside the inbox), or
    why this entry is refused."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            problem = link_problem(inbox, path)
            if problem is not None:
                return None, problem
            st = os.stat(path)
    except OSError:
        return None, None  # gone during the walk
    return (st if stat.S_ISREG(st.st_mode) else None), None


def scan_unknown(inbox: Path, cfg: WatchConfig,
                 is_known: Callable[[str, os.stat_result], bool]) -> ScanResult:
    """The scan, less the files the journal already knows."""
    result = scan_files(inbox, cfg)
    unknown = []
    for rel, st in result.files:
        try:
            if not is_known(rel, st):
                unknown.append((rel, st))
        except ValueError as exc:  # this one name; the journal failing as a whole raises on
            result.problems[rel] = f"cannot be looked up ({exc})"
    result.files = unknown
    return result


class Problems:
    """Each skipped entry is warned about once while it stays a problem: a bad entry in a share
    can stay for months, and a line per rescan would bury every other line. One that is fixed
    and breaks again is warned about again."""

    def __init__(self) -> None:
        self._scanned: set[str] = set()  # problems the last full scan met
        self._other: set[str] = set()  # problems met between scans (admission, a tick)

    def report(self, problems: dict[str, str]) -> None:
        """The problems of one full scan (all of them: those not met again are over)."""
        for rel, reason in sorted(problems.items()):
            if rel not in self._scanned:  # a reason may quote a name that is not UTF-8
                log.warning("skipping %r in the inbox: %s", rel,
                            reason.encode("utf-8", "backslashreplace").decode("utf-8"))
        self._scanned = set(problems)

    def first(self, key: str) -> bool:
        """Is `key` a problem not warned about yet? (Marks it.)"""
        new = key not in self._other
        self._other.add(key)
        return new

    def solved(self, key: str) -> None:
        self._other.discard(key)


class ScanSchedule:
    """When the next full scan is due: every interval while scans work; after a failure sooner,
    but 1, 2, 4 … 60 s apart, so a share that fails at once is not walked in a loop."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.failures = 0  # in a row
        self.next_at = 0.0

    def due(self, asked: bool) -> bool:
        """A scan asked for out of turn (an event, the root coming back) waits out a backoff."""
        return self._clock() >= self.next_at or (asked and not self.failures)

    def succeeded(self, interval: float) -> None:
        self.failures = 0
        self.next_at = self._clock() + interval

    def failed(self) -> None:
        self.failures += 1
        self.next_at = self._clock() + min(MAX_BACKOFF, 2.0 ** (self.failures - 1))

    def now(self) -> None:
        """Scan at the next tick whatever the backoff says (the inbox just came back)."""
        self.next_at = self._clock()

    def wait(self) -> float:
        return max(0.0, self.next_at - self._clock())


# ---------------------------------------------------------------------------- watcher

class _Handler(FileSystemEventHandler):
    """watchdog handler: every file event becomes a 'look at this path' on the event loop."""

    def __init__(self, hint: Callable[[str, bool], None]) -> None:
        self._hint = hint

    def dispatch(self, event: FileSystemEvent) -> None:
        for attr in ("src_path", "dest_path"):
            path = getattr(event, attr, "")
            if path:
                try:
                    self._hint(os.fsdecode(path), event.is_directory)
                except Exception:  # an exception here ends watchdog's thread, and all events
                    log.debug("ignoring a watcher event for %r", path, exc_info=True)


class OsWatch:
    """The OS watcher (a watchdog observer thread): started, stopped, checked for death.
    Blocking: call from a thread."""

    def __init__(self, inbox: Path, mode: str, hint: Callable[[str, bool], None]) -> None:
        self.inbox = inbox
        self.mode = mode
        self.error: str | None = None  # why the last start failed
        self._hint = hint
        self._observer: BaseObserver | None = None

    @property
    def running(self) -> bool:
        return self._observer is not None

    def start(self, cfg: WatchConfig, rescan_every: float) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        self.stop()
        observer: BaseObserver = (PollingObserver(timeout=cfg.poll_interval)
                                  if self.mode == "poll" else Observer())
        try:
            observer.schedule(_Handler(self._hint), str(self.inbox), recursive=cfg.recursive)
            observer.start()
        except Exception as exc:  # the watch limit, or a tree deeper than watchdog can walk
            error = f"watcher failed: {getattr(exc, 'strerror', None) or exc}"
            if error != self.error:  # once, not at every rescan that tries again
                log.error("cannot watch %r (%s); relying on rescans every %.0f s",
                          str(self.inbox), error, rescan_every)
            self.error = error
            return
        self._observer = observer
        self.error = None

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            try:
                observer.join(timeout=5)
            except RuntimeError:
                pass

    def died(self) -> bool:
        """Has the observer thread ended on its own (a watch error, an overflow)?"""
        if self._observer is not None and not self._observer.is_alive():
            self._observer = None
            return True
        return False


async def _wait(rescan_now: asyncio.Event, seconds: float) -> None:
    """Until the next tick, or sooner when a rescan is asked for."""
    if rescan_now.is_set():  # asked for, but held back by a backoff: do not spin
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(rescan_now.wait(), seconds)
    except TimeoutError:
        pass


class Watcher:
    """Finds settled, unknown candidate files and hands them to `admit` (an async callback)."""

    def __init__(self, inbox: Path, cfg: WatchConfig,
                 is_known: Callable[[str, os.stat_result], bool],
                 admit: Callable[[Settled], Awaitable[None]],
                 blocking: Callable[..., Awaitable[Any]] = asyncio.to_thread, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inbox = inbox
        self.cfg = cfg
        self.mode = choose_mode(cfg.mode, inbox)
        self.state = "starting"
        self.last_error: str | None = None
        self.scans = 0  # full scans completed
        self._is_known = is_known
        self._admit = admit
        # where blocking calls (stats and walks of a share that may hang) run: the daemon's own
        # executor, so a stop can see them and leave without waiting on a dead NFS server
        self._blocking = blocking
        self._settler = Settler(inbox, cfg.settle_seconds)
        self._schedule = ScanSchedule(clock)
        self._problems = Problems()
        self._os_watch = OsWatch(inbox, self.mode, self._hint)
        self._root_missing = False
        self._hints: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rescan_now = asyncio.Event()
        self._paused = False
        self.first_scan_done = asyncio.Event()

    scan_failures = property(lambda self: self._schedule.failures,
                             doc="Full scans failed in a row (0 once one works).")

    def scans_failing(self) -> bool:
        """For /healthz: scans keep failing though the inbox is there (a missing inbox is
        reported as unavailable, not twice)."""
        return self._schedule.failures >= FAILURES_UNHEALTHY and not self._root_missing

    def describe(self) -> dict[str, object]:
        return {"mode": self.mode, "state": self.state, "inbox": str(self.inbox),
                "pending": len(self._settler), "error": self.last_error, "scans": self.scans,
                "scan_failures": self.scan_failures,
                "next_scan_in": round(self._schedule.wait(), 1)}

    def pause(self) -> None:
        """Stop intake (shutdown): nothing more is admitted."""
        self._paused = True

    def reconfigure(self, cfg: WatchConfig) -> None:
        self.cfg = cfg
        self._settler.settle_seconds = cfg.settle_seconds

    async def run(self) -> None:
        """Scan, watch and settle until cancelled."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                if self._schedule.due(self._rescan_now.is_set()):
                    self._rescan_now.clear()
                    await self._scan()
                await self._tick()
                await _wait(self._rescan_now, self._tick_interval())
        finally:
            await self._blocking(self._os_watch.stop)

    # -- internals

    def _rescan_interval(self) -> float:
        return self.cfg.poll_interval if self.mode == "poll" else self.cfg.rescan_seconds

    def _tick_interval(self) -> float:
        return min(1.0, max(0.1, self.cfg.settle_seconds / 4))

    async def _scan(self) -> None:
        if await self._full_scan():
            if self._schedule.failures:
                log.info("inbox scans work again after %d failures", self._schedule.failures)
            self._schedule.succeeded(self._rescan_interval())
        else:
            self._schedule.failed()

    async def _full_scan(self) -> bool:
        """One full scan; False when it failed (the schedule then backs off)."""
        try:
            result = await self._walk()
        except OSError as exc:
            await self._set_unavailable(exc)
            return False
        except Exception as exc:  # e.g. the journal failing: retried later, logged once
            if not self._schedule.failures:
                log.exception("inbox scan failed; trying again later")
            self.last_error = f"inbox scan failed: {type(exc).__name__}"
            return False
        finally:
            self.first_scan_done.set()
        self._problems.report(result.problems)
        for rel, _st in result.files:
            self._settler.add(rel)
        self.scans += 1
        self._scanned()
        return True

    async def _walk(self) -> ScanResult:
        try:
            await self._blocking(self.inbox.stat)
        except OSError:
            self._root_missing = True  # the root check rescans at once when it is back
            raise
        # The observer starts before the walk: a file created during the walk then shows up as
        # an event or in the walk, never in neither.
        if not self._os_watch.running:
            await self._blocking(self._os_watch.start, self.cfg, self._rescan_interval())
        return await self._blocking(scan_unknown, self.inbox, self.cfg, self._is_known)

    def _scanned(self) -> None:
        """After a scan that worked: the state says whether events are coming too."""
        watching = self._os_watch.running
        before, self.state = self.state, "watching" if watching else "degraded"
        self.last_error = None if watching else self._os_watch.error
        if before == "unavailable" or (before == "degraded" and self.state == "watching"):
            log.info("inbox %r is available again", str(self.inbox))

    async def _tick(self) -> None:
        """Between scans: the observer, the root and the settling files."""
        try:
            self.check_observer()
            await self._check_root()
            await self._settle()
        except Exception:  # discovery must outlive any one bad file or share
            if self._problems.first("\0tick"):
                log.exception("watcher: unexpected error; going on")
        else:
            self._problems.solved("\0tick")

    async def _check_root(self) -> None:
        """One stat of the inbox per tick: a share that unmounts is noticed within a second,
        and one that comes back is rescanned at once."""
        try:
            await self._blocking(self.inbox.stat)
        except OSError as exc:
            self._root_missing = True
            await self._set_unavailable(exc)
            return
        if self._root_missing:
            self._root_missing = False
            self._schedule.now()

    async def _set_unavailable(self, exc: OSError) -> None:
        if self.state != "unavailable":
            log.error("inbox %r is unavailable (%s); will keep trying", str(self.inbox),
                      exc.strerror or exc)
        self.state = "unavailable"
        self.last_error = f"inbox unavailable: {exc.strerror or exc}"
        await self._blocking(self._os_watch.stop)

    async def _settle(self) -> None:
        hints, self._hints = self._hints, set()
        for rel in hints:
            self._settler.add(rel)
        if not len(self._settler) or self._paused:
            return
        settled = await self._blocking(self._settler.tick)
        for n, item in enumerate(settled):
            if self._paused:
                return
            try:
                await self._admit(item)
            except JournalUnavailable:  # none can go in now (said once, and in /healthz):
                for later in settled[n:]:  # these settle again and are tried then
                    self._settler.add(later.rel_path)
                return
            except ValueError as exc:  # this one entry; the others still go in
                if self._problems.first(item.rel_path):
                    log.warning("skipping %r in the inbox: cannot be admitted (%s)",
                                item.rel_path, exc)
            else:
                self._problems.solved(item.rel_path)

    def _hint(self, path: str, is_directory: bool) -> None:
        """Called on watchdog's thread, which may block on a slow share; the loop must not."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        full = Path(path)
        if is_directory or full == self.inbox:
            # the inbox itself moved or vanished, or a folder moved in whole (its files bring no
            # events of their own): look again now
            loop.call_soon_threadsafe(self._rescan_now.set)
            return
        rel = relative_inside(self.inbox, full)
        if rel is not None and is_candidate_name(rel, self.cfg.extensions):
            loop.call_soon_threadsafe(self._hints.add, rel)

    def check_observer(self) -> None:
        """A dead observer thread (watch error, overflow) means a rescan and a restart."""
        if self._os_watch.died():
            log.warning("the file watcher stopped; rescanning %r", str(self.inbox))
            self.state = "degraded"
            self._rescan_now.set()
