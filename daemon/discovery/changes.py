"""What the OS watcher named since the last tick: files to settle, folders to scan, or the whole
inbox again. Filled from watchdog's thread, but only through the event loop (`call_soon_
threadsafe`), so the loop alone touches the sets; the watcher's tick takes them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ..config import WatchConfig
from .filters import is_candidate_name, is_visible_folder, relative_inside
from .oswatch import FILE, FOLDER


def outermost(folders: set[str]) -> list[str]:
    """The folders to scan, less those inside another one being scanned (`mkdir -p a/b/c`
    names three folders; scanning `a` covers them all)."""
    def inside_another(rel: str) -> bool:
        parts = rel.split("/")
        return any("/".join(parts[:n]) in folders for n in range(1, len(parts)))
    return sorted(rel for rel in folders if not inside_another(rel))


class Changes:
    def __init__(self, inbox: Path, cfg: WatchConfig, rescan: asyncio.Event,
                 clock: Callable[[], float]) -> None:
        self.inbox = inbox
        self.cfg = cfg
        self._rescan = rescan
        self._clock = clock
        self._files: dict[str, float] = {}  # file → when an event last named it
        self._folders: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def take_files(self) -> dict[str, float]:
        files, self._files = self._files, {}
        return files

    def take_folders(self) -> list[str]:
        folders, self._folders = self._folders, set()
        return outermost(folders)

    def hint(self, path: str, kind: str) -> None:
        """Called on watchdog's thread, which may block on a slow share; the loop must not."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if kind not in (FILE, FOLDER):  # the inbox itself moved, vanished or changed
            loop.call_soon_threadsafe(self._rescan.set)
            return
        rel = relative_inside(self.inbox, Path(path))
        if rel is None:
            return
        if kind == FOLDER and self.cfg.recursive and is_visible_folder(rel):
            loop.call_soon_threadsafe(self._folders.add, rel)
        elif kind == FILE and is_candidate_name(rel, self.cfg.extensions):
            loop.call_soon_threadsafe(self._named, rel)

    def _named(self, rel: str) -> None:
        """On the loop: the file changed now (settling counts from the last event)."""
        self._files[rel] = self._clock()

    def lost(self) -> None:
        """The kernel dropped events (its queue overflowed): only a full rescan finds them."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._rescan.set)
