"""A pipeline reporter that keeps everything it is told, in order, for assertions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from daemon.domain import Cue, Draft


@dataclass
class Recorded:
    kind: str  # progress | draft | final | degraded
    phase: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    draft: Draft | None = None
    cue: Cue | None = None
    replaces: tuple[str, ...] = ()


class RecordingReporter:
    def __init__(self) -> None:
        self.log: list[Recorded] = []

    def progress(self, phase: str, fraction: float, overall: float | None, message: str = "",
                 details: Mapping[str, Any] | None = None) -> None:
        self.log.append(Recorded("progress", phase, {"fraction": fraction, "message": message,
                                                     **(details or {})}))

    def draft(self, draft: Draft) -> None:
        self.log.append(Recorded("draft", draft=draft))

    def final(self, cue: Cue, replaces: tuple[str, ...],
              details: Mapping[str, Any] | None = None) -> None:
        self.log.append(Recorded("final", details=dict(details or {}), cue=cue,
                                 replaces=replaces))

    def degraded(self, component: str, reason: str) -> None:
        self.log.append(Recorded("degraded", component, {"reason": reason}))

    def of(self, kind: str, phase: str | None = None) -> list[Recorded]:
        return [r for r in self.log if r.kind == kind and (phase is None or r.phase == phase)]

    @property
    def drafts(self) -> list[Draft]:
        return [r.draft for r in self.log if r.draft is not None]

    @property
    def finals(self) -> list[Recorded]:
        return self.of("final")
