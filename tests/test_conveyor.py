"""The conveyor: front stages on a second thread, one group ahead of the final stage, bounded,
with errors and cancels reaching both sides. Stages here are minimal implementations of the
Stage protocol that record what runs where; the real stages run in test_dual."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from daemon.domain import Audio, Draft, SpeechSpan
from daemon.errors import Cancelled
from daemon.models import ModelCache, ModelSpec
from daemon.pipeline.base import JobState, NullReporter, StageContext, StageReport
from daemon.pipeline.conveyor import QUEUE_GROUPS, Conveyor
from daemon.pipeline.final import SpanFinalStage
from testkit.daemon import make_config

SR = 16000


class Recorder:
    """A front stage: one draft per span of its group, and a note of each group it saw."""

    name = "draft"
    weight = 1.0

    def __init__(self, fail_at: int | None = None,
                 meet: threading.Barrier | None = None) -> None:
        self.started: list[int] = []
        self.fail_at = fail_at
        self.meet = meet  # group 1 waits here for the final stage to be inside group 0

    def models(self) -> tuple[ModelSpec, ...]:
        return ()

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        index = len(self.started)
        self.started.append(index)
        if index == 1 and self.meet is not None:
            self.meet.wait()
        if index == self.fail_at:
            raise RuntimeError("the draft engine broke")
        new = tuple(Draft(f"s{s.start}", f"word{s.start}", s.start / SR, s.end / SR)
                    for s in state.active_spans)
        return state.grow(drafts=state.drafts + new)


def job(tmp_path: Path, groups: int) -> tuple[JobState, StageContext, threading.Event]:
    config = make_config(tmp_path, pipeline={"mode": "sensevoice"},
                         sensevoice={"model": str(tmp_path)}, vad={"max_chunk_seconds": 1})
    spans = tuple(SpeechSpan(k * 2 * SR, k * 2 * SR + SR) for k in range(groups))
    state = JobState(tmp_path / "x.wav", audio=Audio(np.zeros(groups * 2 * SR, np.float32)),
                     spans=spans)
    cancel = threading.Event()
    ctx = StageContext(config, ModelCache(1), cancel,
                       StageReport(NullReporter(), "transcribe", (0.0, 1.0)))
    return state, ctx, cancel


class MeetingFinal(SpanFinalStage):
    """The real final stage (drafts are final) that, inside group 0, waits for the front to be
    inside group 1: only two stages running at the same time can both pass the barrier."""

    def __init__(self, config: object, meet: threading.Barrier) -> None:
        super().__init__(config, 1, "sensevoice")  # type: ignore[arg-type]
        self.meet = meet
        self.groups_done = 0

    def open(self, state: JobState, ctx: StageContext):  # type: ignore[no-untyped-def]
        run = super().open(state, ctx)
        group = run.group

        def meeting(spans, new_drafts=()):  # type: ignore[no-untyped-def]
            if self.groups_done == 0:
                self.meet.wait()
            group(spans, new_drafts)
            self.groups_done += 1
        run.group = meeting  # type: ignore[method-assign]
        return run


def test_the_front_drafts_the_next_group_while_the_final_works(tmp_path: Path) -> None:
    state, ctx, _ = job(tmp_path, groups=4)
    meet = threading.Barrier(2, timeout=10)
    result = Conveyor([Recorder(meet=meet)], MeetingFinal(ctx.config, meet))(state, ctx)
    assert not meet.broken
    assert [c.text for c in result.cues] == [f"word{k * 2 * SR}" for k in range(4)]
    assert len(result.drafts) == 4 and result.focus is None


def test_the_front_is_never_more_than_the_queue_ahead(tmp_path: Path) -> None:
    state, ctx, _ = job(tmp_path, groups=8)
    front = Recorder()
    final = SpanFinalStage(ctx.config, 1, "sensevoice")
    ahead: list[int] = []
    real_open = final.open

    def slow_open(state: JobState, ctx: StageContext):  # type: ignore[no-untyped-def]
        run = real_open(state, ctx)
        group, done = run.group, [0]

        def slow(spans, new_drafts=()):  # type: ignore[no-untyped-def]
            threading.Event().wait(0.05)  # a slow final engine: the front runs as far as it may
            ahead.append(len(front.started) - done[0])
            group(spans, new_drafts)
            done[0] += 1
        run.group = slow  # type: ignore[method-assign]
        return run
    final.open = slow_open  # type: ignore[method-assign]
    Conveyor([front], final)(state, ctx)
    # the group in hand, the queued ones, and the one the front is making (waiting for room)
    assert max(ahead) == QUEUE_GROUPS + 2


def test_an_error_in_the_front_fails_the_stage(tmp_path: Path) -> None:
    state, ctx, _ = job(tmp_path, groups=4)
    with pytest.raises(RuntimeError, match="draft engine broke"):
        Conveyor([Recorder(fail_at=2)], SpanFinalStage(ctx.config, 1, "sensevoice"))(state, ctx)


def test_a_cancel_stops_both_sides(tmp_path: Path) -> None:
    state, ctx, cancel = job(tmp_path, groups=6)
    front = Recorder()
    cancel.set()
    with pytest.raises(Cancelled):
        Conveyor([front], SpanFinalStage(ctx.config, 1, "sensevoice"))(state, ctx)
    assert front.started == []
