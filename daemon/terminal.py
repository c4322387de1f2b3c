"""How `subwatch transcribe` talks to a person at a terminal, and to a script.

A bar redraws its line with a carriage return, so anything else written to the same terminal
splices into it (a log record printed mid-bar lost its first character and left the bar
reprinted after it). Here, on a terminal, each file gets one bar (phase, percent, speed, ETA),
log records are printed above the bar by tqdm itself, only warnings and errors unless `-v`, and
a small table sums up at the end. Anything that is not a terminal gets no bar and no control
characters: stdout keeps its contract (the written paths, one a line, which scripts read) and
stderr says one plain line per file.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from .pipeline import NullReporter
from .pipeline.base import Details

REDRAW_SECONDS = 0.1  # a bar redraws at most this often; a change of phase always redraws
ETA_AFTER_SECONDS = 1.0  # an estimate from the first second is noise
NAME_WIDTH = 30
NO_SPEECH = "no speech, nothing written"


@dataclass(frozen=True)
class FileResult:
    """One file's outcome: what its plain line and its row of the summary say."""

    path: Path
    seconds: float  # wall time from the start of decoding to the written subtitles
    audio_seconds: float | None  # None when the audio was never decoded
    outputs: tuple[Path, ...] = ()
    error: str | None = None

    @property
    def speed(self) -> float | None:
        """Audio seconds per wall second (× real time)."""
        if not self.audio_seconds or self.seconds <= 0:
            return None
        return self.audio_seconds / self.seconds

    @property
    def outcome(self) -> str:
        if self.error is not None:
            return f"failed: {self.error}"
        return ", ".join(str(p) for p in self.outputs) if self.outputs else NO_SPEECH


class StatusBar(tqdm):  # type: ignore[misc]  # tqdm ships no types
    """tqdm with a `{status}` field of our own (its `{postfix}` always starts with ", ")."""

    status = ""

    @property
    def format_dict(self) -> dict[str, Any]:
        return {**super().format_dict, "status": self.status}


class FileProgress(NullReporter):
    """The pipeline's reporter for one file: keeps what the summary needs (the audio length the
    decode stage reports, the wall time) and, on a terminal, draws the file's bar."""

    def __init__(self, path: Path, label: str, bar: bool) -> None:
        self.path = path
        self.started = time.monotonic()
        self.audio_seconds: float | None = None
        self.phase = ""
        self.overall = 0.0
        self._drawn = 0.0
        self._bar: StatusBar | None = None
        if bar:
            self._bar = StatusBar(total=100, desc=label, leave=False, file=sys.stderr,
                                  dynamic_ncols=True,
                                  bar_format="{desc} {percentage:3.0f}%|{bar}| {status}")

    def progress(self, phase: str, fraction: float, overall: float | None, message: str = "",
                 details: Details | None = None) -> None:
        if details and "audio_seconds" in details:
            self.audio_seconds = float(details["audio_seconds"])
        if overall is None:  # a side stage: the file's phase and percent stay as they are
            return
        changed = phase != self.phase
        self.phase, self.overall = phase, overall
        now = time.monotonic()
        if self._bar is not None and (changed or now - self._drawn >= REDRAW_SECONDS):
            self._drawn = now
            self._bar.n = round(100 * overall, 1)
            self._bar.status = self.status(now - self.started)
            self._bar.refresh()

    def speed(self, elapsed: float) -> float | None:
        """Audio seconds done per wall second, once decoding has told the length: the length
        times the share of the work done. The ETA is the same estimate, so the two agree."""
        if self.audio_seconds is None or elapsed <= 0 or self.overall <= 0:
            return None
        return self.audio_seconds * self.overall / elapsed

    def eta(self, elapsed: float) -> float | None:
        if elapsed < ETA_AFTER_SECONDS or self.overall < 0.01:
            return None
        return elapsed * (1.0 - self.overall) / self.overall

    def status(self, elapsed: float) -> str:
        parts = [self.phase]
        speed, eta = self.speed(elapsed), self.eta(elapsed)
        if speed is not None:
            parts.append(f"{speed:.1f}× real time")
        if eta is not None:
            parts.append(f"ETA {clock(eta)}")
        return " · ".join(parts)

    def finish(self, outputs: Sequence[Path] = (), audio_seconds: float | None = None,
               error: str | None = None) -> FileResult:
        self.close()
        return FileResult(self.path, time.monotonic() - self.started,
                          audio_seconds or self.audio_seconds, tuple(outputs), error)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Console:
    """Where `transcribe` writes what, decided once from which streams are terminals."""

    def __init__(self, verbose: bool = False, stdout: TextIO | None = None,
                 stderr: TextIO | None = None) -> None:
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr
        self.verbose = verbose
        self.interactive = self.err.isatty()  # the bar and the log share stderr
        # Scripts read the paths on stdout; only a person at both ends gets the table instead.
        self.paths_on_stdout = not (self.interactive and self.out.isatty())

    @contextlib.contextmanager
    def logging(self) -> Iterator[None]:
        """On a terminal, for the block: log records above the bars, INFO only with -v."""
        if not self.interactive:
            yield
            return
        with logs_above_bars(self.err, logging.NOTSET if self.verbose else logging.WARNING):
            yield

    def start(self, path: Path, index: int, count: int) -> FileProgress:
        name = short_name(path.name)
        label = name if count == 1 else f"[{index}/{count}] {name}"
        return FileProgress(path, label, bar=self.interactive)

    def done(self, result: FileResult) -> None:
        """A file's lines as it finishes: its error, its paths, its plain line."""
        if result.error is not None:
            print(f"subwatch: {str(result.path)!r}: {result.error}", file=self.err, flush=True)
            return
        if self.paths_on_stdout:
            if not result.outputs:
                print(f"{str(result.path)!r}: no speech found; no subtitles written", file=self.out)
            for out in result.outputs:
                print(out, file=self.out)
            self.out.flush()
        if not self.interactive:
            print(plain_line(result), file=self.err, flush=True)

    def summary(self, results: Sequence[FileResult]) -> None:
        if self.interactive and results:
            target = self.err if self.paths_on_stdout else self.out
            print(summary_table(results), file=target, flush=True)


