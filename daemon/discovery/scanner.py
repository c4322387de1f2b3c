"""Walks and the journal: which candidates the journal does not know yet.

Asking the journal about every file at every walk is what made an idle library expensive. The
scanner remembers the stat each file had when the journal last said it knew it, and asks again
only about files that are new or changed since; a walk with `everything` asks about all of them
(the slow periodic rescan, which also catches a journal that changed under an unchanged file).
A walk that does not ask about everything (a poll walk) also reuses the listing of every folder
whose times have not moved (daemon.discovery.folders). Blocking: call from a thread, one call at
a time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import WatchConfig
from .folders import FolderTimes, times_are_kept
from .walk import ScanResult, scan_files

IsKnown = Callable[[str, os.stat_result], bool]


def stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


@dataclass
class ScanStats:
    """What the scanner has cost so far (in /status, and what tests count)."""

    walks: int = 0  # walks of the whole inbox completed
    folder_scans: int = 0  # single folders scanned on an OS event
    folders_listed: int = 0
    folders_reused: int = 0  # folders not listed again: their times had not moved
    lookups: int = 0  # journal look-ups
    last_walk_seconds: float = 0.0


class Scanner:
    def __init__(self, inbox: Path, is_known: IsKnown,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inbox = inbox
        self.stats = ScanStats()
        self._is_known = is_known
        self._times = FolderTimes(False, clock)  # until reuse_listings() says otherwise
        self._known: dict[str, tuple[int, int, int]] = {}  # rel path → stat the journal knew

    def walk(self, cfg: WatchConfig, everything: bool) -> ScanResult:
        """The whole inbox, less the files the journal knows. Raises OSError if the inbox
        cannot be listed, and whatever the journal raises when it fails as a whole."""
        started = time.monotonic()
        result = scan_files(self.inbox, cfg, lister=self._times.lister(reuse=not everything))
        self._times.walked()
        self._known = self._keep_unknown(result, everything)
        self.stats.walks += 1
        self.stats.folders_listed += result.folders
        self.stats.folders_reused += result.reused
        self.stats.last_walk_seconds = time.monotonic() - started
        return result

    def folder(self, cfg: WatchConfig, rel_dir: str) -> ScanResult:
        """One folder and everything under it (one made or moved in: its files bring no
        events of their own), less the files the journal knows."""
        result = scan_files(self.inbox, cfg, top=rel_dir, recursive=True)
        self._known.update(self._keep_unknown(result, everything=True))
        self.stats.folder_scans += 1
        self.stats.folders_listed += result.folders
        return result

    def reuse_listings(self, polls: bool) -> None:
        """Only poll walks reuse listings (in events mode every walk is a full rescan), and
        only where the filesystem moves a folder's times on every change. Blocking: it reads
        /proc/mounts. Everything is asked about again: the filesystem may be another one."""
        self._times.enabled = polls and times_are_kept(self.inbox)
        self.forget()

    def forget(self) -> None:
        """Ask about every file, and list every folder, at the next walk (the share was away:
        anything may differ)."""
        self._known = {}
        self._times.forget()

    def _keep_unknown(self, result: ScanResult,
                      everything: bool) -> dict[str, tuple[int, int, int]]:
        """Leaves in `result.files` only the files the journal does not know; returns the stat
        of those it knows. Nothing is remembered if the journal fails midway (it raises)."""
        known: dict[str, tuple[int, int, int]] = {}
        unknown = []
        for rel, st in result.files:
            key = stat_key(st)
            if not everything and self._known.get(rel) == key:
                known[rel] = key
                continue
            self.stats.lookups += 1
            try:
                if self._is_known(rel, st):
                    known[rel] = key
                    continue
            except ValueError as exc:  # this one name; the journal failing as a whole raises on
                result.problems[rel] = f"cannot be looked up ({exc})"
                continue
            unknown.append((rel, st))
        result.files = unknown
        return known
