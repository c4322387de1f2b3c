"""Folder times: a poll walk lists again only the folders whose times moved.

Making, removing or renaming an entry sets its folder's mtime and ctime (and a ctime cannot be
set back by hand, as `touch` or `rsync -t` set an mtime), so a folder whose times have not moved
since it was listed still holds the same names, and its last listing is reused: a poll walk
costs a stat per folder and one per media file instead of a listing of every entry. A media
file changed in place does not move its folder's times; its own stat, taken at every walk, does.

Two guards. A listing is reused only if it was made at least GRACE seconds after the folder's
times were first seen: a change within the same tick of a coarse clock (FAT keeps 2 s) leaves
them where they were, so a folder is listed once more after it changes. And the full rescans
list every folder and compare: a filesystem whose folder times do not follow changes turns the
shortcut off for good, said once. FUSE filesystems, whose folder times are whatever the mount
says, never get it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .mode import filesystem_type
from .walk import Lister, Named, ScanResult, list_folder

log = logging.getLogger("daemon.watcher")

GRACE = 3.0  # seconds: a coarse folder clock (FAT: 2 s) plus a share's attribute cache (SMB: 1 s)


@dataclass
class _Listing:
    times: tuple[int, int]  # the folder's (mtime_ns, ctime_ns) when it was listed
    first_seen: float  # when those times were first seen
    trusted: bool  # listed GRACE after first_seen: no change can hide under the same times
    names: Named
    subfolders: list[str]


def times_are_kept(inbox: Path) -> bool:
    """Whether the filesystem can be trusted to move a folder's times on every change."""
    return not filesystem_type(inbox).startswith("fuse")


class FolderTimes:
    """The last listing of every folder, by the folder's times. Blocking: walks call it."""

    def __init__(self, enabled: bool, clock: Callable[[], float] = time.monotonic,
                 stat: Callable[[str | Path], os.stat_result] = os.stat) -> None:
        self.enabled = enabled
        self._clock = clock
        self._stat = stat
        self._listings: dict[str, _Listing] = {}
        self._visited: set[str] = set()

    def lister(self, reuse: bool) -> Lister:
        """A walk's way to list folders: reusing listings (a poll walk), or listing every
        folder and checking the listings kept (a full rescan)."""
        return partial(self._list, reuse) if self.enabled else list_folder

    def forget(self) -> None:
        self._listings = {}

    def walked(self) -> None:
        """A walk ended: folders it did not meet are gone (or no longer walked)."""
        self._listings = {k: v for k, v in self._listings.items() if k in self._visited}
        self._visited = set()

    def _list(self, reuse: bool, inbox: Path, rel_dir: str, deep: bool,
              extensions: frozenset[str], folders: list[str], result: ScanResult) -> Named:
        self._visited.add(rel_dir)
        if not self.enabled:  # turned off during this walk
            return list_folder(inbox, rel_dir, deep, extensions, folders, result)
        try:
            st = self._stat(f"{inbox}/{rel_dir}" if rel_dir else inbox)
        except OSError:  # the listing says why (or raises, for the inbox itself)
            return list_folder(inbox, rel_dir, deep, extensions, folders, result)
        times = (st.st_mtime_ns, st.st_ctime_ns)
        kept = self._listings.get(rel_dir)
        same = kept is not None and kept.times == times
        if reuse and kept is not None and same and kept.trusted:
            folders.extend(kept.subfolders)
            result.reused += 1
            return kept.names
        subfolders: list[str] = []
        names = list_folder(inbox, rel_dir, deep, extensions, subfolders, result)
        folders.extend(subfolders)
        if rel_dir in result.problems:  # not listed: tried again at every walk
            self._listings.pop(rel_dir, None)
        elif kept is not None and same and kept.trusted and not _alike(kept, names, subfolders):
            self._untrustworthy(inbox, rel_dir)
        else:
            now = self._clock()
            first_seen = kept.first_seen if kept is not None and same else now
            self._listings[rel_dir] = _Listing(times, first_seen, now - first_seen >= GRACE,
                                               names, subfolders)
        return names

    def _untrustworthy(self, inbox: Path, rel_dir: str) -> None:
        log.warning("folder times in %r do not follow changes (%r changed, its times did not): "
                    "listing every folder at every poll from now on", str(inbox), rel_dir)
        self.enabled = False
        self._listings = {}


def _alike(kept: _Listing, names: Named, subfolders: list[str]) -> bool:
    return set(kept.names) == set(names) and set(kept.subfolders) == set(subfolders)