class AboveBars:
    """A stream for a log handler: each record goes out through tqdm.write, which clears the
    bars, writes the record on a line of its own and draws the bars again below it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        StatusBar.write(text, file=self.stream, end="")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def console_handlers(stream: TextIO) -> list[logging.StreamHandler[Any]]:
    """The root's handlers that write to `stream` (the console one; files are left alone)."""
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            and h.stream is stream]


@contextlib.contextmanager
def logs_above_bars(stream: TextIO, level: int) -> Iterator[None]:
    """For the block, the console handlers on `stream` write above any bar and pass records
    from `level` up (NOTSET: as configured); log files and the daemon are not touched."""
    swapped = [(handler, handler.level) for handler in console_handlers(stream)]
    for handler, own in swapped:
        handler.setStream(AboveBars(stream))
        handler.setLevel(max(level, own))
    try:
        yield
    finally:
        for handler, own in swapped:
            handler.setStream(stream)
            handler.setLevel(own)


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """A name that fits a bar's label: the middle gives way (the end tells episodes apart)."""
    if len(name) <= width:
        return name
    keep = (width - 1) // 2
    return f"{name[:keep]}…{name[-(width - 1 - keep):]}"


def clock(seconds: float) -> str:
    """7.4 s under a minute, else m:ss or h:mm:ss."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plain_line(result: FileResult) -> str:
    """One line, no control characters: `talk.wav: 7.4 s of audio in 2.1 s (3.5× real time) →
    /out/talk.en.srt`."""
    audio = f"{clock(result.audio_seconds)} of audio" if result.audio_seconds else "audio"
    speed = f" ({result.speed:.1f}× real time)" if result.speed else ""
    return f"{result.path.name}: {audio} in {clock(result.seconds)}{speed} → {result.outcome}"


def summary_table(results: Sequence[FileResult]) -> str:
    """File, audio length, processing time, speed, and the outputs or the error, aligned."""
    rows = [("file", "audio", "took", "speed", "subtitles")]
    rows += [(r.path.name, clock(r.audio_seconds) if r.audio_seconds else "–", clock(r.seconds),
              f"{r.speed:.1f}×" if r.speed else "–", r.outcome) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}  {e}"
             for a, b, c, d, e in rows]
    return "\n".join([*lines, totals(results)])


def totals(results: Sequence[FileResult]) -> str:
    failed = sum(r.error is not None for r in results)
    audio = sum(r.audio_seconds or 0.0 for r in results)
    took = sum(r.seconds for r in results)
    files = f"{len(results)} file{'s' if len(results) != 1 else ''}"
    return (f"{files}{f', {failed} failed' if failed else ''}: "
            f"{clock(audio)} of audio in {clock(took)}")
