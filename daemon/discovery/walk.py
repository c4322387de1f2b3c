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
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path

from ..config import WatchConfig
from .filters import has_media_extension, is_candidate_name, link_problem

GONE = (errno.ENOENT, errno.ENOTDIR)  # a folder removed while it was being walked


@dataclass
class ScanResult:
    """What one walk found: candidate files with their stat, and what it skipped and why."""

    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # inbox-relative path → reason
    folders: int = 0  # folders listed


def scan(inbox: Path, cfg: WatchConfig) -> list[str]:
    """Every candidate file under the inbox (blocking). Raises OSError if the inbox is gone."""
    return [rel for rel, _st in scan_files(inbox, cfg).files]


def scan_files(inbox: Path, cfg: WatchConfig, top: str = "",
               recursive: bool | None = None) -> ScanResult:
    """Candidate files under the folder `top` ("": the whole inbox), with their stat; into
    subfolders when `recursive` (the config's choice unless given)."""
    if not top:
        inbox.stat()
    deep = cfg.recursive if recursive is None else recursive
    extensions = frozenset(cfg.extensions)
    result = ScanResult()
    folders = [top]
    while folders:
        rel_dir = folders.pop()
        for entry in _entries(inbox, rel_dir, result):
            try:
                _visit(inbox, extensions, deep, entry, rel_dir, folders, result)
            except Exception as exc:  # one odd entry never stops discovery
                result.problems[_join(rel_dir, entry.name)] = f"{type(exc).__name__}: {exc}"
    result.files.sort(key=lambda found: found[0])
    return result


def _join(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{name}" if rel_dir else name


def _entries(inbox: Path, rel_dir: str, result: ScanResult) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(inbox / rel_dir if rel_dir else inbox) as entries:
            listed = list(entries)
    except OSError as exc:
        if not rel_dir:
            raise
        if exc.errno not in GONE:
            result.problems[rel_dir] = f"a folder that cannot be listed ({exc.strerror or exc})"
        return []
    result.folders += 1
    return listed


def _visit(inbox: Path, extensions: Container[str], deep: bool, entry: os.DirEntry[str],
           rel_dir: str, folders: list[str], result: ScanResult) -> None:
    name = entry.name
    try:
        is_dir = entry.is_dir(follow_symlinks=False)  # the listing's d_type: no stat
    except OSError:
        return  # gone during the walk
    if is_dir:
        if deep and not name.startswith("."):
            folders.append(_join(rel_dir, name))
        return
    if not has_media_extension(name, extensions):
        return
    rel = _join(rel_dir, name)
    if not is_candidate_name(rel, extensions):
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
