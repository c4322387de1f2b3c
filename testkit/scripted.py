"""A stand-in for transcription, for tests that are about the daemon rather than recognition.

It reads the real file, then emits segments on a schedule through the real reporter and the
real cue builder and draft linking (so drafts, finals, progress and outputs are the daemon's
own), and can be told to fail, to hold between two segments, or to wait for a partner call.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from daemon.domain import Segment, Transcript, Word
from daemon.errors import Cancelled, InputError
from daemon.pipeline.align import SpeechEdges
from daemon.pipeline.base import Reporter, StageReport
from daemon.pipeline.finals import Finals
from daemon.pipeline.transcribe import segment_draft
from daemon.subtitles import StyleLimits

LINES = ("The first line of the script.", "A second line follows it.",
         "Then a third one.", "And the last line ends it.")
SECONDS_PER_LINE = 2.0


def script_segment(index: int, text: str) -> Segment:
    """Line `index` with its words spread evenly over its two seconds."""
    start = index * SECONDS_PER_LINE + 0.5
    words = text.split()
    step = (SECONDS_PER_LINE - 0.5) / len(words)
    timed = tuple(Word(f" {w}", start + i * step, start + (i + 1) * step)
                  for i, w in enumerate(words))
    return Segment(index, text, start, timed[-1].end, timed, avg_logprob=-0.1)


class ScriptedPipeline:
    """Callable as the worker's `transcribe` (path, cancel, reporter → transcript)."""

    def __init__(self, lines: Sequence[str] = LINES, pause: float = 0.02,
                 failures: Sequence[Exception] = (), hold_after: int | None = None,
                 partner: threading.Barrier | None = None) -> None:
        self.lines = tuple(lines)
        self.pause = pause  # between two segments, as a real decode would take time
        self.failures = list(failures)  # raised by the next calls, one each, in order
        self.hold_after = hold_after  # stop after this many segments until released
        self.held = threading.Event()
        self.release = threading.Event()
        self.partner = partner  # every call waits here for another call (concurrency tests)
        self.calls = 0
        self.emitted = 0
        self._lock = threading.Lock()

    def __call__(self, path: Path, cancel: threading.Event, reporter: Reporter) -> Transcript:
        with self._lock:
            self.calls += 1
            failure = self.failures.pop(0) if self.failures else None
        if path.stat().st_size == 0:
            raise InputError("empty_file", "the file is empty (0 bytes)")
        if self.partner is not None:
            self.partner.wait()
        if failure is not None:
            raise failure
        return self._emit(cancel, reporter)

    def _emit(self, cancel: threading.Event, reporter: Reporter) -> Transcript:
        duration = len(self.lines) * SECONDS_PER_LINE
        report = StageReport(reporter, "transcribe", (0.15, 1.0))
        finals = Finals(StyleLimits(), duration, SpeechEdges((), (), ()), report)
        segments = []
        for index, text in enumerate(self.lines):
            self._between_segments(index, cancel)
            segment = script_segment(index, text)
            segments.append(segment)
            finals.draft(segment_draft(segment))
            finals.feed(segment.words)
            with self._lock:
                self.emitted += 1
            report.progress((index + 1) / len(self.lines))
        finals.flush()
        return Transcript("en", duration, tuple(segments), tuple(finals.cues))

    def _between_segments(self, index: int, cancel: threading.Event) -> None:
        if index and index == self.hold_after:
            self.held.set()
            while not (self.release.is_set() or cancel.is_set()):
                self.release.wait(0.01)
        elif index:
            cancel.wait(self.pause)
        if cancel.is_set():
            raise Cancelled("stopped while transcribing")
