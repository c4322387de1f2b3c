"""Which inbox entries are candidates: a listed media extension, nothing hidden or temporary, and
no symlink that leads outside the inbox."""

from __future__ import annotations

import errno
import fnmatch
import re
from collections.abc import Container
from pathlib import Path

TEMP_PATTERNS = ("*.part", "*.partial", "*.tmp", "*.crdownload", "~*", "*.!qb", "*.download")


TEMP_NAME = re.compile("|".join(fnmatch.translate(p) for p in TEMP_PATTERNS))


def has_media_extension(name: str, extensions: Container[str]) -> bool:
    """The cheap first test a walk makes of every name, before any stat: most of a library
    (.nfo, images, subtitles) stops here."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot + 1:].lower() in extensions


def is_candidate_file(name: str) -> bool:
    """Neither hidden nor a temporary download name (the extension is tested apart)."""
    return not name.startswith(".") and TEMP_NAME.match(name.lower()) is None


def is_candidate_name(rel_path: str, extensions: Container[str]) -> bool:
    """A listed media extension (the config keeps them in lower case), and no hidden or
    temporary part anywhere in the path."""
    folder, _, name = rel_path.rpartition("/")
    return (has_media_extension(name, extensions) and is_candidate_file(name)
            and (not folder or is_visible_folder(folder)))


def is_visible_folder(rel_dir: str) -> bool:
    """A folder a walk enters: none of its parts hidden (".done" and the like)."""
    return not any(p.startswith(".") for p in rel_dir.split("/"))


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
