"""The music/noise gate: which speech spans are worth running through Demucs before Whisper.

Separating vocals costs far more than transcribing them, and it only pays where something sits
under the speech: a music bed makes Whisper hallucinate lyrics and drop words, loud noise masks
them. Clean speech gains nothing and can lose a little to separation artefacts. So each VAD span
gets a verdict, a score and a one-line reason a person can check by ear.

The evidence is the audio *around* each span. Clean speech has near-silent gaps between
utterances; a music bed or a noise floor carries on through them. So the gate measures the gaps
next to a span (up to `context_s` each side, never another span's audio):
- level: the gaps' power relative to the span's active speech level, in dB;
- tonality: how much of the gaps' spectrum (its median over time) sits in narrow peaks. Music
  holds notes, whose partials stand out; noise of any colour has a smooth slope. Music and
  noise have their own thresholds (GateOptions says why), and the reason names which it was.
A span with no usable gap near it (one span over a whole file, spans that touch) is measured on
itself instead: each frequency's quiet moments (a low quantile over time, as in minimum-statistics
noise estimation) form the background spectrum, since speech comes and goes within a band while
a bed stays. That needs the span to hold some pauses (VAD padding is enough).

Pure numpy and per span: a span is read once, a gap by the few spans within `context_s` of it,
and a very long span's spectra are thinned to `max_frames`; so the work is linear in the audio
and no whole-file spectrogram is built (about 40 ms per audio minute).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..domain import Audio, SpanVerdict, SpeechSpan

BLOCK_S = 0.02  # power is measured on 20 ms blocks
FRAME_S = 0.064  # spectral frames of ~64 ms (1024 samples at 16 kHz): 16 Hz bins split partials
TONAL_BAND = (100.0, 4000.0)  # where notes live; below is hum and kick, above is hiss
PEAK_DB = 6.0  # a bin this far above its neighbourhood's valleys is part of a peak
# The valleys: the 20th percentile of the bins within ~240 Hz each side. Not the median: a chord
# packs so many partials (and their window lobes) into the low hundreds of hertz that half the
# bins there are peaks.
VALLEY_PERCENTILE = 20.0
VALLEY_HALF_WIDTH_HZ = 240.0
SILENT_SPEECH = 1e-10  # mean square below this (-100 dBFS): the span holds no signal at all
TINY = 1e-20  # keeps logarithms finite on digital silence


@dataclass(frozen=True)
class GateOptions:
    """Thresholds of the gate; levels are background power relative to active speech, in dB.

    Measured on espeak-ng speech (4 voices) over a synthetic chord-and-beat bed and pink noise
    (tests/test_gate.py makes the same signals): the gaps read a bed 0-8 dB below its mix level
    (median 2; its chords decay, so it depends on where the gaps fall) and pink noise 1-3 dB
    below. tiny.en's WER on those mixes: noise 0.13 clean, 0.16 at -20 dB, 0.28 at -12, 0.46 at
    -6; the synthetic bed barely moves it (0.14 at -12 dB, 0.20 at 0 dB).
    """

    # Music at or above this level is separated: the -20 dB bed is, the -30 dB one is not unless
    # a BGM tag tips it, -40 dB never. Not set by the WER above (a bed of bare chords does not
    # trouble Whisper much): real beds with vocals and dense mixes are what make it hallucinate
    # lyrics and drop words, so this errs towards separating. Retune on real material.
    music_db: float = -26.0
    # Noise (not tonal) at or above this level is separated: where tiny.en's WER starts to
    # climb. Demucs is a music separator and removes noise less well than music.
    noise_db: float = -18.0
    # The score is a logistic of (level - threshold) / width_db: 0.5 at the threshold.
    width_db: float = 3.0
    # A span a draft engine tagged as background music counts its background this much louder:
    # a tag tips borderline spans, but cannot make a clean span (silent gaps) separate.
    bgm_boost_db: float = 8.0
    # Share of the band's background power in spectral peaks from which it is music. Measured:
    # the synthetic bed 0.98-1.0, pink noise 0.0-0.05; low, as real mixes are less peaky.
    tonal: float = 0.3
    # Background below this level is called clean (digital silence reads about -100 dB).
    silent_db: float = -60.0
    # How far each side of a span to look for gaps, seconds.
    context_s: float = 3.0
    # Less gap than this in the context and the span is measured on itself, seconds.
    min_gap_s: float = 0.25
    # Share of the gap blocks that may be loud one-offs (a cough, a door) and are left out.
    outlier_share: float = 0.1
    # In-span fallback: each bin's background is this quantile of its power over time.
    floor_quantile: float = 0.15
    # Spectral frames analysed per span at most, so a very long span costs no more than this.
    max_frames: int = 1024


@dataclass(frozen=True)
class Background:
    """What sits under one span: its level against the speech, and whether it is tonal."""

    level_db: float
    tonality: float
    in_gaps: bool  # False: measured inside the span (no usable gap near it)


class AudioSlices:
    """Audio as the gate reads it: `x[a:b]` and `len(x)`, each slice read when asked (a spooled
    film is never loaded whole to judge its spans)."""

    ndim = 1

    def __init__(self, audio: Audio) -> None:
        self._audio = audio

    def __len__(self) -> int:
        return self._audio.length

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self._audio.length)
        return self._audio.read(start, stop)


def judge(samples: np.ndarray | AudioSlices, sample_rate: int, spans: Sequence[SpeechSpan],
          bgm: Sequence[bool] | None = None, options: GateOptions = GateOptions(),
          focus: tuple[int, int] | None = None) -> tuple[SpanVerdict, ...]:
    """One verdict per span, in order, for mono `samples` (only spans[a:b] with `focus`:
    the gaps still come from every span, so speech next to the group is never "background").

    `bgm[i]` True says a draft engine (SenseVoice) heard background music under span i; the
    gate then counts that span's measured background `options.bgm_boost_db` louder before the
    threshold, so a tag tips a borderline bed but never makes a clean span separate.
    """
    if bgm is not None and len(bgm) != len(spans):
        raise ValueError(f"{len(bgm)} BGM tags for {len(spans)} spans")
    x = samples if isinstance(samples, AudioSlices) else np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"the gate takes mono samples, not an array of {x.ndim} dimensions")
    gaps = Gaps.between(spans, len(x))
    first, last = focus or (0, len(spans))
    return tuple(
        judge_span(x, sample_rate, spans[i], gaps, bool(bgm[i]) if bgm is not None else False,
                   options)
        for i in range(first, last))


class Gaps:
    """The stretches of the file that no span covers, sorted, for lookups near one span."""

    def __init__(self, pieces: list[tuple[int, int]]) -> None:
        self.pieces = pieces
        self.ends = [end for _, end in pieces]

    @classmethod
    def between(cls, spans: Sequence[SpeechSpan], length: int) -> Gaps:
        pieces, cursor = [], 0
        for start, end in sorted((max(0, s.start), min(length, s.end)) for s in spans):
            if start > cursor:
                pieces.append((cursor, start))
            cursor = max(cursor, end)
        if cursor < length:
            pieces.append((cursor, length))
        return cls(pieces)

    def near(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of the gaps inside [lo, hi)."""
        found = []
        for start, end in self.pieces[bisect.bisect_right(self.ends, lo):]:
            if start >= hi:
                break
            found.append((max(start, lo), min(end, hi)))
        return found


