"""The one place that picks which stages run, in order, for a config.

Optional stages that are off get a `Skip` stand-in, so the sequence (and the progress bar's
phases) has the same shape whatever is enabled. A new stage is one module and one line here.
"""

from __future__ import annotations

from ..config import Config
from .base import Skip, Stage
from .decode import DecodeStage
from .transcribe import WhisperStage
from .vad import VadStage


def build_stages(config: Config, workers: int = 1) -> list[Stage]:
    """decode → separate → vad → draft → transcribe, with stand-ins for what is off."""
    separation = Skip("separate", "separation comes with the dual-stream pipeline")
    drafts = Skip("draft", "sensevoice.enabled = false: Whisper's segments are the drafts")
    return [
        DecodeStage(),
        separation,
        VadStage(),
        drafts,
        WhisperStage(config, workers, drafts_from_segments=isinstance(drafts, Skip)),
    ]
