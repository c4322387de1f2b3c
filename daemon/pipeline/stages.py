"""The one place that picks which stages run, in order, for a config.

Each `pipeline.mode` is a choice of stages here and nothing more. Optional stages that are off
get a `Skip` stand-in, so the sequence (and the progress bar's phases) has the same shape
whatever is enabled. A new stage is one module and one line here.
"""

from __future__ import annotations

from ..config import Config, uses_sensevoice
from .base import Skip, Stage
from .conveyor import Conveyor
from .decode import DecodeStage
from .draft import DraftStage
from .final import SpanFinalStage
from .separate import SeparationStage
from .transcribe import WhisperStage
from .vad import VadStage


def effective_mode(config: Config) -> str:
    """`whisper` with `sensevoice.enabled = true` is `dual`: drafts from SenseVoice."""
    mode = config.pipeline.mode
    return "dual" if mode == "whisper" and uses_sensevoice(config) else mode


def build_stages(config: Config, workers: int = 1) -> list[Stage]:
    """decode → vad → draft → separation → transcribe, with stand-ins for what is off; with a
    draft engine the last three run group by group on a conveyor (drafts ahead of finals)."""
    mode = effective_mode(config)
    separation: Stage = (
        SeparationStage(config) if config.separation.mode != "off" and mode != "sensevoice"
        else Skip("separation", f"separation.mode = {config.separation.mode}, "
                                f"pipeline.mode = {mode}"))
    if mode == "whisper":
        return [DecodeStage(), VadStage(),
                Skip("draft", "pipeline.mode = whisper: Whisper's segments are the drafts"),
                separation, WhisperStage(config, workers)]
    return [DecodeStage(), VadStage(),
            Conveyor([DraftStage(config), separation], SpanFinalStage(config, workers, mode))]