def judge_span(x: np.ndarray | AudioSlices, sample_rate: int, span: SpeechSpan, gaps: Gaps,
               tagged: bool, options: GateOptions) -> SpanVerdict:
    start, end = max(0, span.start), min(len(x), span.end)
    t0, t1 = span.start / sample_rate, span.end / sample_rate
    speech = x[start:max(start, end)]
    powers = block_power(speech, max(1, int(BLOCK_S * sample_rate)))
    if len(powers) == 0 or float(np.mean(powers)) < SILENT_SPEECH:
        return SpanVerdict(t0, t1, False, 0.0, "silent span: nothing to separate")
    reach = int(options.context_s * sample_rate)
    near = gaps.near(start - reach, end + reach)
    background = (measure_gaps(x, sample_rate, active_power(powers), near, options)
                  or measure_inside(speech, sample_rate, options))
    return decide(t0, t1, background, tagged, options)


def decide(t0: float, t1: float, background: Background, tagged: bool,
           options: GateOptions) -> SpanVerdict:
    """Threshold by kind (music or noise), shifted by a BGM tag; the score is a logistic."""
    music = background.tonality >= options.tonal
    threshold = options.music_db if music else options.noise_db
    if background.level_db < options.silent_db:
        return SpanVerdict(t0, t1, False, 0.0,
                           reason(background, music, False, threshold, tagged, options))
    level = background.level_db + (options.bgm_boost_db if tagged else 0.0)
    score = 1.0 / (1.0 + math.exp(-(level - threshold) / options.width_db))
    separate = level >= threshold
    return SpanVerdict(t0, t1, separate, round(score, 4),
                       reason(background, music, separate, threshold, tagged, options))


def reason(background: Background, music: bool, separate: bool, threshold: float, tagged: bool,
           options: GateOptions) -> str:
    where = "gaps not silent" if background.in_gaps else "no gaps: measured in the span"
    tag = f", BGM tag +{options.bgm_boost_db:.0f} dB" if tagged else ""
    if background.level_db < options.silent_db:
        clean = ("gaps around speech are silent" if background.in_gaps
                 else "the span's pauses are silent")
        return f"clean: {clean}" + (" (BGM tag outweighed)" if tagged else "")
    kind, texture = ("music bed", "tonal") if music else ("noise", "not tonal")
    level = f"{background.level_db:.0f} dB"
    if separate:
        return f"{kind} at {level} under speech ({texture}, {where}{tag})"
    return f"faint {kind} at {level}, below {threshold:.0f} dB ({texture}, {where}{tag})"


