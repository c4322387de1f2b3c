"""From a media file to a transcript: stages run in order by a small `Pipeline`.

decode → separate → VAD → draft → Whisper (final, word timestamps) → cues. Which stages run is
decided once, in `build_stages`; each reports progress, drafts and finals through a Reporter.
Everything here is blocking and runs in a worker thread.
"""

from .base import JobState, NullReporter, Reporter, Skip, Stage, StageContext, expected_language
from .runner import Pipeline
from .stages import build_stages
from .transcribe import style_limits

__all__ = ["JobState", "NullReporter", "Pipeline", "Reporter", "Skip", "Stage", "StageContext",
           "build_stages", "expected_language", "style_limits"]
