"""Sentences the tests and benchmarks speak, and how they score what came back."""

from __future__ import annotations

import re
from pathlib import Path

from .media import build_speech, write_wav

SENTENCES = [
    "The weather is nice today and the sun is shining.",
    "Please open the window before you leave the room.",
    "My brother bought a new car last week.",
    "She likes to read books in the garden.",
]

# Distinct sentences for long files: repeated text would trip Whisper's compression-ratio
# fallback and test the sampler rather than the daemon.
LONG_SENTENCES = [
    "The train to the city leaves from the second platform.",
    "Our neighbours painted their front door bright green.",
    "He forgot his umbrella at the office again.",
    "The children played football in the park until dark.",
    "A cup of hot tea is the best way to start the morning.",
    "The museum opens at ten and closes late on Fridays.",
    "She wrote a long letter to her grandmother in Spain.",
    "The old bridge over the river was closed for repairs.",
    "We planted tomatoes and beans behind the house.",
    "The teacher asked everyone to read the first chapter.",
    "Fresh bread from the bakery smells wonderful.",
    "The cat slept on the warm windowsill all afternoon.",
    "They drove along the coast and stopped for lunch.",
    "My phone battery always dies at the worst moment.",
    "The library has a quiet room for studying.",
    "Snow covered the mountains early this year.",
    "He fixed the broken chair with glue and a few nails.",
    "The concert was cancelled because of the storm.",
    "Please turn off the lights when you leave.",
    "The doctor said I should drink more water.",
]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate with the same normalisation on both sides (case, punctuation)."""
    import jiwer

    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()
    return float(jiwer.wer(norm(reference), norm(hypothesis) or "<empty>"))


def srt_text(path: Path) -> str:
    """The words of an SRT file, without cue numbers and times."""
    return " ".join(srt_lines(path))


def srt_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()
            if line and "-->" not in line and not line.isdigit()]


def long_speech_wav(path: Path, sentences: int = len(LONG_SENTENCES), gap: float = 1.2) -> Path:
    """A WAV of the first `sentences` long sentences: a file that takes a while to transcribe."""
    return write_wav(path, build_speech(LONG_SENTENCES[:sentences], gap=gap).samples)
