"""Noisy and reverberant versions of the quality corpus, made with numpy and espeak-ng.

Real recordings are noisier than espeak-ng in a quiet room: films have music and crowds under
the dialogue, podcasts and phone video have hiss and a room. Each condition here keeps the
clean item's truth (sentences, onsets): noise is added under the speech at a stated
signal-to-noise ratio (speech power measured where the speech is), reverb convolves the speech
with a synthetic room response (onsets stay where they were; the tails grow).

Everything is seeded: the same corpus on every run, so a figure can be compared across runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .corpus import Item, music
from .media import SR, Speech, speak

# Sentences for the babble only, kept apart from the corpus's own so no babble word can be
# mistaken for a word of the truth.
BABBLE_LINES = (
    "Could you pass me the salt and the pepper please.",
    "I told him twice that the meeting was on Tuesday.",
    "The bus was late again this morning, as always.",
    "She bought a new bicycle with a red basket.",
    "We need more chairs for the people at the back.",
    "Nobody knew where the keys had gone after lunch.",
)
BABBLE_VOICES = ("en-us", "en-gb", "en-us+f3", "en-029", "en-gb-scotland", "en-us+m3")


@dataclass(frozen=True)
class Condition:
    """One way of spoiling the clean speech."""

    name: str
    noise: str | None  # pink | babble | music | None
    snr_db: float = 0.0
    reverb_seconds: float = 0.0  # RT60 of the room, 0 = dry


CONDITIONS = (
    Condition("pink20", "pink", 20.0),
    Condition("pink10", "pink", 10.0),
    Condition("babble12", "babble", 12.0),
    Condition("music12", "music", 12.0),
    Condition("reverb-pink20", "pink", 20.0, reverb_seconds=0.6),
)


def pink(n: int, seed: int) -> np.ndarray:
    """Pink (1/f power) noise: white noise shaped in the frequency domain, unit RMS."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    out = np.fft.irfft(spectrum / np.sqrt(f), n)
    return (out / np.sqrt(np.mean(out ** 2))).astype(np.float32)


def babble(n: int, seed: int, talkers: int = 5) -> np.ndarray:
    """Several espeak-ng voices talking at once, each looped from its own random start."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, np.float32)
    for k in range(talkers):
        lines = [speak(BABBLE_LINES[(k + j) % len(BABBLE_LINES)],
                       BABBLE_VOICES[k % len(BABBLE_VOICES)], 150 + 15 * k) for j in range(3)]
        voice = np.concatenate([np.concatenate([c, np.zeros(int(0.2 * SR), np.float32)])
                                for c in lines])
        voice = np.tile(voice, n // len(voice) + 2)
        start = int(rng.integers(0, len(voice) - n))
        out += voice[start:start + n]
    return (out / np.sqrt(np.mean(out ** 2))).astype(np.float32)


def room(seconds: float, seed: int) -> np.ndarray:
    """A room's impulse response: the direct sound, then exponentially decaying diffuse noise
    that falls 60 dB in `seconds`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / seconds) * 0.25
    tail[: int(0.003 * SR)] = 0.0  # the first reflection comes a few ms after the direct sound
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverberate(samples: np.ndarray, seconds: float, seed: int) -> np.ndarray:
    """`samples` heard in a room (same length, same loudness as the dry speech)."""
    h = room(seconds, seed)
    n = len(samples) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(h, size), size)[:len(samples)]
    dry_rms = np.sqrt(np.mean(samples ** 2)) or 1.0
    wet_rms = np.sqrt(np.mean(wet ** 2)) or 1.0
    return (wet * dry_rms / wet_rms).astype(np.float32)


def speech_power(speech: Speech) -> float:
    """Mean power of the samples where someone speaks (the pauses do not dilute it)."""
    spoken = [speech.samples[int(a * SR):int(b * SR)] for a, b in zip(speech.onsets,
                                                                     speech.ends, strict=True)]
    joined = np.concatenate(spoken) if spoken else speech.samples
    return float(np.mean(joined.astype(np.float64) ** 2))


def noise_of(kind: str, n: int, seed: int) -> np.ndarray:
    if kind == "pink":
        return pink(n, seed)
    if kind == "babble":
        return babble(n, seed)
    if kind == "music":
        bed = music(n / SR + 1.0, seed=seed)[:n]
        return (bed / np.sqrt(np.mean(bed ** 2))).astype(np.float32)
    raise ValueError(f"unknown noise {kind!r}")


def spoil(speech: Speech, condition: Condition, seed: int) -> Speech:
    """The same speech, same truth, under `condition`."""
    samples = speech.samples
    if condition.reverb_seconds:
        samples = reverberate(samples, condition.reverb_seconds, seed)
    if condition.noise:
        noise = noise_of(condition.noise, len(samples), seed)
        gain = np.sqrt(speech_power(speech) / 10 ** (condition.snr_db / 10))
        samples = samples + gain * noise
    peak = float(np.max(np.abs(samples))) or 1.0
    samples = (samples * min(1.0, 0.95 / peak)).astype(np.float32)
    return Speech(samples, speech.sample_rate, speech.sentences, speech.onsets, speech.ends)


def noisy_corpus(items: list[Item], conditions: tuple[Condition, ...] = CONDITIONS) -> list[Item]:
    """Every speech item of `items` under every condition, plus noise alone (nobody speaks:
    nothing may be written), one per kind of noise but babble (which is speech)."""
    out: list[Item] = []
    for n, item in enumerate(i for i in items if i.kind in ("speech", "run_on")):
        for k, condition in enumerate(conditions):
            out.append(Item(f"{item.name}~{condition.name}", item.kind,
                            spoil(item.speech, condition, seed=100 * n + k)))
    for kind in sorted({c.noise for c in conditions if c.noise} - {"babble"}):
        quiet = np.zeros(SR * 12, np.float32)
        alone = 0.05 * noise_of(kind, len(quiet), seed=999)
        out.append(Item(f"{kind}-alone", "silence",
                        Speech(alone.astype(np.float32), SR, (), ())))
    return out
