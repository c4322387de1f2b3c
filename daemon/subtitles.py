"""Words with timestamps → subtitle cues within the style limits → SRT/VTT/TXT/JSON text.

Pure functions only (no I/O, no clocks), so the rules people see on screen are table-tested.
Cues are built from word times, never from Whisper's coarse segment times: a cue breaks at
sentence ends and pauses, never holds more than `max_lines` × `max_line_chars`, lasts between
`min_cue_seconds` and `max_cue_seconds`, and is slowed to `max_cps` by using free time around it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .domain import Cue, Segment, Transcript, Word

SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")
CLAUSE_END = (",", ";", ":", "—", "–", "，", "、", "；", "：")
CLOSERS = "\"'”’)]»"
PAUSE_BREAK_SECONDS = 0.6  # a silence this long between words starts a new cue
MAX_DELAY_SECONDS = 0.3  # a cue may appear this much after its voice, to give its neighbour time

# (start, end) of a cue from its words; the pipeline passes one that snaps to the voice.
EdgesFn = Callable[[Sequence[Word]], "tuple[float, float]"]


# Whether the audio shows a pause between two words (the pipeline asks the VAD).
PauseFn = Callable[[Word, Word], bool]


def word_edges(words: Sequence[Word]) -> tuple[float, float]:
    return words[0].start, max(words[-1].end, words[0].start)


def no_pause(previous: Word, word: Word) -> bool:
    return False


@dataclass(frozen=True)
class StyleLimits:
    max_line_chars: int = 42
    max_lines: int = 2
    min_cue_seconds: float = 0.8
    max_cue_seconds: float = 7.0
    max_cps: float = 20.0
    min_gap_seconds: float = 0.083  # two frames at 24 fps, so players never merge two cues

    @property
    def max_chars(self) -> int:
        return self.max_line_chars * self.max_lines


# ---------------------------------------------------------------------------- text helpers

def _stripped(word: Word) -> str:
    return word.text.strip().rstrip(CLOSERS)


def ends_sentence(word: Word) -> bool:
    return _stripped(word).endswith(SENTENCE_END)


def ends_clause(word: Word) -> bool:
    return _stripped(word).endswith(CLAUSE_END)


def join_words(words: Sequence[Word]) -> str:
    """Whisper words carry their own leading space (none in CJK), so concatenation is right."""
    return "".join(w.text for w in words).strip()


def wrap(words: Sequence[Word], limits: StyleLimits) -> tuple[str, ...] | None:
    """Balanced lines for these words, or None when they cannot fit the limits.

    The narrowest width that still fits in `max_lines` greedy lines gives lines of similar
    length, which avoids a lonely last word on the second line whenever that is possible.
    """
    text = join_words(words)
    if len(text) <= limits.max_line_chars:
        return (text,) if text else None
    tokens = [w.text for w in words]
    lower = math.ceil(len(text) / limits.max_lines)
    for width in range(lower, limits.max_line_chars + 1):
        lines = _greedy_lines(tokens, width)
        if lines is not None and len(lines) <= limits.max_lines:
            return tuple(lines)
    return None


def _greedy_lines(tokens: Sequence[str], width: int) -> list[str] | None:
    lines: list[str] = []
    current = ""
    for token in tokens:
        candidate = (current + token) if current else token.lstrip()
        if len(candidate.strip()) <= width:
            current = candidate
            continue
        if not current:
            return None  # one token wider than the line
        lines.append(current.strip())
        current = token.lstrip()
        if len(current) > width:
            return None
    if current.strip():
        lines.append(current.strip())
    return lines


def _hard_wrap(words: Sequence[Word], limits: StyleLimits) -> tuple[str, ...]:
    """Last resort for a single token longer than a line (a URL, a run of CJK characters)."""
    text = join_words(words)
    n = limits.max_line_chars
    return tuple(text[i:i + n] for i in range(0, len(text), n))[: limits.max_lines]


# ---------------------------------------------------------------------------- grouping

def flatten_words(segments: Iterable[Segment]) -> list[Word]:
    words = [w for seg in segments for w in seg.words if w.text.strip()]
    return sorted(words, key=lambda w: (w.start, w.end))


def group_words(words: Sequence[Word], limits: StyleLimits,
                pause: PauseFn = no_pause) -> list[list[Word]]:
    """Split a word stream into cue-sized groups at the most natural points."""
    groups: list[list[Word]] = []
    current: list[Word] = []
    for word in words:
        if current and (_hard_break(current[-1], word) or pause(current[-1], word)):
            groups.append(current)
            current = []
        candidate = current + [word]
        if current and not _fits(candidate, limits):
            keep = _best_split(current, limits)
            groups.append(current[:keep])
            current = current[keep:]
            while current and not _fits(current + [word], limits):
                groups.append(current)  # the tail alone is still too long: close it
                current = []
        current.append(word)
    if current:
        groups.append(current)
    return groups


def _hard_break(previous: Word, word: Word) -> bool:
    return ends_sentence(previous) or (word.start - previous.end) >= PAUSE_BREAK_SECONDS


def _fits(words: Sequence[Word], limits: StyleLimits) -> bool:
    if words[-1].end - words[0].start > limits.max_cue_seconds:
        return False
    return wrap(words, limits) is not None


def _best_split(words: Sequence[Word], limits: StyleLimits) -> int:
    """Where to end a full cue: after a clause or a pause, late rather than early."""
    best, best_score = len(words), -math.inf
    for k in range(1, len(words) + 1):
        score = k / len(words)  # prefer fuller cues
        if k < len(words):
            gap = words[k].start - words[k - 1].end
            score += min(gap, 0.5) * 4
            if ends_clause(words[k - 1]):
                score += 1.0
            if len(words) - k == 1:
                score -= 0.5  # a single word carried over reads badly
        if score > best_score:
            best, best_score = k, score
    return best


def _merge_short(groups: list[list[Word]], limits: StyleLimits) -> list[list[Word]]:
    """Join a cue too short to read with its neighbour when the pair still fits."""
    merged: list[list[Word]] = []
    for group in groups:
        if merged and _too_short(merged[-1], group, limits) and _fits(merged[-1] + group, limits):
            merged[-1] = merged[-1] + group
        else:
            merged.append(group)
    return merged


def _too_short(group: list[Word], following: list[Word], limits: StyleLimits) -> bool:
    room = following[0].start - limits.min_gap_seconds - group[0].start
    needed = max(limits.min_cue_seconds, len(join_words(group)) / limits.max_cps)
    return room < needed


# ---------------------------------------------------------------------------- timing

def build_cues(segments: Iterable[Segment], limits: StyleLimits,
               duration: float | None = None, edges: EdgesFn = word_edges,
               pause: PauseFn = no_pause) -> list[Cue]:
    """The whole cue builder: words → groups → timed, wrapped cues."""
    stream = CueStream(limits, duration, edges, pause)
    return stream.feed(flatten_words(segments)) + stream.flush()


class CueStream:
    """Cues as words arrive, emitting only those that no later word can change.

    Grouping is greedy and merging looks one group ahead, so every group but the last two is
    final, and the one before them is known for certain (its neighbour's timing depends on
    it). The last timed cue is held back until the next one is timed, because a dense cue may
    borrow reading time from it. Streaming this way gives exactly the cues a whole-file build
    gives, so the live stream and the written file agree.
    """

    def __init__(self, limits: StyleLimits, duration: float | None = None,
                 edges: EdgesFn = word_edges, pause: PauseFn = no_pause) -> None:
        self._limits = limits
        self._duration = duration
        self._edges = edges
        self._pause = pause
        self._pending: list[Word] = []
        self._held: Cue | None = None

    def feed(self, words: Iterable[Word]) -> list[Cue]:
        self._pending.extend(w for w in words if w.text.strip())
        groups = _merge_short(group_words(self._pending, self._limits, self._pause),
                              self._limits)
        if len(groups) <= 3:
            return []
        final, keep = groups[:-3], groups[-3:]
        self._pending = [w for g in keep for w in g]
        return self._emit(final, following=self._cue(keep[0]))

    def flush(self) -> list[Cue]:
        groups = _merge_short(group_words(self._pending, self._limits, self._pause),
                              self._limits)
        self._pending = []
        out = self._emit(groups, following=None)
        if self._held is not None:
            out.append(self._held)
            self._held = None
        return out

    def _cue(self, group: list[Word]) -> Cue:
        return Cue(*self._edges(group), lines=_lines(group, self._limits), words=tuple(group))

    def _emit(self, groups: list[list[Word]], following: Cue | None) -> list[Cue]:
        cues = [self._cue(g) for g in groups]
        if not cues:
            return []
        timed = _retime(cues, self._limits, self._duration, self._held, following)
        self._held = timed[-1]
        return timed[:-1]


def _lines(words: Sequence[Word], limits: StyleLimits) -> tuple[str, ...]:
    return wrap(words, limits) or _hard_wrap(words, limits)


def _needed(cue: Cue, limits: StyleLimits) -> float:
    """Time to read a cue: at least the minimum, enough for the cps limit, at most the maximum."""
    return min(limits.max_cue_seconds, max(limits.min_cue_seconds, len(cue.text) / limits.max_cps))


def _retime(cues: list[Cue], limits: StyleLimits, duration: float | None,
            held: Cue | None = None, following: Cue | None = None) -> list[Cue]:
    """Give each cue enough time to be read: free time after it first (up to a small delay of
    the next cue, when that one has time to spare), then before it, then time the cue before
    can spare; in a run of dense cues with no time to spare anywhere, the next cue starts a
    little late (at most `MAX_DELAY_SECONDS` after its voice, so no drift builds up).
    Returns `held` (possibly shortened) followed by the cues."""
    end_of_media = duration if duration is not None else math.inf
    out: list[Cue] = [held] if held is not None else []
    upcoming = cues + ([following] if following is not None else [])
    for i, cue in enumerate(cues):
        nxt = upcoming[i + 1] if i + 1 < len(upcoming) else None
        out.append(_reading_time(cue, nxt, out, limits, end_of_media))
    return out


def _reading_time(cue: Cue, nxt: Cue | None, out: list[Cue], limits: StyleLimits,
                  end_of_media: float) -> Cue:
    """`cue` retimed after the cues in `out` (the last of which it may shorten)."""
    gap = limits.min_gap_seconds
    next_start = math.inf
    if nxt is not None:  # a dense cue may also start the next one a little late
        spare = (nxt.end - nxt.start) - _needed(nxt, limits)
        next_start = nxt.start + min(MAX_DELAY_SECONDS, max(0.0, spare))
    latest_end = min(next_start - gap, end_of_media)
    earliest = max(out[-1].end + gap, 0.0) if out else 0.0
    start = max(cue.start, earliest)
    needed = _needed(cue, limits)
    end = max(cue.end, min(start + needed, latest_end))
    if end - start < needed:
        start = max(earliest, min(start, end - needed))
    if end - start < needed and out:
        prev = out[-1]
        spare = (prev.end - prev.start) - _needed(prev, limits)
        take = min(max(spare, 0.0), needed - (end - start))
        if take > 0:
            out[-1] = Cue(prev.start, round(prev.end - take, 3), prev.lines, prev.words)
            start = max(out[-1].end + gap, end - needed)
    if end - start < needed and nxt is not None:
        end = max(end, min(start + needed, nxt.start + MAX_DELAY_SECONDS - gap, end_of_media))
    end = min(end, start + limits.max_cue_seconds, end_of_media)
    return Cue(start=round(start, 3), end=round(max(end, start), 3), lines=cue.lines,
               words=cue.words)


# ---------------------------------------------------------------------------- formats

def _clock(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [f"{i}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n" + "\n".join(c.lines)
              for i, c in enumerate(cues, 1)]
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def vtt_text(line: str) -> str:
    """A cue line as WebVTT text: `&`, `<` and `>` are markup there (entities, tags and the
    `-->` arrow), so they are escaped; SRT has no escapes and keeps the plain text."""
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = [f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n"
              + "\n".join(vtt_text(line) for line in c.lines) for c in cues]
    return "WEBVTT\n\n" + "\n\n".join(blocks) + ("\n" if blocks else "")


def to_txt(cues: Sequence[Cue]) -> str:
    return "".join(c.text + "\n" for c in cues)


def to_json(transcript: Transcript) -> str:
    def word(w: Word) -> dict[str, object]:
        return {"word": w.text, "start": w.start, "end": w.end, "probability": w.probability}
    data = {
        "language": transcript.language,
        "duration": transcript.duration,
        "cues": [{"start": c.start, "end": c.end, "text": c.text, "lines": list(c.lines)}
                 for c in transcript.cues],
        "segments": [{"start": s.start, "end": s.end, "text": s.text,
                      "words": [word(w) for w in s.words]} for s in transcript.segments],
    }
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def render(fmt: str, transcript: Transcript) -> str:
    """The text of one output format."""
    if fmt == "srt":
        return to_srt(transcript.cues)
    if fmt == "vtt":
        return to_vtt(transcript.cues)
    if fmt == "txt":
        return to_txt(transcript.cues)
    if fmt == "json":
        return to_json(transcript)
    raise ValueError(f"unknown output format {fmt!r}")
