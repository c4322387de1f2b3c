"""Skip rules (issue 13), each on real files: subtitles beside the media in every naming the
players accept, embedded subtitle streams PyAV wrote, .subwatchignore, short media, globs, the
audio allow-list; then through a running daemon: skipped once, signalled, logged once, and not
examined again after a restart over the same state_dir."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from daemon.config import Config
from daemon.libraries import KEY_PREFIX
from daemon.service import Service
from daemon.skips import glob_regex, skip_reason
from testkit.daemon import wait_until
from testkit.library_media import AudioSpec, SubtitleSpec, build_media, library_config, serve
from testkit.scripted import ScriptedPipeline

TV = {"name": "tv", "path": "lib", "output": "sidecar", "language": "en"}
MOVIE = "Movie (2020)/Movie (2020).mkv"


@pytest.fixture(scope="module")
def plain_mkv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of English-tagged audio under a small video, copied wherever a test needs
    an ordinary media file."""
    return build_media(tmp_path_factory.mktemp("media") / "plain.mkv",
                       [AudioSpec(seconds=1.0, language="eng")])


def config(tmp_path: Path, library: dict[str, Any] | None = None, **tables: Any) -> Config:
    return library_config(tmp_path, [library or TV], **tables)


def put(tmp_path: Path, rel: str, source: Path) -> Path:
    path = tmp_path / "lib" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return path


def touch(tmp_path: Path, rel: str, text: str = "1\n00:00:00,000 --> 00:00:01,000\nHi.\n") -> Path:
    path = tmp_path / "lib" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def reason(cfg: Config, rel: str, own: set[str] | None = None) -> str | None:
    return skip_reason(cfg, f"{KEY_PREFIX}tv/{rel}", lambda: own or set())


# ---------------------------------------------------------------------------- external

@pytest.mark.parametrize("name", [
    "Movie (2020).en.srt", "Movie (2020).eng.srt", "Movie (2020).English.srt",
    "Movie (2020).en.ass", "Movie (2020).eng.ssa", "Movie (2020).en.vtt",
    "Movie (2020).English.sub", "Movie (2020).en.sdh.srt", "movie (2020).EN.SRT",
    "Movie (2020).Director's cut.en.srt",
])
def test_an_external_subtitle_in_any_accepted_naming_skips(tmp_path: Path, plain_mkv: Path,
                                                          name: str) -> None:
    cfg = config(tmp_path)
    put(tmp_path, MOVIE, plain_mkv)
    assert reason(cfg, MOVIE) is None
    touch(tmp_path, f"Movie (2020)/{name}")
    assert reason(cfg, MOVIE) == f"subtitle exists: {name}"


@pytest.mark.parametrize("name", [
    "Movie (2020).en.forced.srt", "Movie (2020).eng.foreign.srt",  # forced: not coverage
    "Movie (2020).de.srt", "Movie (2020).German.srt",  # another language
    "Movie (2020).srt",  # no language named: not known to be English
    "Movie (2020).en.nfo", "Movie (2020)-trailer.en.srt",  # not a subtitle of this file
])
def test_forced_other_language_and_unrelated_files_are_not_coverage(tmp_path: Path,
                                                                    plain_mkv: Path,
                                                                    name: str) -> None:
    cfg = config(tmp_path)
    put(tmp_path, MOVIE, plain_mkv)
    touch(tmp_path, f"Movie (2020)/{name}")
    assert reason(cfg, MOVIE) is None


def test_a_forced_subtitle_counts_when_configured(tmp_path: Path, plain_mkv: Path) -> None:
    cfg = config(tmp_path, skip={"forced_counts": True})
    put(tmp_path, MOVIE, plain_mkv)
    touch(tmp_path, "Movie (2020)/Movie (2020).en.forced.srt")
    assert reason(cfg, MOVIE) == "subtitle exists: Movie (2020).en.forced.srt"


def test_a_longer_siblings_subtitle_is_not_this_files(tmp_path: Path, plain_mkv: Path) -> None:
    """`Show.Part2.en.srt` belongs to `Show.Part2.mkv` when that is there, not to `Show.mkv`."""
    cfg = config(tmp_path)
    put(tmp_path, "Show.mkv", plain_mkv)
    put(tmp_path, "Show.Part2.mkv", plain_mkv)
    touch(tmp_path, "Show.Part2.en.srt")
    assert reason(cfg, "Show.mkv") is None
    assert reason(cfg, "Show.Part2.mkv") == "subtitle exists: Show.Part2.en.srt"


