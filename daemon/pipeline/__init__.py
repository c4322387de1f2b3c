"""The stages from a media file to a transcript, behind one small entry point.

decode → VAD → Whisper (final, word timestamps) → cues. Each stage reports progress through a
Reporter; optional stages (separation, drafts) will plug in here with null objects when off.
Everything here is blocking and runs in a worker thread.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol

from ..config import Config, WhisperConfig
from ..domain import Audio, Cue, Segment, SpeechSpan, Transcript
from ..logs import log_context
from ..models import ModelCache, WhisperSpec, load_whisper, model_bytes
from ..subtitles import CueStream, StyleLimits
from .align import SpeechEdges
from .decode import decode
from .guards import SegmentGuard
from .transcribe import transcribe
from .vad import VAD_KEY, detect_speech, load_vad, release_vad, vad_bytes

# Share of the overall percentage each phase stands for (transcription dominates).
PHASES = {"decode": (0.0, 0.10), "vad": (0.10, 0.15), "transcribe": (0.15, 0.97),
          "write": (0.97, 1.0)}


class Reporter(Protocol):
    """What a stage tells the outside world: progress, raw segments (drafts), final cues."""

    def progress(self, phase: str, fraction: float, message: str = "") -> None: ...

    def segment(self, segment: Segment) -> None: ...

    def cue(self, cue: Cue, segment_index: int) -> None: ...


class NullReporter:
    def progress(self, phase: str, fraction: float, message: str = "") -> None:
        pass

    def segment(self, segment: Segment) -> None:
        pass

    def cue(self, cue: Cue, segment_index: int) -> None:
        pass


def overall(phase: str, fraction: float) -> float:
    """The job's overall 0..1 progress from a phase and the fraction done within it."""
    lo, hi = PHASES.get(phase, (0.0, 1.0))
    return lo + (hi - lo) * min(max(fraction, 0.0), 1.0)


def expected_language(cfg: WhisperConfig) -> str | None:
    """The subtitle language known before listening: translation is English, a forced
    language is itself, an English-only model is English; None means it will be detected."""
    if cfg.task == "translate":
        return "en"
    if cfg.language != "auto":
        return cfg.language
    return "en" if cfg.model.endswith(".en") else None


def style_limits(config: Config) -> StyleLimits:
    o = config.output
    return StyleLimits(max_line_chars=o.max_line_chars, max_lines=o.max_lines,
                       min_cue_seconds=o.min_cue_seconds, max_cue_seconds=o.max_cue_seconds,
                       max_cps=o.max_cps)


class Pipeline:
    """Runs one file through the stages with the shared models."""

    def __init__(self, config: Config, cache: ModelCache, whisper: WhisperSpec) -> None:
        self._config = config
        self._cache = cache
        self._whisper = whisper

    def reconfigure(self, config: Config) -> None:
        """Live settings (output style) change between jobs; models stay as loaded."""
        self._config = config

    def whisper_model(self):
        return self._cache.get(self._whisper.key, lambda: load_whisper(self._whisper),
                               size=model_bytes(self._whisper.path))

    def vad_model(self):
        return self._cache.get(VAD_KEY, load_vad, size=vad_bytes(), release=release_vad)

    def run(self, path: Path, cancel: threading.Event | None = None,
            reporter: Reporter | None = None) -> Transcript:
        rep = reporter or NullReporter()
        with log_context(stage="decode"):
            rep.progress("decode", 0.0, "decoding")
            audio = decode(path, cancel, lambda f: rep.progress("decode", f))
        with log_context(stage="vad"):
            rep.progress("vad", 0.0, f"finding speech in {audio.duration:.1f} s of audio")
            self.vad_model()
            started = time.perf_counter()
            spans = detect_speech(audio, self._config.vad)
            self._cache.record_inference(VAD_KEY, time.perf_counter() - started)
            rep.progress("vad", 1.0, f"{len(spans)} speech spans")
        if not spans:
            language = expected_language(self._config.whisper) or "und"
            return Transcript(language, audio.duration, (), ())
        with log_context(stage="transcribe"):
            return self._transcribe(audio, spans, cancel, rep)

    def _transcribe(self, audio: Audio, spans: list[SpeechSpan],
                    cancel: threading.Event | None, rep: Reporter) -> Transcript:
        model = self.whisper_model()
        started = time.perf_counter()
        pad = self._config.vad.speech_pad_ms / 1000
        edges = SpeechEdges.from_spans(spans, audio.sample_rate, pad, len(audio.samples))
        guard = SegmentGuard(edges.speech)
        stream = CueStream(style_limits(self._config), audio.duration, edges.edges,
                           edges.pause_between)
        cues: list[Cue] = []
        segment_of: dict[int, int] = {}  # id(word) → segment index, to name each cue's draft

        def publish(new: list[Cue]) -> None:
            for cue in new:
                cues.append(cue)
                rep.cue(cue, segment_of.get(id(cue.words[0]), -1) if cue.words else -1)

        def on_segment(seg: Segment) -> None:
            with log_context(chunk_id=seg.index):
                rep.segment(seg)
                segment_of.update((id(w), seg.index) for w in seg.words)
                publish(stream.feed(seg.words))
                rep.progress("transcribe", seg.end / audio.duration if audio.duration else 1.0)

        result = transcribe(model, audio, spans, self._config.whisper, cancel, on_segment, guard)
        publish(stream.flush())
        self._cache.record_inference(self._whisper.key, time.perf_counter() - started)
        return Transcript(result.language, audio.duration, tuple(result.segments), tuple(cues))
