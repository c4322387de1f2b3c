"""Skip rules: media that is not to be transcribed, and the one-line reason why.

Asked once per file identity, at admission (Intake, in a worker thread): a skipped file is
recorded in the journal as `skipped` with its reason, so it is logged once, signalled once
(`signal.job_skipped`) and never examined again, a restart included, until the file changes
(a new identity) or someone retries it (POST /jobs/{id}/retry).

Rules, cheapest first, each configured in [skip] (jobs.skip_existing for the first):
- our target path already holds a subtitle that is not our own earlier output;
- the path matches one of `skip.globs` (library-relative, `**` spans folders, a pattern with no
  `/` matches the file name; case does not matter: "Extras" and "extras" alike);
- `skip.ignore_file` (`.subwatchignore`) in the media's folder or any parent up to the library;
- an external subtitle beside the media in the target language, in any naming the players
  accept (`x.en.srt`, `x.eng.srt`, `x.English.srt`, srt/ass/ssa/vtt/sub; a forced one counts
  only with `skip.forced_counts`);
- from the file's header (PyAV, decode's guards): shorter than `skip.min_duration`; the audio
  track that would be transcribed is tagged with a language outside `skip.audio_languages`
  (untagged audio is never skipped: most files carry no tag); an embedded subtitle stream in
  the target language (forced streams do not count).

The target language is the library's `language`, else the one Whisper is set to, else the
chosen audio track's tag; when none is known, any subtitle counts as coverage, and an untagged
one only then.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .config import Config
from .libraries import Library, library_of
from .naming import SUBTITLE_EXTENSIONS, SubtitleName, label, normalize, parse_subtitle_name
from .pipeline import expected_language
from .pipeline.tracks import MediaInfo, preferred_language, probe
from .writer import outbox_for

log = logging.getLogger(__name__)

OwnOutputs = Callable[[], set[str]]  # paths our earlier jobs of this input wrote


@dataclass(frozen=True)
class Candidate:
    """One admitted file as the rules see it."""

    config: Config
    rel_path: str  # the journal's key
    library: Library
    inner: str  # the path inside the library

    @property
    def path(self) -> Path:
        return self.library.root / self.inner

    def target_language(self) -> str | None:
        """The language our subtitle would be in, where it is known before listening."""
        if self.config.whisper.task == "translate":
            return "en"
        return self.library.language or expected_language(self.config.whisper)


def skip_reason(config: Config, rel_path: str, own_outputs: OwnOutputs) -> str | None:
    """Why this file is not to be transcribed; None when it is."""
    found = library_of(config, rel_path)
    if found is None:
        return None  # a library removed since: the worker cancels it
    item = Candidate(config, rel_path, found[0], found[1])
    for rule in (existing_output, glob_match, ignore_file, external_subtitle):
        reason = rule(item, own_outputs)
        if reason is not None:
            return reason
    return header_rules(item)


def existing_output(item: Candidate, own_outputs: OwnOutputs) -> str | None:
    """jobs.skip_existing: a subtitle at our target path that is not our own earlier output
    (a changed file is a new identity and is transcribed again)."""
    if not item.config.jobs.skip_existing:
        return None
    existing = outbox_for(item.config, item.rel_path).existing_subtitle(
        item.rel_path, item.target_language())
    if existing is None or str(existing) in own_outputs():
        return None
    return f"subtitle exists: {existing.name}"


def glob_match(item: Candidate, _own: OwnOutputs) -> str | None:
    for pattern in item.config.skip.globs:
        if glob_regex(pattern).fullmatch(item.inner if "/" in pattern.strip("/")
                                         else PurePosixPath(item.inner).name):
            return f"path matches skip.globs {pattern!r}"
    return None


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `*` and `?` stay inside one name, `**` spans folders (none or
    many), `[...]` is a class; case-insensitive."""
    parts = pattern.strip("/").split("/")
    out = []
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_name_regex(part) + ("" if last else "/"))
    return re.compile("".join(out), re.IGNORECASE)