def test_our_own_earlier_subtitle_is_not_coverage(tmp_path: Path, plain_mkv: Path) -> None:
    """A changed file is a new identity: our subtitle for its old version does not skip it."""
    cfg = config(tmp_path)
    put(tmp_path, MOVIE, plain_mkv)
    ours = touch(tmp_path, "Movie (2020)/Movie (2020).en.srt")
    assert reason(cfg, MOVIE, own={str(ours)}) is None
    assert reason(cfg, MOVIE) == "subtitle exists: Movie (2020).en.srt"


def test_with_the_rule_off_subtitles_beside_do_not_skip(tmp_path: Path, plain_mkv: Path) -> None:
    cfg = config(tmp_path, library={**TV, "output": "outbox"},
                 skip={"external_subtitles": False})
    put(tmp_path, MOVIE, plain_mkv)
    touch(tmp_path, "Movie (2020)/Movie (2020).en.srt")
    assert reason(cfg, MOVIE) is None


# ---------------------------------------------------------------------------- embedded

@pytest.mark.parametrize("subs, skipped", [
    ([SubtitleSpec("eng")], True),
    ([SubtitleSpec("fre"), SubtitleSpec("English")], True),
    ([SubtitleSpec("eng", forced=True)], False),  # forced tracks do not count
    ([SubtitleSpec("fre")], False),
    ([SubtitleSpec(None)], False),  # untagged: not known to be English
    ([], False),
])
def test_an_embedded_subtitle_stream_in_the_target_language_skips(
        tmp_path: Path, subs: list[SubtitleSpec], skipped: bool) -> None:
    cfg = config(tmp_path)
    build_media(tmp_path / "lib" / MOVIE, [AudioSpec(language="eng")], subs)
    found = reason(cfg, MOVIE)
    assert (found is not None) is skipped, found
    if skipped:
        assert found is not None and found.startswith("embedded subtitle stream")


def test_embedded_rule_uses_the_audio_tracks_language_when_nothing_else_says(
        tmp_path: Path) -> None:
    """A multilingual model, no library language: the subtitle would be in the audio's
    language, so a Japanese subtitle stream covers Japanese audio, and an English one not."""
    cfg = config(tmp_path, library={**TV, "language": ""}, whisper={"model": "small"})
    build_media(tmp_path / "lib/a.mkv", [AudioSpec(language="jpn")], [SubtitleSpec("jpn")])
    build_media(tmp_path / "lib/b.mkv", [AudioSpec(language="jpn")], [SubtitleSpec("eng")])
    assert reason(cfg, "a.mkv") == "embedded subtitle stream 2 (ja, srt)"
    assert reason(cfg, "b.mkv") is None


# ---------------------------------------------------------------------------- ignore file

@pytest.mark.parametrize("where, skipped", [
    ("Show/Season 1", True), ("Show", True), ("", True), ("Other", False),
])
def test_subwatchignore_in_the_folder_or_a_parent_skips(tmp_path: Path, plain_mkv: Path,
                                                       where: str, skipped: bool) -> None:
    cfg = config(tmp_path)
    put(tmp_path, "Show/Season 1/Show - S01E01.mkv", plain_mkv)
    touch(tmp_path, f"{where}/.subwatchignore".lstrip("/"), "")
    found = reason(cfg, "Show/Season 1/Show - S01E01.mkv")
    assert (found is not None) is skipped
    if skipped:
        assert found is not None and found.startswith(".subwatchignore in ")


def test_subwatchignore_works_in_the_inbox_too(tmp_path: Path, plain_mkv: Path) -> None:
    cfg = library_config(tmp_path)
    (tmp_path / "inbox/drop").mkdir(parents=True)
    shutil.copyfile(plain_mkv, tmp_path / "inbox/drop/a.mkv")
    (tmp_path / "inbox/.subwatchignore").write_text("")
    assert skip_reason(cfg, "drop/a.mkv", set) == ".subwatchignore in 'the library root'"


