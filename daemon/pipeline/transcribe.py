"""The final transcription: faster-whisper over the VAD's speech, with word timestamps.

Speech spans are concatenated and transcribed in one call, then times are mapped back to the
source, exactly as faster-whisper does with `vad_filter=True`, so the cost matches bare use.
The segment generator is lazy: it is consumed here, in the worker thread, never on the event loop,
and a cancel request is honoured between segments.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import WhisperConfig
from ..domain import Audio, Segment, SpeechSpan, Word
from ..errors import Cancelled
from .guards import SegmentGuard

log = logging.getLogger(__name__)

SegmentFn = Callable[[Segment], None]


@dataclass(frozen=True)
class WhisperResult:
    language: str
    segments: list[Segment]


def transcribe(model: Any, audio: Audio, spans: list[SpeechSpan], cfg: WhisperConfig,
               cancel: threading.Event | None = None,
               on_segment: SegmentFn | None = None,
               guard: SegmentGuard | None = None) -> WhisperResult:
    from faster_whisper.transcribe import restore_speech_timestamps

    chunks = [{"start": s.start, "end": s.end} for s in spans]
    # One concatenation (faster-whisper's collect_chunks re-concatenates per chunk: quadratic
    # on a film with thousands of speech spans).
    speech = np.concatenate([audio.samples[s.start:s.end] for s in spans])
    raw, info = model.transcribe(
        speech,
        language=None if cfg.language == "auto" else cfg.language,
        task=cfg.task,
        beam_size=cfg.beam_size,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    segments: list[Segment] = []
    for index, seg in enumerate(restore_speech_timestamps(raw, chunks, audio.sample_rate)):
        if cancel is not None and cancel.is_set():
            raise Cancelled("stopped while transcribing")
        segment = _segment(index, seg)
        if not segment.words:
            continue
        reason = guard.reason_to_drop(segment) if guard else None
        if reason:
            log.info("dropped segment %d %r: %s", index, segment.text, reason)
            continue
        segments.append(segment)
        if on_segment:
            on_segment(segment)
    return WhisperResult("en" if cfg.task == "translate" else info.language, segments)


def _segment(index: int, seg: Any) -> Segment:
    words = tuple(Word(text=w.word, start=float(w.start), end=float(w.end),
                       probability=float(w.probability)) for w in (seg.words or ()))
    return Segment(index=index, text=seg.text.strip(), start=float(seg.start), end=float(seg.end),
                   words=words, avg_logprob=float(seg.avg_logprob),
                   no_speech_prob=float(seg.no_speech_prob))