def _name_regex(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        c = part[i]
        close = part.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif close > 0:
            body = part[i + 1:close]
            out.append("[" + ("^" + re.escape(body[1:]) if body[0] == "!" else re.escape(body))
                       + "]")
            i = close
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def ignore_file(item: Candidate, _own: OwnOutputs) -> str | None:
    name = item.config.skip.ignore_file
    if not name:
        return None
    folder = PurePosixPath(item.inner).parent
    for up in (folder, *folder.parents):
        if os.path.lexists(item.library.root / up / name):
            return f"{name} in {str(up) if str(up) != '.' else 'the library root'!r}"
    return None


def external_subtitle(item: Candidate, own_outputs: OwnOutputs) -> str | None:
    """A subtitle file beside the media, in the target language, that is not our own."""
    skip = item.config.skip
    if not skip.external_subtitles or item.library.default:  # see header_rules
        return None
    target = item.target_language()
    if target is None:  # a multilingual model left to detect: no file beside can be said to
        return None     # cover a language not known yet (Movie.fr.srt beside English audio)
    for path, name in beside(item):
        if name.forced and not skip.forced_counts:
            continue
        if name.language == target and str(path) not in own_outputs():
            return f"subtitle exists: {path.name}"
    return None


def beside(item: Candidate) -> list[tuple[Path, SubtitleName]]:
    """The subtitle files in the media's folder that belong to it: named after its stem, and
    not after a longer stem of another media file there (`Movie.Part2.en.srt` is Movie.Part2's,
    not Movie's)."""
    media = PurePosixPath(item.inner)
    folder = item.library.root / media.parent
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries]
    except OSError:
        return []
    subtitles = [n for n in names if n.rsplit(".", 1)[-1].lower() in SUBTITLE_EXTENSIONS]
    if not subtitles:
        return []
    stem, exts = media.stem, item.config.watch.extensions
    longer = [n.rsplit(".", 1)[0] for n in names  # other media named `<stem>.<more>.<ext>`
              if n.rsplit(".", 1)[-1].lower() in exts and n != media.name
              and n.lower().startswith(stem.lower() + ".")]
    found: list[tuple[Path, SubtitleName]] = []
    for name in subtitles:
        parsed = parse_subtitle_name(stem, name)
        if parsed is not None and not any(parse_subtitle_name(s, name) for s in longer):
            found.append((folder / name, parsed))
    return found


def header_rules(item: Candidate) -> str | None:
    """The rules that read the file's header; the file is opened only when one is on.

    The subtitle-coverage rules (a subtitle file beside the media, a subtitle stream inside)
    are for media libraries: a file dropped in the inbox was dropped to be transcribed, and
    there only `jobs.skip_existing` (our target path taken) holds, as it always has."""
    skip = item.config.skip
    embedded = skip.embedded_subtitles and not item.library.default
    if not (embedded or skip.audio_languages or skip.min_duration):
        return None
    preferred = preferred_language(item.config, item.library.language)
    info = probe(item.path, preferred, within=item.library.root)
    if info is None:
        return None  # not readable as media: the job fails with the decoder's reason
    for rule in (too_short, audio_not_allowed, embedded_subtitle):
        reason = rule(item, info)
        if reason is not None:
            return reason
    return None


def too_short(item: Candidate, info: MediaInfo) -> str | None:
    limit = item.config.skip.min_duration
    if limit and info.duration is not None and info.duration < limit:
        return f"shorter than skip.min_duration ({info.duration:.1f} s < {limit:g} s)"
    return None


def audio_not_allowed(item: Candidate, info: MediaInfo) -> str | None:
    allowed = {normalize(lang) for lang in item.config.skip.audio_languages}
    lang = info.audio.language if info.audio else None
    if allowed and lang is not None and lang not in allowed:
        return f"audio language {label(lang, 'name')} ({lang}) not in skip.audio_languages"
    return None


def embedded_subtitle(item: Candidate, info: MediaInfo) -> str | None:
    if not item.config.skip.embedded_subtitles or item.library.default:
        return None
    target = item.target_language() or (info.audio.language if info.audio else None)
    for sub in info.subtitles:
        if sub.forced:
            continue
        if (sub.language == target) if target else True:
            lang = sub.language or "untagged"
            return f"embedded subtitle stream {sub.index} ({lang}, {sub.codec})"
    return None