# ---------------------------------------------------------------------------- duration

def test_media_shorter_than_min_duration_skips(tmp_path: Path) -> None:
    cfg = config(tmp_path, skip={"min_duration": 3})
    build_media(tmp_path / "lib/sample.mkv", [AudioSpec(seconds=1.0)], video_seconds=1.0)
    build_media(tmp_path / "lib/film.mkv", [AudioSpec(seconds=4.0)], video_seconds=4.0)
    found = reason(cfg, "sample.mkv")
    assert found is not None and found.startswith("shorter than skip.min_duration (1.")
    assert reason(cfg, "film.mkv") is None


# ---------------------------------------------------------------------------- globs

@pytest.mark.parametrize("pattern, rel, skipped", [
    ("**/Extras/**", "Movie (2020)/Extras/Making of.mkv", True),
    ("**/Extras/**", "Extras/Interview.mkv", True),
    ("**/Extras/**", "Movie (2020)/extras/deep/er/x.mkv", True),  # case does not matter
    ("**/Extras/**", "Movie (2020)/Movie Extras.mkv", False),
    ("*-trailer.*", "Movie (2020)/Movie (2020)-trailer.mkv", True),
    ("*-trailer.*", "Movie (2020)/Movie (2020).mkv", False),
    ("Show/Season ?/*.mkv", "Show/Season 1/e.mkv", True),
    ("Show/Season ?/*.mkv", "Show/Season 10/e.mkv", False),
    ("*sample*", "Movie/movie-SAMPLE.mkv", True),
])
def test_paths_matching_a_glob_skip(tmp_path: Path, plain_mkv: Path, pattern: str, rel: str,
                                    skipped: bool) -> None:
    cfg = config(tmp_path, skip={"globs": [pattern]})
    put(tmp_path, rel, plain_mkv)
    found = reason(cfg, rel)
    assert (found == f"path matches skip.globs {pattern!r}") is skipped, found


def test_glob_classes_and_single_names() -> None:
    assert glob_regex("[!a]*.mkv").fullmatch("b.mkv")
    assert not glob_regex("[!a]*.mkv").fullmatch("a.mkv")
    assert not glob_regex("*.mkv").fullmatch("dir/a.mkv")


# ---------------------------------------------------------------------------- audio languages

@pytest.mark.parametrize("tracks, skipped", [
    ([AudioSpec(language="jpn")], True),
    ([AudioSpec(language="eng")], False),
    ([AudioSpec(language=None)], False),  # untagged audio is never skipped
    ([AudioSpec(language="jpn", default=True), AudioSpec(language="eng")], False),
])
def test_audio_language_outside_the_allow_list_skips(tmp_path: Path, tracks: list[AudioSpec],
                                                    skipped: bool) -> None:
    cfg = config(tmp_path, library={**TV, "language": ""},
                 skip={"audio_languages": ["en", "German"]})
    build_media(tmp_path / "lib/a.mkv", tracks)
    found = reason(cfg, "a.mkv")
    assert (found == "audio language Japanese (ja) not in skip.audio_languages") is skipped


# ---------------------------------------------------------------------------- in the daemon

RULES = {  # file → what makes it skipped (created before the daemon starts)
    "Movie (2020)/Movie (2020).mkv": "Movie (2020)/Movie (2020).eng.srt",
    "Ignored/Show - S01E01.mkv": "Ignored/.subwatchignore",
    "Film (1999)/Extras/Interview.mkv": None,  # the glob
}


def skipped_rows(service: Service) -> dict[str, tuple[str, float, str | None]]:
    return {j.rel_path: (j.id, j.updated_at, j.message)
            for j in service.journal.list_jobs("skipped", 1000)}


