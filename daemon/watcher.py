"""Discovery: which files in the inbox are media, complete and new. The only watchdog importer.

Events (inotify) or polling only say "look here"; truth comes from scans: a full scan at start,
a periodic rescan, and a rescan whenever the OS watcher fails or the inbox comes back after
vanishing (a NAS that unmounts). A file is admitted only after its size and mtime have held
still for `settle_seconds`, so a slow copy is never read early.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver

from .config import WatchConfig

log = logging.getLogger(__name__)

TEMP_PATTERNS = ("*.part", "*.partial", "*.tmp", "*.crdownload", "~*", "*.!qb", "*.download")
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "ceph", "glusterfs",
              "afs", "davfs", "fuse", "sshfs", "lustre", "gpfs", "beegfs", "virtiofs")


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


def relative_inside(inbox: Path, path: Path) -> str | None:
    """The inbox-relative POSIX path of `path`, or None if it (or its link target) is outside."""
    try:
        rel = path.relative_to(inbox)
    except ValueError:
        return None
    if path.is_symlink():
        try:
            path.resolve(strict=True).relative_to(inbox.resolve())
        except (ValueError, OSError):
            log.warning("ignoring %r: a symlink that resolves outside the inbox", str(rel))
            return None
    return rel.as_posix()


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

def scan(inbox: Path, cfg: WatchConfig) -> list[str]:
    """Every candidate file under the inbox (blocking). Raises OSError if the inbox is gone."""
    return [rel for rel, _st in scan_files(inbox, cfg)]


def scan_files(inbox: Path, cfg: WatchConfig) -> list[tuple[str, os.stat_result]]:
    """Candidate files with their stat: one lstat per regular file (a share is slow to ask)."""
    inbox.stat()
    found = []
    for folder, dirs, files in os.walk(inbox, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if not cfg.recursive:
            dirs[:] = []
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(inbox).as_posix()
            if not is_candidate_name(rel, cfg.extensions):
                continue
            st = _candidate_stat(inbox, path)
            if st is not None:
                found.append((rel, st))
    return found


def _candidate_stat(inbox: Path, path: Path) -> os.stat_result | None:
    """The stat of a regular file (followed through a symlink that stays inside the inbox)."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if relative_inside(inbox, path) is None:
                return None
            st = os.stat(path)
    except OSError:
        return None  # gone during the walk
    return st if stat.S_ISREG(st.st_mode) else None


def _raise(exc: OSError) -> None:
    raise exc


# ---------------------------------------------------------------------------- watcher

class _Handler(FileSystemEventHandler):
    """watchdog handler: every file event becomes a 'look at this path' on the event loop."""

    def __init__(self, hint: Callable[[str, bool], None]) -> None:
        self._hint = hint

    def dispatch(self, event: FileSystemEvent) -> None:
        for attr in ("src_path", "dest_path"):
            path = getattr(event, attr, "")
            if path:
                self._hint(os.fsdecode(path), event.is_directory)


