"""Subtitle names that Jellyfin, Plex, Emby and Kodi pick up, and language tags read back.

Players find an external subtitle by its name: the media file's stem, a language, optional
flags, the subtitle extension (`Movie (2020).en.srt`, `Movie (2020).eng.forced.srt`,
`Movie (2020).English.srt`). All four accept ISO 639-1 codes, ISO 639-2 codes and English
names, so that is what `output.lang_style` chooses between; flags go after the language (the
order Plex and Jellyfin document), and the optional tag goes before it, where Plex still finds
the language and Jellyfin shows the tag as the track's title.

The same table reads languages back, from a subtitle's name or a container's stream tags
(`eng`, `ger`/`deu`, `English`, `pt-BR`), so a skip rule and the audio track choice compare
languages, not spellings. Pure: no I/O here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

LANG_STYLES = ("iso639-1", "iso639-2b", "name")
SUBTITLE_EXTENSIONS = ("srt", "ass", "ssa", "vtt", "sub")
FORCED_FLAGS = frozenset({"forced", "foreign"})
SDH_FLAGS = frozenset({"sdh", "cc", "hi"})
OTHER_FLAGS = frozenset({"default"})

# Whisper's languages, by the code the pipeline uses: (ISO 639-1, ISO 639-2/B, ISO 639-2/T,
# English name). Whisper says "jw" for Javanese (ISO "jv"); Hawaiian and Cantonese have no
# two-letter code, so their three-letter one serves in every style.
_TABLE = """
af afr afr Afrikaans|am amh amh Amharic|ar ara ara Arabic|as asm asm Assamese
az aze aze Azerbaijani|ba bak bak Bashkir|be bel bel Belarusian|bg bul bul Bulgarian
bn ben ben Bengali|bo tib bod Tibetan|br bre bre Breton|bs bos bos Bosnian|ca cat cat Catalan
cs cze ces Czech|cy wel cym Welsh|da dan dan Danish|de ger deu German|el gre ell Greek
en eng eng English|es spa spa Spanish|et est est Estonian|eu baq eus Basque|fa per fas Persian
fi fin fin Finnish|fo fao fao Faroese|fr fre fra French|gl glg glg Galician|gu guj guj Gujarati
ha hau hau Hausa|haw haw haw Hawaiian|he heb heb Hebrew|hi hin hin Hindi|hr hrv hrv Croatian
ht hat hat Haitian|hu hun hun Hungarian|hy arm hye Armenian|id ind ind Indonesian
is ice isl Icelandic|it ita ita Italian|ja jpn jpn Japanese|jv jav jav Javanese
ka geo kat Georgian|kk kaz kaz Kazakh|km khm khm Khmer|kn kan kan Kannada|ko kor kor Korean
la lat lat Latin|lb ltz ltz Luxembourgish|ln lin lin Lingala|lo lao lao Lao
lt lit lit Lithuanian|lv lav lav Latvian|mg mlg mlg Malagasy|mi mao mri Maori
mk mac mkd Macedonian|ml mal mal Malayalam|mn mon mon Mongolian|mr mar mar Marathi
ms may msa Malay|mt mlt mlt Maltese|my bur mya Burmese|ne nep nep Nepali|nl dut nld Dutch
nn nno nno Nynorsk|no nor nor Norwegian|oc oci oci Occitan|pa pan pan Punjabi|pl pol pol Polish
ps pus pus Pashto|pt por por Portuguese|ro rum ron Romanian|ru rus rus Russian
sa san san Sanskrit|sd snd snd Sindhi|si sin sin Sinhala|sk slo slk Slovak|sl slv slv Slovenian
sn sna sna Shona|so som som Somali|sq alb sqi Albanian|sr srp srp Serbian|su sun sun Sundanese
sv swe swe Swedish|sw swa swa Swahili|ta tam tam Tamil|te tel tel Telugu|tg tgk tgk Tajik
th tha tha Thai|tk tuk tuk Turkmen|tl tgl tgl Tagalog|tr tur tur Turkish|tt tat tat Tatar
uk ukr ukr Ukrainian|ur urd urd Urdu|uz uzb uzb Uzbek|vi vie vie Vietnamese|yi yid yid Yiddish
yo yor yor Yoruba|yue yue yue Cantonese|zh chi zho Chinese
"""
# Other spellings met in file names and stream tags, each → the ISO 639-1 code above.
_ALIASES = {
    "jw": "jv", "iw": "he", "in": "id", "ji": "yi", "nb": "no", "nob": "no", "fil": "tl",
    "filipino": "tl", "farsi": "fa", "flemish": "nl", "castilian": "es", "valencian": "ca",
    "moldavian": "ro", "panjabi": "pa", "sinhalese": "si", "pushto": "ps", "myanmar": "my",
    "haitian creole": "ht", "letzeburgesch": "lb", "norwegian bokmal": "no",
    "norwegian nynorsk": "nn", "cmn": "zh", "mandarin": "zh", "brazilian": "pt",
}


@dataclass(frozen=True)
class Language:
    iso1: str
    iso2b: str
    iso2t: str
    name: str


def _parse_table() -> dict[str, Language]:
    languages = {}
    for entry in _TABLE.replace("\n", "|").split("|"):
        if entry.strip():
            iso1, iso2b, iso2t, name = entry.split(maxsplit=3)
            languages[iso1] = Language(iso1, iso2b, iso2t, name)
    return languages


LANGUAGES = _parse_table()
_LOOKUP: dict[str, str] = {
    **{key: lang.iso1 for lang in LANGUAGES.values()
       for key in (lang.iso1, lang.iso2b, lang.iso2t, lang.name.lower())},
    **_ALIASES,
}


def normalize(tag: str | None) -> str | None:
    """The ISO 639-1 code (Whisper's, "jv" for Javanese) a language tag stands for; None for an
    unknown or undetermined one ("und", "zxx", ""). Region and script suffixes are dropped
    (`pt-BR`, `zh_Hans`, `en-US`); case does not matter."""
    if not tag:
        return None
    key = tag.strip().lower().replace("_", "-")
    found = _LOOKUP.get(key)
    if found is None and "-" in key:
        found = _LOOKUP.get(key.split("-", 1)[0])
    return found


def whisper_code(iso1: str) -> str:
    """The code Whisper takes for a language (it says "jw" for Javanese)."""
    return "jw" if iso1 == "jv" else iso1


def label(code: str, style: str = "iso639-1") -> str:
    """How a language is written in a subtitle's name; a code the table does not know (the
    pipeline's "und") is written as it is."""
    iso1 = normalize(code)
    lang = LANGUAGES.get(iso1 or "")
    if lang is None:
        return code
    if style == "iso639-2b":
        return lang.iso2b
    if style == "name":
        return lang.name
    return lang.iso1


@dataclass(frozen=True)
class Naming:
    """What stands for `{lang}` in `output.name_template`: the language in the configured
    style, with the tag before it and the flags after it (`generated.en.sdh.forced`)."""

    style: str = "iso639-1"
    tag: str = ""
    sdh: bool = False
    forced: bool = False

    def lang_part(self, code: str) -> str:
        parts = [self.tag] if self.tag else []
        parts.append(label(code, self.style))
        if self.sdh:
            parts.append("sdh")
        if self.forced:
            parts.append("forced")
        return ".".join(parts)

    def room(self) -> int:
        """Bytes the longest `lang_part` takes (output names are cut to fit NAME_MAX)."""
        return _room(self)

    def lang_pattern(self) -> str:
        """A regex for any `lang_part` (to find our own subtitle before the language is
        known)."""
        if self.style == "name":
            lang = r"[A-Z][A-Za-z]+"
        else:
            lang = r"[a-z]{2,3}"
        parts = [re.escape(self.tag)] if self.tag else []
        parts.append(lang)
        parts += [flag for flag, on in (("sdh", self.sdh), ("forced", self.forced)) if on]
        return r"\.".join(parts)


@functools.lru_cache(maxsize=16)
def _room(naming: Naming) -> int:
    return max(len(naming.lang_part(code).encode("utf-8")) for code in LANGUAGES)


@dataclass(frozen=True)
class SubtitleName:
    """What a subtitle's name says about it."""

    language: str | None  # ISO 639-1, None when the name names none
    forced: bool
    sdh: bool


def parse_subtitle_name(media_stem: str, name: str) -> SubtitleName | None:
    """Read an external subtitle's name as the players do: None unless it belongs to the media
    (same stem, any case, then `.`, then a subtitle extension). The tokens between say the
    language (the last one that is a language wins, as in Jellyfin) and the flags."""
    base, dot, ext = name.rpartition(".")
    if not dot or ext.lower() not in SUBTITLE_EXTENSIONS:
        return None
    if base.lower() == media_stem.lower():
        return SubtitleName(None, False, False)
    if not base.lower().startswith(media_stem.lower() + "."):
        return None
    tokens = [t.lower() for t in base[len(media_stem) + 1:].split(".")]
    language, forced, sdh = None, False, False
    for token in tokens:
        if token in FORCED_FLAGS:
            forced = True
        elif token in SDH_FLAGS and (language is not None or token != "hi"):
            sdh = True  # "hi" after a language is the hearing-impaired flag, alone it is Hindi
        elif token not in OTHER_FLAGS:
            language = normalize(token) or language
    return SubtitleName(language, forced, sdh)