async def test_skipped_once_signalled_logged_once_and_not_examined_after_a_restart(
        tmp_path: Path, plain_mkv: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="daemon.intake")
    cfg = config(tmp_path, skip={"globs": ["**/Extras/**"], "min_duration": 2})
    for rel, marker in RULES.items():
        put(tmp_path, rel, plain_mkv)
        if marker:
            touch(tmp_path, marker, "")
    build_media(tmp_path / "lib/Shorts/Sample.mkv", [AudioSpec(seconds=1.0)])
    build_media(tmp_path / "lib/Embedded/Embedded.mkv", [AudioSpec(seconds=3.0)],
                [SubtitleSpec("eng")], video_seconds=3.0)
    build_media(tmp_path / "lib/Film (1999)/Film (1999).mkv", [AudioSpec(seconds=3.0)],
                video_seconds=3.0)
    keys = [f"{KEY_PREFIX}tv/{rel}" for rel in [*RULES, "Shorts/Sample.mkv",
                                                 "Embedded/Embedded.mkv"]]
    async with serve(cfg, ScriptedPipeline()) as service:
        await wait_until(lambda: service.journal.counts()["done"] == 1
                         and len(skipped_rows(service)) == len(keys), what="first pass")
        first = skipped_rows(service)
        events = service.bus.history(types=["signal.job_skipped"])
    assert sorted(first) == sorted(keys)
    assert {e.payload["input"] for e in events} == set(keys)  # one signal each
    assert len(events) == len(keys)
    assert sorted(skip_lines(caplog)) == \
        sorted(f"skipped {k!r}: {first[k][2]}" for k in keys)  # one log line each, why
    reasons = {k: first[k][2] for k in keys}
    assert reasons[keys[0]] == "subtitle exists: Movie (2020).eng.srt"
    assert reasons[keys[1]] == ".subwatchignore in 'Ignored'"
    assert reasons[keys[2]] == "path matches skip.globs '**/Extras/**'"
    assert (reasons[keys[3]] or "").startswith("shorter than skip.min_duration")
    assert (reasons[keys[4]] or "").startswith("embedded subtitle stream")

    # Every reason goes away; a restart over the same state_dir must not look at them again
    # (if it did, they would be queued now). A new file, sorted last, is admitted after them.
    for marker in filter(None, RULES.values()):
        (tmp_path / "lib" / marker).unlink()
    caplog.clear()
    cfg = config(tmp_path)  # no globs, no minimum duration
    put(tmp_path, "zz-control.mkv", plain_mkv)
    async with serve(cfg, ScriptedPipeline()) as service:
        await wait_until(lambda: service.journal.counts()["done"] == 2, what="control file")
        assert skipped_rows(service) == first  # the same rows, untouched
        for key in keys:  # what the scan asks first: known, so never handed to the rules
            path = tmp_path / "lib" / key.removeprefix(f"{KEY_PREFIX}tv/")
            assert service.intake.is_known(key, path.stat())
        assert service.journal.counts()["queued"] == 0
        assert not service.bus.history(types=["signal.job_skipped", "signal.job_queued"]) or \
            {e.payload["input"] for e in service.bus.history(
                types=["signal.job_skipped", "signal.job_queued"])} == \
            {f"{KEY_PREFIX}tv/zz-control.mkv"}
    assert not skip_lines(caplog)


def skip_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "daemon.intake" and r.getMessage().startswith("skipped ")]


def test_a_file_dropped_in_the_inbox_is_transcribed_whatever_subtitles_it_carries(
        tmp_path: Path) -> None:
    """The coverage rules are the libraries'; a drop folder keeps the contract's one rule
    (jobs.skip_existing: our own target path taken)."""
    config = library_config(tmp_path)
    (tmp_path / "inbox").mkdir(exist_ok=True)
    build_media(tmp_path / "inbox" / "film.mkv", [AudioSpec(language="eng")],
                subtitles=[SubtitleSpec(language="eng")])
    (tmp_path / "inbox" / "film.en.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    assert skip_reason(config, "film.mkv", set) is None


def test_with_the_language_left_to_detection_no_subtitle_beside_counts(
        tmp_path: Path, plain_mkv: Path) -> None:
    """A multilingual model with language = auto and a library with no language: the
    subtitle's language cannot be compared with one not known yet, so it is no coverage."""
    cfg = config(tmp_path, library={"name": "tv", "path": "lib", "output": "outbox",
                                    "language": ""}, whisper={"model": "small"})
    put(tmp_path, "Show/Season 1/Show - S01E01.mkv", plain_mkv)
    touch(tmp_path, "Show/Season 1/Show - S01E01.fr.srt")
    assert reason(cfg, "Show/Season 1/Show - S01E01.mkv") is None