class Watcher:
    """Finds settled, unknown candidate files and hands them to `admit` (an async callback)."""

    def __init__(self, inbox: Path, cfg: WatchConfig,
                 is_known: Callable[[str, os.stat_result], bool],
                 admit: Callable[[Settled], Awaitable[None]],
                 blocking: Callable[..., Awaitable[Any]] = asyncio.to_thread) -> None:
        self.inbox = inbox
        self.cfg = cfg
        self.mode = choose_mode(cfg.mode, inbox)
        self.state = "starting"
        self.last_error: str | None = None
        self._is_known = is_known
        self._admit = admit
        # where blocking calls (stats and walks of a share that may hang) run: the daemon's own
        # executor, so a stop can see them and leave without waiting on a dead NFS server
        self._blocking = blocking
        self._settler = Settler(inbox, cfg.settle_seconds)
        self._observer: BaseObserver | None = None
        self._hints: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rescan_now = asyncio.Event()
        self._paused = False
        self.first_scan_done = asyncio.Event()

    # -- public

    def describe(self) -> dict[str, object]:
        return {"mode": self.mode, "state": self.state, "inbox": str(self.inbox),
                "pending": len(self._settler), "error": self.last_error}

    def pause(self) -> None:
        """Stop intake (shutdown): nothing more is admitted."""
        self._paused = True

    def reconfigure(self, cfg: WatchConfig) -> None:
        self.cfg = cfg
        self._settler.settle_seconds = cfg.settle_seconds

    async def run(self) -> None:
        """Scan, watch and settle until cancelled."""
        self._loop = asyncio.get_running_loop()
        next_scan = 0.0
        try:
            while True:
                now = time.monotonic()
                try:
                    if now >= next_scan or self._rescan_now.is_set():
                        self._rescan_now.clear()
                        await self._full_scan()
                        next_scan = now + self._rescan_interval()
                    self.check_observer()
                    await self._check_root()
                    await self._settle()
                except Exception as exc:  # discovery must outlive any one bad file or share
                    log.exception("watcher: unexpected error; going on")
                    self.last_error = f"watcher error: {exc}"
                await self._wait(self._tick_interval())
        finally:
            await self._blocking(self._stop_observer)

    # -- internals

    def _rescan_interval(self) -> float:
        return self.cfg.poll_interval if self.mode == "poll" else self.cfg.rescan_seconds

    def _tick_interval(self) -> float:
        return min(1.0, max(0.1, self.cfg.settle_seconds / 4))

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._rescan_now.wait(), seconds)
        except TimeoutError:
            pass

    async def _full_scan(self) -> None:
        try:
            await self._blocking(self.inbox.stat)
            # The observer starts before the walk: a file created during the walk then shows
            # up as an event or in the walk, never in neither.
            if self.state != "watching":
                await self._blocking(self._start_observer)
            unknown = await self._blocking(self._scan_unknown)
        except OSError as exc:
            await self._set_unavailable(exc)
            return
        finally:
            self.first_scan_done.set()
        for rel in unknown:
            self._settler.add(rel)

    async def _check_root(self) -> None:
        """One stat of the inbox per tick: a share that unmounts is noticed within a second,
        and one that comes back is rescanned at once."""
        try:
            await self._blocking(self.inbox.stat)
        except OSError as exc:
            await self._set_unavailable(exc)
            return
        if self.state == "unavailable":
            self._rescan_now.set()

    def _scan_unknown(self) -> list[str]:
        return [rel for rel, st in scan_files(self.inbox, self.cfg)
                if not self._is_known(rel, st)]

    async def _set_unavailable(self, exc: OSError) -> None:
        if self.state != "unavailable":
            log.error("inbox %r is unavailable (%s); will keep trying", str(self.inbox),
                      exc.strerror or exc)
        self.state = "unavailable"
        self.last_error = f"inbox unavailable: {exc.strerror or exc}"
        await self._blocking(self._stop_observer)

    async def _settle(self) -> None:
        hints, self._hints = self._hints, set()
        for rel in hints:
            self._settler.add(rel)
        if not len(self._settler) or self._paused:
            return
        for item in await self._blocking(self._settler.tick):
            if not self._paused:
                await self._admit(item)

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

    def _start_observer(self) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        self._stop_observer()
        observer: BaseObserver = (PollingObserver(timeout=self.cfg.poll_interval)
                                  if self.mode == "poll" else Observer())
        try:
            observer.schedule(_Handler(self._hint), str(self.inbox), recursive=self.cfg.recursive)
            observer.start()
        except OSError as exc:  # e.g. inotify watch limit reached: scans still find files
            log.error("cannot watch %r (%s); relying on rescans every %.0f s",
                      str(self.inbox), exc.strerror or exc, self._rescan_interval())
            self.state = "degraded"
            self.last_error = f"watcher failed: {exc.strerror or exc}"
            return
        self._observer = observer
        if self.state in ("unavailable", "degraded"):
            log.info("inbox %r is available again", str(self.inbox))
        self.state = "watching"
        self.last_error = None

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            try:
                observer.join(timeout=5)
            except RuntimeError:
                pass

    def check_observer(self) -> None:
        """A dead observer thread (watch error, overflow) means a rescan and a restart."""
        if self._observer is not None and not self._observer.is_alive():
            log.warning("the file watcher stopped; rescanning %r", str(self.inbox))
            self._observer = None
            self.state = "degraded"
            self._rescan_now.set()
