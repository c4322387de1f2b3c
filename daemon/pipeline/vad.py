"""Speech detection with the Silero VAD that faster-whisper ships (ONNX, no torch).

Running it as a stage of our own (rather than `vad_filter=True` inside `transcribe`) lets the
daemon report it, answer "no speech" without touching Whisper, and, later, gate separation on it.
The chunking is the same as faster-whisper's, so the transcription cost is the same as bare use.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import VadConfig
from ..domain import Audio, SpeechSpan
from ..models import ModelSpec
from .base import JobState, StageContext


def vad_options(cfg: VadConfig) -> Any:
    from faster_whisper.vad import VadOptions

    return VadOptions(
        threshold=cfg.threshold,
        min_silence_duration_ms=cfg.min_silence_ms,
        speech_pad_ms=cfg.speech_pad_ms,
        max_speech_duration_s=cfg.max_chunk_seconds,
    )


VAD_KEY = ("vad", "silero", "cpu", "float32")


class VadStage:
    """Silero speech spans over the decoded audio (the separated vocals, where there are any)."""

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
            spans = detect_speech(audio, ctx.config.vad)
        ctx.report.progress(1.0, f"{len(spans)} speech spans")
        return state.grow(spans=tuple(spans))


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


def detect_speech(audio: Audio, cfg: VadConfig) -> list[SpeechSpan]:
    """Speech spans in source samples, padded as configured; empty for silence or music."""
    from faster_whisper.vad import get_speech_timestamps

    if len(audio.samples) == 0:
        return []
    spans = get_speech_timestamps(audio.samples, vad_options(cfg), audio.sample_rate)
    return [SpeechSpan(int(s["start"]), int(s["end"])) for s in spans]

