"""A quality corpus with known truth: espeak-ng speech in several voices and speeds, a run-on
passage, speech over a synthetic music bed, silence and music alone.

Used by the end-to-end quality test (a small slice) and by bench/quality.py (all of it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .media import SR, Speech, speak

VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3")
SPEEDS = (140, 175, 210)

STORIES = [
    ["The market opens early on Saturday mornings.",
     "Farmers bring apples, cheese and fresh eggs.",
     "By noon most of the stalls are empty.",
     "Some people come only for the coffee."],
    ["Our flight was delayed by three hours.",
     "We sat near the window and watched the planes.",
     "A child next to us fell asleep on his bag.",
     "When we finally boarded, everyone clapped."],
    ["The recipe needs two cups of flour and some butter.",
     "Mix everything slowly until the dough is smooth.",
     "Leave it to rest for an hour in a cool place.",
     "Then bake it until the top turns golden."],
    ["Last winter the lake froze for the first time in years.",
     "People skated on it every evening after work.",
     "The ice made strange sounds in the cold air.",
     "In March it melted almost overnight."],
]

RUN_ON = [
    "So we packed the car and drove north along the coast road,",
    "and every few miles my sister wanted to stop and take pictures of the sea,",
    "which was grey and wild and full of white horses that morning,",
    "and by the time we reached the little harbour town it was nearly dark,",
    "the shops were closing, the fishing boats were coming in,",
    "and the only place still serving food was a tiny cafe near the church,",
    "where an old man told us stories about storms and shipwrecks,",
    "until the owner turned off the lights and sent us all home.",
]


@dataclass(frozen=True)
class Item:
    name: str
    kind: str  # speech | run_on | music_bed | silence | music
    speech: Speech

    @property
    def has_speech(self) -> bool:
        return self.kind in ("speech", "run_on", "music_bed")

    @property
    def sentence_onsets(self) -> tuple[float, ...]:
        """Onsets that begin a sentence (the run-on passage is one sentence of clauses)."""
        return self.speech.onsets[:1] if self.kind == "run_on" else self.speech.onsets


def compose(sentences: list[str], voice: str, speed: int, gaps: list[float],
            lead: float = 0.9, tail: float = 1.0) -> Speech:
    parts, onsets, ends, t = [np.zeros(int(lead * SR), np.float32)], [], [], lead
    for i, sentence in enumerate(sentences):
        clip = speak(sentence, voice, speed)
        onsets.append(t)
        parts.append(clip)
        t += len(clip) / SR
        ends.append(t)
        pause = tail if i == len(sentences) - 1 else gaps[i % len(gaps)]
        parts.append(np.zeros(int(pause * SR), np.float32))
        t += pause
    return Speech(np.concatenate(parts), SR, tuple(sentences), tuple(onsets), tuple(ends))


def music(seconds: float, seed: int = 7) -> np.ndarray:
    """A synthetic bed: chords of harmonics, a kick every half second, hi-hat noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t)
    chords = [(220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (261.6, 329.6, 392.0),
              (196.0, 246.9, 293.7)]
    for i in range(int(np.ceil(seconds / 2))):
        seg = (t >= 2 * i) & (t < 2 * i + 2)
        env = np.exp(-1.2 * (t[seg] - 2 * i))
        for f in chords[i % len(chords)]:
            for h, amp in ((1, 1.0), (2, 0.4), (3, 0.2)):
                out[seg] += amp * env * np.sin(2 * np.pi * f * h * t[seg])
    for beat in np.arange(0, seconds, 0.5):
        n = int(beat * SR)
        k = np.arange(min(int(0.15 * SR), len(out) - n))
        out[n:n + len(k)] += 2.0 * np.exp(-k / (0.03 * SR)) * np.sin(2 * np.pi * 60 * k / SR)
        h = min(int(0.03 * SR), len(out) - n - int(0.25 * SR))
        if h > 0:
            m = n + int(0.25 * SR)
            out[m:m + h] += 0.3 * rng.standard_normal(h)
    return (out / np.max(np.abs(out))).astype(np.float32)


def corpus(full: bool = True) -> list[Item]:
    """The whole corpus (bench) or a small slice with every kind in it (the test)."""
    items: list[Item] = []
    voices = VOICES if full else VOICES[:2]
    speeds = SPEEDS if full else (175,)
    n = 0
    for voice in voices:
        for speed in speeds:
            story = STORIES[n % len(STORIES)]
            gaps = [0.6, 1.3, 0.9][n % 3:] + [0.6, 1.3, 0.9][:n % 3]
            items.append(Item(f"{voice}-{speed}", "speech", compose(story, voice, speed, gaps)))
            n += 1
    items.append(Item("run-on", "run_on", compose(RUN_ON, "en-us", 175, [0.12], lead=0.5)))
    bed = compose(STORIES[1], "en-gb", 165, [1.0])
    bed_music = music(bed.duration)
    mixed = np.clip(bed.samples + 0.12 * bed_music, -1, 1).astype(np.float32)
    items.append(Item("music-bed", "music_bed",
                      Speech(mixed, SR, bed.sentences, bed.onsets, bed.ends)))
    items.append(Item("silence", "silence",
                      Speech(np.zeros(SR * 15, np.float32), SR, (), ())))
    items.append(Item("music-only", "music",
                      Speech(0.5 * music(20.0, seed=3), SR, (), ())))
    return items


# ---------------------------------------------------------------------------- scoring

@dataclass(frozen=True)
class Shown:
    """One subtitle as a viewer sees it (a subwatch cue, or a bare faster-whisper segment)."""

    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def onset_errors(shown: list[Shown], item: Item) -> list[float]:
    """For each true sentence onset, the distance to the nearest subtitle start."""
    starts = [s.start for s in shown]
    if not starts:
        return [float("inf")] * len(item.sentence_onsets)
    return [min(abs(s - onset) for s in starts) for onset in item.sentence_onsets]


def within_style(s: Shown, max_chars: int = 42, max_lines: int = 2, min_s: float = 0.8,
                 max_s: float = 7.0, max_cps: float = 20.0) -> bool:
    length = s.end - s.start
    return (1 <= len(s.lines) <= max_lines and all(len(line) <= max_chars for line in s.lines)
            and min_s - 1e-6 <= length <= max_s + 1e-6 and len(s.text) / length <= max_cps + 1e-6)


def phantoms(shown: list[Shown], item: Item) -> int:
    """Subtitles with no true speech under them at all."""
    speech = list(zip(item.speech.onsets, item.speech.ends, strict=True))
    return sum(1 for s in shown if s.text.strip() and not any(
        min(s.end, b) > max(s.start, a) for a, b in speech))
