"""Speech detection with the Silero VAD that faster-whisper ships (ONNX, no torch), used twice.

Running it as a stage of our own (rather than `vad_filter=True` inside `transcribe`) lets the
daemon report it, answer "no speech" without touching Whisper, and gate separation on it.

One pass of the model gives a speech probability per 32 ms window; two rules turn those
probabilities into two sets of spans, because recognition and timing want different cuts:
- **windows**, what Whisper hears: wide (the library's own defaults, 2 s of silence before a
  cut, 0.4 s of padding). Whisper needs context; cut tight, noisy speech loses words.
- **spans**, cut fine (`[vad] min_silence_ms`, `speech_pad_ms`): what the draft engine and the
  separation work on; and the same cut before padding, the **voice**: exact speech edges for
  cue timing, heard pauses that break cues, and the guards' "is anyone speaking here".
The rule that turns probabilities into spans is faster-whisper's (`get_speech_timestamps`),
re-stated here over precomputed probabilities so the model runs once; a test holds the two
equal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..config import VadConfig
from ..domain import Audio, SpeechSpan
from ..models import ModelSpec
from .base import JobState, StageContext

WINDOW = 512  # samples per Silero window at 16 kHz
READ_BLOCK_WINDOWS = 10_000  # windows read from the (spooled) audio at once: 320 s, 20 MB
MAX_SPEECH_SPLIT_MS = 98  # a silence this long may end a span that is over the length limit
VAD_KEY = ("vad", "silero", "cpu", "float32")


@dataclass(frozen=True)
class SpanRule:
    """How probabilities become spans (faster-whisper's `VadOptions`, the fields we use)."""

    threshold: float
    min_silence_ms: int
    pad_ms: int
    max_seconds: float

    @classmethod
    def fine(cls, cfg: VadConfig) -> SpanRule:
        return cls(cfg.threshold, cfg.min_silence_ms, cfg.speech_pad_ms, cfg.max_chunk_seconds)

    @classmethod
    def hearing(cls, cfg: VadConfig) -> SpanRule:
        return cls(cfg.threshold, cfg.whisper_min_silence_ms, cfg.whisper_pad_ms,
                   cfg.max_chunk_seconds)

    def options(self) -> object:
        """The same rule as faster-whisper's `VadOptions` (for bare runs in benches)."""
        from faster_whisper.vad import VadOptions

        return VadOptions(threshold=self.threshold, min_silence_duration_ms=self.min_silence_ms,
                          speech_pad_ms=self.pad_ms, max_speech_duration_s=self.max_seconds)


class VadStage:
    """Silero over the decoded audio (the separated vocals, where there are any): the fine
    spans and the wide windows, from one pass."""

    name = "vad"
    weight = 5.0

    def __init__(self) -> None:
        self._spec = ModelSpec("vad", VAD_KEY, load_vad, vad_bytes, release_vad)

    def models(self) -> tuple[ModelSpec, ...]:
        return (self._spec,)

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        audio = state.heard
        ctx.report.progress(0.0, f"finding speech in {audio.duration:.1f} s of audio")
        ctx.model(self._spec)
        with ctx.inference(self._spec):
            probs = self._probabilities(audio, ctx)
        cfg = ctx.config.vad
        n, sr = audio.length, audio.sample_rate
        fine = SpanRule.fine(cfg)
        spans = spans_from(probs, fine, n, sr)
        voice = voice_from(probs, fine, n, sr)
        windows = spans_from(probs, SpanRule.hearing(cfg), n, sr) if spans else []
        ctx.report.progress(1.0, f"{len(spans)} speech spans")
        return state.grow(spans=tuple(spans), voice=tuple(voice), windows=tuple(windows))


    @staticmethod
    def _probabilities(audio: Audio, ctx: StageContext) -> np.ndarray:
        """One pass over the audio a block at a time (a spooled film is never loaded whole)."""
        if audio.length == 0:
            return np.zeros(0, np.float32)
        stream, probs = SileroStream(), []
        block = READ_BLOCK_WINDOWS * WINDOW
        for at, samples in enumerate(audio.blocks(block)):
            ctx.check_cancel("finding speech")
            probs.append(stream.feed(samples))
            ctx.report.progress(min((at + 1) * block / audio.length, 1.0) * 0.99)
        probs.append(stream.finish())
        return np.concatenate(probs)


def load_vad() -> object:
    """Load the ONNX model (faster-whisper keeps it in an lru_cache of its own)."""
    from faster_whisper.vad import get_vad_model

    return get_vad_model()


def release_vad() -> None:
    """Make an eviction real: drop faster-whisper's own reference too."""
    from faster_whisper.vad import get_vad_model

    get_vad_model.cache_clear()


def vad_bytes() -> int:
    from faster_whisper.utils import get_assets_path

    try:
        return os.path.getsize(os.path.join(get_assets_path(), "silero_vad_v6.onnx"))
    except OSError:
        return 0


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """Silero's speech probability for each 512-sample window (the last one zero-padded)."""
    if len(samples) == 0:
        return np.zeros(0, np.float32)
    stream = SileroStream()
    return np.concatenate([stream.feed(samples), stream.finish()])


class SileroStream:
    """Silero over audio that arrives in blocks (a film decoded window by window): the model's
    state and each window's 64-sample context are carried from block to block, so the
    probabilities are those of one pass over the whole file, bit for bit, while memory holds
    a block. faster-whisper's own call takes the whole file at once."""

    CONTEXT = 64
    # Windows per model call. faster-whisper runs 10 000 (320 s) at once; the probabilities do
    # not depend on it (a test holds them equal), but ONNX Runtime's working memory does:
    # 132 MB for 10 000 windows, 33 MB for 1 000, which is also no slower.
    BATCH = 1_000

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(self.CONTEXT, np.float32)
        self._rest = np.zeros(0, np.float32)  # samples short of a whole window

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities of the whole windows that `samples` complete."""
        data = np.concatenate([self._rest, samples.astype(np.float32, copy=False)])
        whole = len(data) - len(data) % WINDOW
        self._rest = data[whole:].copy()
        windows = data[:whole].reshape(-1, WINDOW)
        out = [self._run(windows[i:i + self.BATCH]) for i in range(0, len(windows), self.BATCH)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        """The last window, zero-padded (a file that ends on a window's edge still gets one,
        as faster-whisper pads it)."""
        last = np.pad(self._rest, (0, WINDOW - len(self._rest)))
        self._rest = np.zeros(0, np.float32)
        return self._run(last.reshape(1, WINDOW))

    def _run(self, windows: np.ndarray) -> np.ndarray:
        contexts = np.concatenate([self._context[None, :], windows[:-1, -self.CONTEXT:]])
        batch = np.concatenate([contexts, windows], axis=1)
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c})
        self._context = windows[-1, -self.CONTEXT:].copy()
        return np.asarray(out, np.float32).reshape(-1)


def detect_speech(audio: Audio, cfg: VadConfig) -> list[SpeechSpan]:
    """The fine speech spans of `audio`; empty for silence or music."""
    probs = speech_probabilities(audio.samples)
    return spans_from(probs, SpanRule.fine(cfg), audio.length, audio.sample_rate)


def spans_from(probs: np.ndarray, rule: SpanRule, length: int,
               sample_rate: int = 16000) -> list[SpeechSpan]:
    """Padded speech spans, in samples, from per-window probabilities under `rule`."""
    raw = _Hysteresis(rule, sample_rate).run(probs, length)
    return _padded(raw, int(sample_rate * rule.pad_ms / 1000), length)


def voice_from(probs: np.ndarray, rule: SpanRule, length: int,
               sample_rate: int = 16000) -> list[SpeechSpan]:
    """Where the voice is under `rule`, before any padding: exact to a window at every pause
    the rule keeps (padding makes spans closer than twice the pad meet in the middle, which
    would hide a short pause's edges)."""
    return [SpeechSpan(a, b) for a, b in _Hysteresis(rule, sample_rate).run(probs, length)]


class _Hysteresis:
    """Speech starts above the threshold and ends after `min_silence_ms` below a lower one; a
    span over the length limit is cut at its last short silence, else hard."""

    def __init__(self, rule: SpanRule, sample_rate: int) -> None:
        self.on = rule.threshold
        self.off = max(rule.threshold - 0.15, 0.01)
        pad = sample_rate * rule.pad_ms / 1000
        self.max_len = sample_rate * rule.max_seconds - WINDOW - 2 * pad
        self.min_silence = sample_rate * rule.min_silence_ms / 1000
        self.split_silence = sample_rate * MAX_SPEECH_SPLIT_MS / 1000
        self.spans: list[list[int]] = []
        self.start: int | None = None
        self.silence_at = 0  # where the current silence began (0: none)
        self.prev_end = 0  # the last silence long enough to split at
        self.next_start = 0  # where speech resumed after it

    def run(self, probs: np.ndarray, length: int) -> list[list[int]]:
        for i, p in enumerate(probs.tolist()):
            self._step(WINDOW * i, p)
        if self.start is not None and length - self.start > 0:
            self.spans.append([self.start, length])
        return self.spans

    def _step(self, at: int, p: float) -> None:
        if p >= self.on and self.silence_at:
            self.silence_at = 0
            if self.next_start < self.prev_end:
                self.next_start = at
        if self.start is None:
            if p >= self.on:
                self.start = at
            return
        if at - self.start > self.max_len and self._split(at):
            return
        if p < self.off:
            self._silence(at)

    def _split(self, at: int) -> bool:
        """Cut an over-long span; True when nothing more is to be done for this window."""
        assert self.start is not None
        if self.prev_end:
            self.spans.append([self.start, self.prev_end])
            self.start = None if self.next_start < self.prev_end else self.next_start
            self.prev_end = self.next_start = self.silence_at = 0
            return False
        self.spans.append([self.start, at])
        self.start = None
        self.prev_end = self.next_start = self.silence_at = 0
        return True

    def _silence(self, at: int) -> None:
        if self.start is None:
            return
        if not self.silence_at:
            self.silence_at = at
        if at - self.silence_at > self.split_silence:
            self.prev_end = self.silence_at
        if at - self.silence_at >= self.min_silence:
            if self.silence_at - self.start > 0:
                self.spans.append([self.start, self.silence_at])
            self.start = None
            self.prev_end = self.next_start = self.silence_at = 0


def _padded(raw: list[list[int]], pad: int, length: int) -> list[SpeechSpan]:
    """Pad each span; where two are closer than twice the padding, meet in the middle."""
    for i, span in enumerate(raw):
        if i == 0:
            span[0] = max(0, span[0] - pad)
        if i + 1 < len(raw):
            gap = raw[i + 1][0] - span[1]
            if gap < 2 * pad:
                span[1] += gap // 2
                raw[i + 1][0] = max(0, raw[i + 1][0] - gap // 2)
            else:
                span[1] = min(length, span[1] + pad)
                raw[i + 1][0] = max(0, raw[i + 1][0] - pad)
        else:
            span[1] = min(length, span[1] + pad)
    return [SpeechSpan(int(a), int(b)) for a, b in raw]