def measure_gaps(x: np.ndarray | AudioSlices, sample_rate: int, speech_power: float,
                 near: list[tuple[int, int]], options: GateOptions) -> Background | None:
    """Background from the gaps near a span, or None where there is too little gap to judge."""
    if sum(end - start for start, end in near) < options.min_gap_s * sample_rate:
        return None
    block = max(1, int(BLOCK_S * sample_rate))
    gap_power = np.sort(np.concatenate([block_power(x[s:e], block) for s, e in near]))
    kept = gap_power[:max(1, int(len(gap_power) * (1 - options.outlier_share)))]
    level = db(float(np.mean(kept)) / speech_power)
    nfft = frame_length(sample_rate)
    # Slivers (a gap clipped at the edge of the context) would be frames of mostly padding.
    whole = [(s, e) for s, e in near if e - s >= nfft // 2] or near
    frames = np.concatenate([frames_of(x[s:e], nfft) for s, e in whole])
    # The median over time keeps what lasts (held notes, steady noise) and drops what does
    # not (a hi-hat, a click), like the harmonic half of a harmonic/percussive split.
    spectrum = np.median(power_spectra(thin(frames, options.max_frames)), axis=0)
    return Background(level, tonality(spectrum, sample_rate, nfft), True)


def measure_inside(speech: np.ndarray, sample_rate: int, options: GateOptions) -> Background:
    """Background from the span itself: each bin's quiet moments (speech leaves a band now and
    then; a bed or noise floor stays)."""
    nfft = frame_length(sample_rate)
    spectra = power_spectra(thin(frames_of(speech, nfft), options.max_frames))
    totals = spectra.sum(axis=1)
    # A noise bin's power per frame is exponentially distributed: its q-quantile is
    # -ln(1 - q) times its mean, so dividing by that reads a steady background at its level.
    floor = np.quantile(spectra, options.floor_quantile, axis=0) / -math.log1p(
        -options.floor_quantile)
    level = db(float(floor.sum()) / active_power(totals))
    return Background(level, tonality(floor, sample_rate, nfft), False)


def block_power(x: np.ndarray, block: int) -> np.ndarray:
    """Mean square of consecutive blocks (a short tail is its own block); no copy of `x`, so a
    span of hours costs one small array."""
    whole = len(x) // block * block
    blocks = x[:whole].reshape(-1, block)
    powers = np.einsum("ij,ij->i", blocks, blocks).astype(np.float64) / block
    if whole < len(x):
        tail = x[whole:]
        powers = np.append(powers, float(np.dot(tail, tail)) / len(tail))
    return powers


def active_power(powers: np.ndarray) -> float:
    """Speech level: the mean of the louder half of the blocks, so pauses and VAD padding
    inside a span do not lower it."""
    return float(np.mean(powers[powers >= np.median(powers)])) + TINY


def frame_length(sample_rate: int) -> int:
    return 1 << max(6, round(math.log2(FRAME_S * sample_rate)))


def frames_of(x: np.ndarray, nfft: int) -> np.ndarray:
    """Half-overlapping frames; a piece shorter than a frame is one zero-padded frame."""
    if len(x) < nfft:
        return np.pad(x, (0, nfft - len(x)))[None, :]
    return sliding_window_view(x, nfft)[::nfft // 2]


def thin(frames: np.ndarray, most: int) -> np.ndarray:
    """At most `most` frames, evenly spread, to bound the cost of a very long span."""
    if len(frames) <= most:
        return frames
    return frames[np.linspace(0, len(frames) - 1, most).astype(int)]


def power_spectra(frames: np.ndarray) -> np.ndarray:
    window = np.hanning(frames.shape[1]).astype(np.float32)
    return np.square(np.abs(np.fft.rfft(frames * window, axis=1)), dtype=np.float64)


def tonality(spectrum: np.ndarray, sample_rate: int, nfft: int) -> float:
    """Share of the tonal band's power in bins standing PEAK_DB above their neighbourhood's
    valleys: near 1 for held notes, near 0 for noise of any colour (its slope is smooth)."""
    level = 10 * np.log10(spectrum + TINY)
    half = max(1, round(VALLEY_HALF_WIDTH_HZ * nfft / sample_rate))
    padded = np.pad(level, half, mode="edge")
    valleys = np.percentile(sliding_window_view(padded, 2 * half + 1), VALLEY_PERCENTILE, axis=1)
    freqs = np.fft.rfftfreq(nfft, 1 / sample_rate)
    band = (freqs >= TONAL_BAND[0]) & (freqs <= TONAL_BAND[1])
    total = float(spectrum[band].sum())
    if total <= TINY:
        return 0.0
    peaks = band & (level - valleys >= PEAK_DB)
    return float(spectrum[peaks].sum()) / total


def db(ratio: float) -> float:
    return 10 * math.log10(max(ratio, TINY))
