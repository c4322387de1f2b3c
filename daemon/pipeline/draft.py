"""The fast draft: SenseVoice over each speech span, published before Whisper gets there.

SenseVoice is non-autoregressive and an order of magnitude faster than Whisper on a CPU, so a
viewer sees text for the whole file early; Whisper's finals replace the drafts as they come
(linked by time). Its rich tags are parsed here: the language and audio events (BGM, laughter…)
stay metadata, never text; a BGM tag feeds the separation gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

from ..config import Config, SenseVoiceConfig
from ..domain import Draft, SpeechSpan
from ..models import ModelSpec, model_bytes
from .align import unpadded
from .base import JobState, StageContext

BATCH_SPANS = 8  # spans per SenseVoice call at most: bounded memory, good throughput


class DraftStage:
    name = "draft"
    weight = 8.0

    def __init__(self, config: Config) -> None:
        self._cfg: SenseVoiceConfig = config.sensevoice

    @cached_property
    def spec(self) -> ModelSpec:
        from .sensevoice_engine import load_sensevoice

        cfg = self._cfg
        return ModelSpec("sensevoice", ("sensevoice", cfg.model, cfg.device),
                         lambda: load_sensevoice(cfg.model, cfg.device),
                         lambda: model_bytes(cfg.model, "model.pt"))

    def models(self) -> tuple[ModelSpec, ...]:
        return (self.spec,)

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        spans = list(state.active_spans)
        if not spans:
            return state
        model = ctx.model(self.spec)
        drafts: list[Draft] = []
        first, size = 0, 1 if not state.drafts else BATCH_SPANS
        while first < len(spans):  # the job's first batch is one span: a draft on screen soon
            ctx.check_cancel("drafting")
            drafts += self._batch(model, state, ctx, spans[first:first + size])
            first, size = first + size, min(size * 2, BATCH_SPANS)
            ctx.report.progress(min(first, len(spans)) / len(spans))
        everything = state.drafts + tuple(drafts)
        return state.grow(drafts=everything, language=_majority(everything) or state.language)

    def _batch(self, model: object, state: JobState, ctx: StageContext,
               spans: Sequence[SpeechSpan]) -> list[Draft]:
        from .sensevoice_engine import recognise

        audio = state.heard
        pad = ctx.config.vad.speech_pad_ms / 1000
        language = ctx.config.whisper.language
        clips = [audio.read(s.start, s.end) for s in spans]
        with ctx.inference(self.spec):
            results = recognise(model, clips, "auto" if language == "auto" else language)
        out = []
        for span, (rich, confidence) in zip(spans, results, strict=True):
            if not rich.text:
                continue  # nothing said (or only events): no draft to show
            start, end = unpadded(span, audio.sample_rate, pad, audio.length)
            draft = Draft(f"s{span.start}", rich.text, round(start, 3), round(end, 3),
                          round(confidence, 3), "sensevoice", rich.language, rich.events)
            ctx.report.draft(draft)
            out.append(draft)
        return out


def _majority(drafts: Sequence[Draft]) -> str | None:
    """The language most of the speech was drafted in (weighted by duration)."""
    seconds: dict[str, float] = {}
    for d in drafts:
        if d.language:
            seconds[d.language] = seconds.get(d.language, 0.0) + d.end - d.start
    return max(seconds, key=lambda k: seconds[k]) if seconds else None

