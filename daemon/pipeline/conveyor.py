"""Span groups on a conveyor: the draft (and separation) of group n+1 runs on a second thread
while the final engine works on group n, so a viewer sees drafts well ahead of the finals and
the two engines overlap on a CPU with cores to spare.

The queue between the threads is bounded: the front is never more than a few groups ahead,
so a 3-hour film holds the drafts and verdicts of a few groups in flight, not of the film.
A failure or a cancel on either side stops both; the models come from the shared cache, so a
model is loaded once whichever thread asks first.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..models import ModelSpec
from .base import JobState, Stage, StageContext
from .final import SpanFinalStage, group_spans, max_group

QUEUE_GROUPS = 2  # groups the front may be ahead of the final engine
_END = None


@dataclass(frozen=True)
class _Group:
    state: JobState  # the job's state as the front stages left it for this group
    first: int  # how many drafts and verdicts came before this group


class Conveyor:
    """A stage made of front stages (run per group, on a helper thread) and a final stage."""

    name = "transcribe"

    def __init__(self, front: Sequence[Stage], final: SpanFinalStage) -> None:
        self.front = list(front)
        self.final = final
        self.weight = sum(s.weight for s in self.front) + final.weight

    def models(self) -> tuple[ModelSpec, ...]:
        return tuple(m for s in (*self.front, self.final) for m in s.models())

    def __call__(self, state: JobState, ctx: StageContext) -> JobState:
        if not state.spans:
            return state
        bounds = _bounds(group_spans(state.spans, max_group(state, ctx)))
        belt: queue.Queue[_Group | BaseException | None] = queue.Queue(QUEUE_GROUPS)
        stop = threading.Event()
        front = threading.Thread(target=contextvars.copy_context().run,
                                 args=(self._front, state, ctx, bounds, belt, stop),
                                 name="subwatch-front", daemon=True)
        front.start()
        try:
            return self._back(state, ctx, bounds, belt)
        finally:
            stop.set()
            _drain(belt)
            front.join()

    def _front(self, state: JobState, ctx: StageContext, bounds: list[tuple[int, int]],
               belt: queue.Queue[_Group | BaseException | None], stop: threading.Event) -> None:
        """Front stages over each group in turn; every result (or error) goes on the belt."""
        try:
            for focus in bounds:
                if stop.is_set():
                    return
                ctx.check_cancel("drafting")
                first = len(state.drafts)
                state = state.grow(focus=focus)
                for stage in self.front:
                    state = stage(state, _aside(ctx, stage.name))
                _put(belt, _Group(state, first), stop)
            _put(belt, _END, stop)
        except BaseException as exc:  # handed to the final side, which raises it
            _put(belt, exc, stop)

    def _back(self, state: JobState, ctx: StageContext, bounds: list[tuple[int, int]],
              belt: queue.Queue[_Group | BaseException | None]) -> JobState:
        run = self.final.open(state, ctx)
        latest = state
        for n, focus in enumerate(bounds):
            item = belt.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                break
            latest = item.state
            run.group(state.spans[focus[0]:focus[1]], latest.drafts[item.first:])
            ctx.report.progress((n + 1) / len(bounds))
        return run.close(latest.grow(focus=None))


def _bounds(groups: Sequence[Sequence[object]]) -> list[tuple[int, int]]:
    out, at = [], 0
    for group in groups:
        out.append((at, at + len(group)))
        at += len(group)
    return out


def _aside(ctx: StageContext, phase: str) -> StageContext:
    return StageContext(ctx.config, ctx.cache, ctx.cancel, ctx.report.aside(phase))


def _put(belt: queue.Queue[_Group | BaseException | None], item: _Group | BaseException | None,
         stop: threading.Event) -> None:
    """Wait for room, unless the final side has stopped listening."""
    while not stop.is_set():
        try:
            belt.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _drain(belt: queue.Queue[_Group | BaseException | None]) -> None:
    while True:
        try:
            belt.get_nowait()
        except queue.Empty:
            return
