"""The only module that writes into the outbox, and it writes atomically.

A media server scanning the outbox must never see half a subtitle, and a crash must never leave
one behind: each file is written to a temp name in the same folder, fsynced, renamed over the
target, and the folder fsynced. Temp names are hidden and recognisable, so a start-up sweep
removes what a killed process left.

Output names are predictable and never shared (`output_stem`): an input's stem, or its whole
file name when another watched file in its folder has the same stem (a.mp4 and a.mkv), cut to
fit NAME_MAX with a short hash when the input's name is very long.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
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
from .errors import TransientError, classify_os_error
from .libraries import library_of
from .naming import Naming
from .subtitles import render

TMP_PREFIX = ".subwatch-"
TMP_SUFFIX = ".tmp"
NAME_MAX = 255  # bytes in one file name: ext4, xfs, btrfs, zfs, NTFS/SMB in UTF-8 all stop here
LANG_ROOM = 16  # bytes kept for the language code, which is not known before the job runs
ERROR_SUFFIX = ".error.json"
HASH_CHARS = 10
# What a filesystem says of a name or path it will never take: another name may do.
NAME_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
OUTBOX_FULL = "outbox_full"


class OutboxFull(TransientError):
    """The outbox's filesystem is full (or its quota spent): no job's fault, and every job
    would meet it. The worker keeps the transcript and tries the write again (Worker)."""

    def __init__(self, message: str) -> None:
        super().__init__(OUTBOX_FULL, message)


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


def write_beside(path: Path, text: str) -> None:
    """`atomic_write` into a folder that is not ours (a media library, issue 13): the folder is
    never created (a show deleted meanwhile stays deleted), and where the filesystem can
    (O_TMPFILE: ext4, xfs, btrfs, tmpfs) the new file has no name until it is linked under a
    temp name and renamed over the target, so a crash while writing leaves nothing beside the
    media. Elsewhere (NFS, SMB) a hidden temp name lives for the length of one write."""
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "the media file's folder is gone",
                                str(path.parent)) from None
    try:
        if not _write_unnamed(folder, path.name, text):
            atomic_write(path, text)
            return
        with contextlib.suppress(OSError):  # some shares cannot fsync a folder: the rename
            os.fsync(folder)                 # stands all the same
    finally:
        os.close(folder)


def _write_unnamed(folder: int, name: str, text: str) -> bool:
    """Write `text` to an O_TMPFILE in `folder`, then link it and rename it to `name`; False
    when the filesystem has no O_TMPFILE or cannot link one (nothing was written then)."""
    try:
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return False
        raise
    tmp = f"{TMP_PREFIX}{secrets.token_hex(6)}{TMP_SUFFIX}"
    with open(fd, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
        try:  # dst_dir_fd makes it linkat(AT_SYMLINK_FOLLOW): /proc's link is followed
            os.link(f"/proc/self/fd/{fh.fileno()}", tmp, dst_dir_fd=folder,
                    follow_symlinks=True)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.ENOENT, errno.EOPNOTSUPP):
                return False
            raise
    try:
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        os.unlink(tmp, dir_fd=folder)
        raise
    return True


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


def name_bytes(name: str) -> int:
    return len(os.fsencode(name))


def fit_stem(stem: str, name: str, room: int) -> str:
    """`stem` when it fits in `room` bytes; else its longest head that fits with `~` and a short
    hash of the input's whole file `name`: the same input gets the same name every time, and two
    long names that share a head stay apart."""
    stem = utf8_name(stem)
    if name_bytes(stem) <= room:
        return stem
    tag = "~" + hashlib.sha1(os.fsencode(name)).hexdigest()[:HASH_CHARS]
    head = stem
    while head and name_bytes(head) + len(tag) > room:
        head = head[:-1]
    return head + tag


def utf8_name(name: str) -> str:
    """`name` as valid UTF-8, for output names, folders and the error file. A name that is not
    UTF-8 (Latin-1 archives, old SMB clients) arrives with its odd bytes as surrogate escapes,
    which no UTF-8 file, JSON document or media server takes: each odd byte becomes U+FFFD, and
    `~` with a short hash of the raw name follows, so two such names stay apart and an input
    gets the same name every time (b"caf\\xe9" → "caf\ufffd~<hash>"). UTF-8 names are kept."""
    raw = name.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "replace")
    if text == name:
        return name
    return f"{text}~{hashlib.sha1(raw).hexdigest()[:HASH_CHARS]}"


def utf8_path(rel_path: str) -> str:
    """`utf8_name` for each part of an inbox-relative path."""
    return "/".join(utf8_name(part) for part in rel_path.split("/"))


class Outbox:
    """Where the outputs of one input go, by the contract's naming rules. With `inbox` and
    `extensions`, inputs that share a stem in one folder get distinct outputs (`stem`)."""

    def __init__(self, root: Path, template: str, formats: Iterable[str],
                 inbox: Path | None = None, extensions: Iterable[str] = (), *,
                 naming: Naming | None = None, errors: Path | None = None, prefix: str = "",
                 sidecar: bool = False) -> None:
        self.root = root
        self.template = template
        self.formats = tuple(formats)
        self.inbox = inbox
        self.extensions = tuple(dict.fromkeys(e.lower() for e in extensions))
        # Issue 13: `{lang}` as players read it; error files in `errors` (a sidecar library's
        # outbox folder, never beside the media); journal keys under `prefix` (a library's)
        self.naming = naming
        self.error_root = errors or root
        self.prefix = prefix
        self.sidecar = sidecar

    def inner(self, rel_path: str) -> str:
        """The path inside the inbox or library, from the journal's rel_path."""
        return rel_path[len(self.prefix):] if rel_path.startswith(self.prefix) else rel_path

    def folder(self, rel_path: str, root: Path | None = None) -> Path:
        rel = PurePosixPath(self.inner(rel_path))
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"refusing an input path outside the inbox: {rel_path!r}")
        return (root or self.root) / utf8_path(str(rel.parent))

    def stem(self, rel_path: str) -> str:
        """What `{stem}` stands for in this input's output and error file names."""
        rel = PurePosixPath(rel_path)
        base = rel.name if self.shares_stem(rel_path) else rel.stem
        return fit_stem(base, rel.name, self.stem_room())

    def shares_stem(self, rel_path: str) -> bool:
        """Does another watched file in the input's inbox folder have the same stem? Then each
        of them names its outputs after its whole file name (a.mp4.en.srt, a.mkv.en.srt), so
        none overwrites another's. A few stats, whatever the folder's size."""
        if self.inbox is None:
            return False
        rel = PurePosixPath(self.inner(rel_path))
        folder = self.inbox / rel.parent
        for ext in self.extensions:
            for other in {f"{rel.stem}.{ext}", f"{rel.stem}.{ext.upper()}"}:
                # a case-insensitive share reports the input itself under another case
                if other.lower() != rel.name.lower() and os.path.lexists(folder / other):
                    return True
        return False

    def stem_room(self) -> int:
        """Bytes a stem may take so that every output name and the error name fit NAME_MAX."""
        uses = max(1, self.template.count("{stem}"))
        room = max(LANG_ROOM, self.naming.room() if self.naming else 0)
        rest = [name_bytes(self.template.format(stem="", lang="x" * room, ext=fmt))
                for fmt in self.formats or ("srt",)]
        return min((NAME_MAX - max(rest)) // uses, NAME_MAX - len(ERROR_SUFFIX))

    def target(self, rel_path: str, lang: str, fmt: str) -> Path:
        lang = self.naming.lang_part(lang) if self.naming else lang
        name = self.template.format(stem=self.stem(rel_path), lang=lang, ext=fmt)
        return self.folder(rel_path) / name

    def error_path(self, rel_path: str) -> Path:
        return self.folder(rel_path, self.error_root) / f"{self.stem(rel_path)}{ERROR_SUFFIX}"

    def clear_error(self, rel_path: str) -> None:
        """Remove this input's error file after a success: the one at today's name, and the one
        it had while its stem was (or was not) shared, as siblings come and go; each only when
        its `input` says it is this input's, so a success never removes a sibling's."""
        rel, room = PurePosixPath(rel_path), self.stem_room()
        names = [self.folder(rel_path, self.error_root) /
                 (fit_stem(base, rel.name, room) + ERROR_SUFFIX)
                 for base in dict.fromkeys((rel.stem, rel.name))]
        for path in [*names, *self.error_places(rel_path)[1:]]:
            if _error_input(path) == error_input(rel_path):
                path.unlink(missing_ok=True)

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
        lang = self.naming.lang_pattern() if self.naming else r"[a-z]{2,3}"
        return re.compile(re.escape(name).replace(re.escape(marker), lang))

    def write(self, rel_path: str, transcript: Transcript) -> list[Path]:
        """Write every configured format; the error file of an earlier failure goes away."""
        planned = self.plan(rel_path, transcript)
        self.write_planned(rel_path, planned)
        return list(planned)

    def plan(self, rel_path: str, transcript: Transcript) -> dict[Path, str]:
        """Each configured format's target path and text, written by `write_planned`."""
        return {self.target(rel_path, transcript.language, fmt): render(fmt, transcript)
                for fmt in self.formats}

    def write_planned(self, rel_path: str, planned: dict[Path, str]) -> None:
        """Write what `plan` made, each file atomically; a full disk is OutboxFull."""
        try:
            for path, text in planned.items():
                (write_beside if self.sidecar else atomic_write)(path, text)
            self.clear_error(rel_path)
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:
                raise OutboxFull(f"cannot write the subtitles: {exc.strerror}") from None
            raise classify_os_error(exc, "cannot write the subtitles") from None

    def write_error(self, rel_path: str, code: str, message: str, attempts: int) -> Path:
        record: dict[str, Any] = {
            "input": error_input(rel_path),
            "error": code,
            "message": message,
            "attempts": attempts,
            "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        text = json.dumps(record, ensure_ascii=False, indent=1) + "\n"
        places = self.error_places(rel_path)
        for path in places:
            try:
                atomic_write(path, text)
                return path
            except OSError as exc:
                if exc.errno not in NAME_ERRNOS or path == places[-1]:
                    raise
        raise AssertionError("unreachable")

    def error_places(self, rel_path: str) -> list[Path]:
        """Where the error file goes, in order: beside the subtitle; where that name or folder
        is refused (a path past PATH_MAX below a longer outbox root, a character the share
        refuses), a hashed name there, then the same name at the outbox root. Its `input`
        says whose it is, so a failed job always leaves one."""
        hashed = hashlib.sha1(os.fsencode(rel_path)).hexdigest()[:HASH_CHARS] + ERROR_SUFFIX
        return [self.error_path(rel_path), self.folder(rel_path, self.error_root) / hashed,
                self.error_root / hashed]


def content_hash(text: str) -> str:
    """The hash of an output's text as `atomic_write` puts it on disk."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def outputs_intact(hashes: dict[str, str]) -> bool:
    """Is every output there, with the content it was written with? (A kill between the
    renames and the journal's commit leaves them so; an earlier version's file does not pass.)"""
    for path, digest in hashes.items():
        try:
            data = Path(path).read_bytes()
        except OSError:
            return False
        if hashlib.sha256(data).hexdigest() != digest:
            return False
    return bool(hashes)


def error_input(rel_path: str) -> str:
    """The error file's `input` field for an input: also how a success knows its own."""
    return utf8_path(rel_path)


def _error_input(path: Path) -> object:
    """The `input` an error file names; None when there is none or it is not ours to read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("input") if isinstance(record, dict) else None


def outbox_for(config: Config, rel_path: str = "") -> Outbox:
    """Where the input with this journal rel_path writes, as the config in force says (cheap:
    build one where it is needed): the outbox for the inbox's files; for a library's, its
    folder in the outbox, or beside the media (sidecar) with error files in that folder."""
    out = config.output
    naming = Naming(out.lang_style, out.tag, out.sdh, out.forced)
    found = library_of(config, rel_path)
    if found is None or found[0].default:  # a library since removed: errors to the outbox
        return Outbox(config.paths.outbox, out.name_template, out.formats,
                      inbox=config.paths.inbox, extensions=config.watch.extensions,
                      naming=naming)
    lib = found[0]
    sidecar = lib.output == "sidecar"
    return Outbox(lib.root if sidecar else lib.outbox_root(config), out.name_template,
                  out.formats, inbox=lib.root, extensions=config.watch.extensions,
                  naming=naming, errors=lib.outbox_root(config), prefix=lib.prefix,
                  sidecar=sidecar)
