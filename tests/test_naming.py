"""Subtitle names players pick up (issue 13), and language tags read back, on real outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import config_from_dict
from daemon.domain import Cue, Transcript
from daemon.naming import LANGUAGES, Naming, label, normalize, parse_subtitle_name
from daemon.writer import outbox_for


def one_cue(language: str) -> Transcript:
    return Transcript(language, 2.0, (), (Cue(0.0, 1.0, ("Hi.",)),))


@pytest.mark.parametrize("style, names", [
    ("iso639-1", {"en": "en", "de": "de", "fr": "fr", "zh": "zh", "jw": "jv", "haw": "haw"}),
    ("iso639-2b", {"en": "eng", "de": "ger", "fr": "fre", "zh": "chi", "jw": "jav",
                   "haw": "haw"}),
    ("name", {"en": "English", "de": "German", "fr": "French", "zh": "Chinese",
              "jw": "Javanese", "haw": "Hawaiian"}),
])
def test_lang_styles_write_what_players_read(style: str, names: dict[str, str]) -> None:
    for code, written in names.items():
        assert label(code, style) == written
    assert label("und", style) == "und"  # no language known: written as the pipeline says


@pytest.mark.parametrize("style, expected", [
    ("iso639-1", "Movie (2020).en.srt"),
    ("iso639-2b", "Movie (2020).eng.srt"),
    ("name", "Movie (2020).English.srt"),
])
def test_outbox_writes_player_names_in_each_style(tmp_path: Path, style: str,
                                                  expected: str) -> None:
    config = config_from_dict({"output": {"lang_style": style}}, base=tmp_path)
    (written,) = outbox_for(config).write("Movies/Movie (2020).mkv", one_cue("en"))
    assert written == tmp_path / "outbox" / "Movies" / expected
    assert written.read_text().startswith("1\n00:00:00,000 --> 00:00:01,000\nHi.")


def test_default_naming_is_todays(tmp_path: Path) -> None:
    """No new key set: `{stem}.{lang}.{ext}` with the ISO 639-1 code, as before issue 13."""
    config = config_from_dict({}, base=tmp_path)
    assert outbox_for(config).target("a/b.mkv", "en", "srt") == tmp_path / "outbox/a/b.en.srt"


def test_tag_goes_before_the_language_and_flags_after(tmp_path: Path) -> None:
    config = config_from_dict({"output": {"tag": "generated", "sdh": True, "forced": True,
                                          "formats": ["srt", "vtt"]}}, base=tmp_path)
    paths = outbox_for(config).write("Movie (2020).mkv", one_cue("en"))
    assert [p.name for p in paths] == ["Movie (2020).generated.en.sdh.forced.srt",
                                       "Movie (2020).generated.en.sdh.forced.vtt"]
    parsed = parse_subtitle_name("Movie (2020)", paths[0].name)
    assert parsed is not None
    assert (parsed.language, parsed.sdh, parsed.forced) == ("en", True, True)


@pytest.mark.parametrize("style", ["iso639-1", "iso639-2b", "name"])
def test_every_language_we_write_reads_back_as_itself(style: str) -> None:
    naming = Naming(style)
    for code in LANGUAGES:
        parsed = parse_subtitle_name("Show - S01E02", f"Show - S01E02.{naming.lang_part(code)}.srt")
        assert parsed is not None and parsed.language == code, (style, code)


def test_existing_subtitle_is_found_in_name_style(tmp_path: Path) -> None:
    """Before the language is known (whisper.language = auto, a multilingual model), our own
    earlier output is recognised in whatever style it was written."""
    config = config_from_dict({"output": {"lang_style": "name"}}, base=tmp_path)
    box = outbox_for(config)
    box.write("film.mkv", one_cue("de"))
    assert box.existing_subtitle("film.mkv", None) == tmp_path / "outbox" / "film.German.srt"
    assert box.existing_subtitle("film.mkv", "en") is None


@pytest.mark.parametrize("tag, code", [
    ("en", "en"), ("eng", "en"), ("ENG", "en"), ("English", "en"), ("english", "en"),
    ("en-US", "en"), ("pt_BR", "pt"), ("pt-BR", "pt"), ("ger", "de"), ("deu", "de"),
    ("German", "de"), ("fre", "fr"), ("fra", "fr"), ("jpn", "ja"), ("Japanese", "ja"),
    ("zh-Hans", "zh"), ("chi", "zh"), ("zho", "zh"), ("nob", "no"), ("iw", "he"),
    ("jw", "jv"), ("jav", "jv"),
    ("und", None), ("zxx", None), ("", None), (None, None), ("forced", None), ("1080p", None),
])
def test_language_tags_normalize(tag: str | None, code: str | None) -> None:
    assert normalize(tag) == code


@pytest.mark.parametrize("name, language, forced, sdh", [
    ("Movie (2020).en.srt", "en", False, False),
    ("Movie (2020).eng.srt", "en", False, False),
    ("Movie (2020).English.srt", "en", False, False),
    ("movie (2020).EN.SRT", "en", False, False),
    ("Movie (2020).en.forced.srt", "en", True, False),
    ("Movie (2020).en.foreign.ass", "en", True, False),
    ("Movie (2020).en.sdh.srt", "en", False, True),
    ("Movie (2020).en.cc.vtt", "en", False, True),
    ("Movie (2020).en.hi.srt", "en", False, True),  # after a language, hi is the SDH flag
    ("Movie (2020).hi.srt", "hi", False, False),  # alone, it is Hindi
    ("Movie (2020).en.default.ssa", "en", False, False),
    ("Movie (2020).Director's cut.de.sub", "de", False, False),
    ("Movie (2020).srt", None, False, False),
])
def test_subtitle_names_read_as_players_read_them(name: str, language: str | None,
                                                   forced: bool, sdh: bool) -> None:
    parsed = parse_subtitle_name("Movie (2020)", name)
    assert parsed is not None
    assert (parsed.language, parsed.forced, parsed.sdh) == (language, forced, sdh)


@pytest.mark.parametrize("name", ["Movie (2020).en.nfo", "Movie (2021).en.srt",
                                  "Movie (2020)-trailer.en.srt", "Movie (2020).mkv"])
def test_names_of_other_files_are_not_its_subtitles(name: str) -> None:
    assert parse_subtitle_name("Movie (2020)", name) is None
