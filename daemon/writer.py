"""The only module that writes into the outbox, and it writes atomically.

A media server scanning the outbox must never see half a subtitle, and a crash must never leave
one behind: each file is written to a temp name in the same folder, fsynced, renamed over the
target, and the folder fsynced. Temp names are hidden and recognisable, so a start-up sweep
removes what a killed process left.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from .config import Config
from .domain import Transcript
from .errors import classify_os_error
from .subtitles import render

TMP_PREFIX = ".subwatch-"
TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # some network filesystems refuse directory handles; the rename still stands
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the whole new one, nothing between."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{secrets.token_hex(6)}{TMP_SUFFIX}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def is_temp_name(name: str) -> bool:
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


def sweep_temp_files(outbox: Path) -> int:
    """Remove temp files a killed process left in the outbox; returns how many."""
    removed = 0
    for folder, _dirs, files in os.walk(outbox):
        for name in files:
            if is_temp_name(name):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except OSError:
                    pass
    return removed


class Outbox:
    """Where the outputs of one input go, by the contract's naming rules."""

    def __init__(self, root: Path, template: str, formats: Iterable[str]) -> None:
        self.root = root
        self.template = template
        self.formats = tuple(formats)

    def folder(self, rel_path: str) -> Path:
        rel = PurePosixPath(rel_path)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"refusing an input path outside the inbox: {rel_path!r}")
        return self.root / rel.parent

    @staticmethod
    def stem(rel_path: str) -> str:
        return PurePosixPath(rel_path).stem

    def target(self, rel_path: str, lang: str, fmt: str) -> Path:
        name = self.template.format(stem=self.stem(rel_path), lang=lang, ext=fmt)
        return self.folder(rel_path) / name

    def error_path(self, rel_path: str) -> Path:
        return self.folder(rel_path) / f"{self.stem(rel_path)}.error.json"

    def existing_subtitle(self, rel_path: str, lang: str | None) -> Path | None:
        """An SRT already at the target path (any language code when it is not known yet)."""
        if lang:
            path = self.target(rel_path, lang, "srt")
            try:
                return path if path.is_file() else None
            except OSError:  # an unreadable folder on a share: nothing known to skip for
                return None
        pattern = self._pattern(rel_path, "srt")
        try:
            with os.scandir(self.folder(rel_path)) as entries:  # closed early, not by GC
                for entry in entries:
                    if pattern.fullmatch(entry.name) and entry.is_file():
                        return Path(entry.path)
        except OSError:
            return None
        return None

    def _pattern(self, rel_path: str, ext: str) -> re.Pattern[str]:
        marker = "\x00lang\x00"
        name = self.template.format(stem=self.stem(rel_path), lang=marker, ext=ext)
        return re.compile(re.escape(name).replace(re.escape(marker), r"[a-z]{2,3}"))

    def write(self, rel_path: str, transcript: Transcript) -> list[Path]:
        """Write every configured format; the error file of an earlier failure goes away."""
        written = []
        try:
            for fmt in self.formats:
                path = self.target(rel_path, transcript.language, fmt)
                atomic_write(path, render(fmt, transcript))
                written.append(path)
            self.error_path(rel_path).unlink(missing_ok=True)
        except OSError as exc:
            raise classify_os_error(exc, "cannot write the subtitles") from None
        return written

    def write_error(self, rel_path: str, code: str, message: str, attempts: int) -> Path:
        record: dict[str, Any] = {
            "input": rel_path,
            "error": code,
            "message": message,
            "attempts": attempts,
            "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        path = self.error_path(rel_path)
        atomic_write(path, json.dumps(record, ensure_ascii=False, indent=1) + "\n")
        return path


def outbox_for(config: Config) -> Outbox:
    """The outbox as the config in force names it (cheap: build one where it is needed)."""
    return Outbox(config.paths.outbox, config.output.name_template, config.output.formats)
