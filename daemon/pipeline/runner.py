"""Runs one file through the stages with the shared models: a short loop, nothing more."""

from __future__ import annotations

import threading
from pathlib import Path

from ..config import Config
from ..domain import Transcript
from ..errors import ConfigError
from ..logs import log_context
from ..models import ModelCache, ModelSpec
from .base import (
    JobState,
    NullReporter,
    Reporter,
    ShiftedReporter,
    Stage,
    StageContext,
    StageReport,
    bands,
)
from .stages import build_stages


class Pipeline:
    """The stages for a config, run in order. Everything here blocks: call it from a thread."""

    def __init__(self, config: Config, cache: ModelCache, workers: int = 1,
                 stages: list[Stage] | None = None) -> None:
        self._config = config
        self._cache = cache
        self.stages = stages if stages is not None else build_stages(config, workers)
        self._bands = bands(self.stages)

    @property
    def config(self) -> Config:
        return self._config

    def reconfigure(self, config: Config) -> None:
        """Live settings (output style, VAD thresholds) change between jobs; models stay."""
        self._config = config

    def model_specs(self) -> dict[str, ModelSpec]:
        """Every model the stages need, by preload name (resolving them: may download)."""
        return {spec.name: spec for stage in self.stages for spec in stage.models()}

    def prepare(self) -> None:
        """At start-up: resolve every model (one that cannot be had stops the start) and load
        those `models.preload` names. A name no stage uses is a config error, not ignored."""
        specs = self.model_specs()
        for name in self._config.models.preload:
            if name not in specs:
                raise ConfigError(
                    f"models.preload contains {name!r}, which no stage of this config uses; "
                    f"expected some of: {', '.join(specs) or 'nothing'}")
            self._cache.model(specs[name])

    def model(self, name: str) -> object:
        """A loaded model by preload name (tests and benchmarks hold on to it)."""
        return self._cache.model(self.model_specs()[name])

    def run(self, path: Path, cancel: threading.Event | None = None,
            reporter: Reporter | None = None) -> Transcript:
        config, rep = self._config, reporter or NullReporter()
        cancel = cancel or threading.Event()
        state = JobState(path)
        try:
            for stage, band in zip(self.stages, self._bands, strict=True):
                out = ShiftedReporter(rep, state.offset) if state.offset else rep
                ctx = StageContext(config, self._cache, cancel,
                                   StageReport(out, stage.name, band))
                ctx.check_cancel(f"starting {stage.name}")
                with log_context(stage=stage.name):
                    state = stage(state, ctx)
            return state.transcript(config.whisper)
        finally:
            if state.audio is not None:  # a spooled file's disk space, now, not at GC
                state.audio.close()
