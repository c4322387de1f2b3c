"""Walking the inbox: candidate files with their stat, and what was skipped and why.

A library holds far more other files (.nfo, images, subtitles) than media: each name is first
tested for a media extension, and only candidates cost a stat (a share is slow to ask). Folders
are visited from a list, not by recursion, so a tree of any depth is walked. A folder that cannot
be listed is skipped and named; only an inbox that cannot be listed itself raises (OSError).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import WatchConfig
from .filters import is_candidate_file, link_problem

GONE = (errno.ENOENT, errno.ENOTDIR)  # a folder removed while it was being walked
Named = list[tuple[str, str]]  # candidate names: (inbox-relative, full path)


@dataclass
class ScanResult:
    """What one walk found: candidate files with their stat, and what it skipped and why."""

    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # inbox-relative path → reason
    folders: int = 0  # folders listed
    reused: int = 0  # folders whose last listing was reused (their times had not moved)


# (inbox, folder, recursive, extensions, subfolders found, result) → candidate names
Lister = Callable[[Path, str, bool, frozenset[str], list[str], ScanResult], Named]


def scan(inbox: Path, cfg: WatchConfig) -> list[str]:
    """Every candidate file under the inbox (blocking). Raises OSError if the inbox is gone."""
    return [rel for rel, _st in scan_files(inbox, cfg).files]


def scan_files(inbox: Path, cfg: WatchConfig, top: str = "", recursive: bool | None = None,
               lister: Lister | None = None) -> ScanResult:
    """Candidate files under the folder `top` ("": the whole inbox), with their stat; into
    subfolders when `recursive` (the config's choice unless given). `lister` lists each folder
    (default: `list_folder`; a poll walk's may reuse listings, daemon.discovery.folders)."""
    if not top:
        inbox.stat()
    deep = cfg.recursive if recursive is None else recursive
    extensions = frozenset(cfg.extensions)
    result = ScanResult()
    folders = [top]
    listing = lister or list_folder
    while folders:
        for rel, path in listing(inbox, folders.pop(), deep, extensions, folders, result):
            try:
                _take(inbox, rel, path, result)
            except Exception as exc:  # one odd entry never stops discovery
                result.problems[rel] = f"{type(exc).__name__}: {exc}"
    result.files.sort(key=lambda found: found[0])
    return result


def list_folder(inbox: Path, rel_dir: str, deep: bool, extensions: frozenset[str],
                folders: list[str], result: ScanResult) -> Named:
    """One folder: its subfolders go onto `folders`, the candidate names (a media extension,
    neither hidden nor temporary) come back (inbox-relative, full path). Only names and the
    listing's d_type are looked at, no stat: this loop runs for every entry of the library, so
    it is kept tight (no call per entry but the d_type test)."""
    prefix = f"{rel_dir}/" if rel_dir else ""
    found = []
    for entry in _entries(inbox, rel_dir, result):
        name = entry.name
        dot = name.rfind(".")
        try:
            if (dot > 0 and name[dot + 1:].lower() in extensions
                    and not entry.is_dir(follow_symlinks=False)):
                if is_candidate_file(name):
                    found.append((prefix + name, entry.path))
            elif deep and name[0] != "." and entry.is_dir(follow_symlinks=False):
                folders.append(prefix + name)
        except OSError:
            continue  # gone during the walk
    return found


def _entries(inbox: Path, rel_dir: str, result: ScanResult) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(f"{inbox}/{rel_dir}" if rel_dir else inbox) as entries:
            listed = list(entries)
    except OSError as exc:
        if not rel_dir:
            raise
        if exc.errno not in GONE:
            result.problems[rel_dir] = f"a folder that cannot be listed ({exc.strerror or exc})"
        return []
    result.folders += 1
    return listed


def _take(inbox: Path, rel: str, path: str, result: ScanResult) -> None:
    """A candidate name: a candidate file if it is a regular file (one stat), or a problem (a
    symlink that must not be followed)."""
    st, problem = _candidate_stat(inbox, path)
    if problem is not None:
        result.problems[rel] = problem
    elif st is not None:
        result.files.append((rel, st))


def _candidate_stat(inbox: Path, path: str) -> tuple[os.stat_result | None, str | None]:
    """The stat of a regular file (followed through a symlink that stays inside the inbox), or
    why this entry is refused."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            problem = link_problem(inbox, Path(path))
            if problem is not None:
                return None, problem
            st = os.stat(path)
    except OSError:
        return None, None  # gone during the walk
    return (st if stat.S_ISREG(st.st_mode) else None), None
