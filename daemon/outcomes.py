"""How a job ends, recorded once: the journal, a signal, a log line, and the files.

Done writes nothing here (the worker wrote the outputs) but applies `jobs.on_success`; a
failure for good writes the error file beside where the subtitle would have gone; a transient
failure waits with exponential backoff while attempts remain; a stop puts the job back in the
queue without charging an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable
from itertools import count
from pathlib import Path
from typing import Any

from .config import LiveConfig
from .domain import Transcript
from .events import EventType
from .journal import Job, JournalUnavailable
from .libraries import is_library_key
from .models import ModelCache
from .progress import JobReporter, JobSignals
from .queue import JobQueue
from .threads import Blocking
from .uploads import UPLOAD, outbox_of
from .writer import NAME_MAX, fit_stem, name_bytes

log = logging.getLogger(__name__)

RECORD_RETRY_MAX_SECONDS = 10.0  # how often, at the least, an unrecorded outcome is tried again


def identity_problem(job: Job, path: Path) -> tuple[str, str] | None:
    """(code, reason) when the file is not the one admitted. A vanished file is canceled as
    `vanished`, which the journal revives if it comes back (a share that unmounted under its
    mount point looks exactly like this)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "vanished", "the input file is gone"
    if (st.st_size, st.st_mtime_ns) != (job.size, job.mtime_ns):
        return "superseded", "the input file changed; its new version is a new job"
    return None


def free_path(dest: Path) -> Path:
    """`dest` when nothing is there; else the first free `name (2).ext`, `name (3).ext`…, so
    a moved input never replaces an older copy (a re-encoded file done again, say). Each name
    fits NAME_MAX like the outputs' (a cut stem and a short hash of the full name)."""
    if not os.path.lexists(dest):
        return dest
    room = NAME_MAX - name_bytes(dest.suffix)
    for n in count(2):
        name = f"{dest.stem} ({n})"
        candidate = dest.with_name(fit_stem(name, name + dest.suffix, room) + dest.suffix)
        if not os.path.lexists(candidate):
            return candidate
    raise AssertionError("unreachable")


class Outcomes:
    def __init__(self, live: LiveConfig, journal: JobQueue, signal: JobSignals,
                 blocking: Blocking, cache: ModelCache) -> None:
        self._live = live
        self._journal = journal
        self._signal = signal
        self._blocking = blocking
        self._cache = cache

    async def done(self, job: Job, transcript: Transcript, outputs: list[str],
                   elapsed: float, reporter: JobReporter) -> None:
        result = "no_speech" if transcript.no_speech else "ok"
        track = dict(transcript.track) if transcript.track else None
        if not await self._record(job, self._journal.finish, job.id, outputs,
                                  transcript.language, result, transcript.duration, elapsed,
                                  track):
            log.warning("%r was finished here after it was taken over or canceled elsewhere; "
                        "its outcome stands as recorded there", job.rel_path)
            return  # no second job_done, and on_success is the recorded run's to apply
        reporter.finished(result)
        speed = transcript.duration / elapsed if elapsed > 0 else 0.0
        log.info("done %r: %s, %d cues, %.1f s of audio in %.1f s (%.1fx)", job.rel_path,
                 result, len(transcript.cues), transcript.duration, elapsed, speed)
        log.info("models: %s", self._model_figures())
        self._signal(EventType.JOB_DONE, job, result=result, outputs=outputs,
                     language=transcript.language, cues=len(transcript.cues),
                     audio_seconds=round(transcript.duration, 3),
                     processing_seconds=round(elapsed, 3), track=track)
        await self._blocking(self._after_success, job)

    async def done_earlier(self, job: Job, written: dict[str, Any]) -> None:
        """Done as it was before the daemon died: every output noted before the renames
        (journal.record_written) is whole, so it is recorded from that note, with no model
        run and no file written again."""
        outputs = list(written["outputs"])
        await self._record(job, self._journal.finish, job.id, outputs, written["language"],
                           "ok", written["audio_seconds"], written["processing_seconds"],
                           written.get("track"))
        log.info("done %r: its outputs were whole when the daemon stopped before recording"
                 " it; not transcribed again", job.rel_path)
        self._signal(EventType.JOB_DONE, job, result="ok", outputs=outputs,
                     language=written["language"], cues=written["cues"],
                     audio_seconds=round(written["audio_seconds"], 3),
                     processing_seconds=round(written["processing_seconds"], 3),
                     track=written.get("track"))
        await self._blocking(self._after_success, job)

    def _model_figures(self) -> str:
        return "; ".join(
            f"{key.split('/')[0]} loads {st['load_count']} hits {st['hits']} inferences "
            f"{st['inference_count']} avg {st['avg_inference_seconds']} s"
            for key, st in self._cache.snapshot()["stats"].items())

    def _after_success(self, job: Job) -> None:
        """on_success: keep the input, move it to inbox/.done/, or delete it."""
        config = self._live.current
        action, inbox = config.jobs.on_success, config.paths.inbox
        if job.kind == UPLOAD or is_library_key(job.rel_path):  # an upload's input is the
            return  # request's; a media library's files are never moved or deleted (issue 13)
        src = inbox / job.rel_path
        try:
            if action != "keep" and identity_problem(job, src) is not None:
                log.info("left %r in place (on_success = %s): it changed while it was "
                         "transcribed", job.rel_path, action)
                return
            if action == "move":
                dest = free_path(inbox / ".done" / job.rel_path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(src, dest)
            elif action == "delete":
                src.unlink()
        except OSError as exc:
            log.warning("could not %s %r after success: %s", action, job.rel_path,
                        exc.strerror or exc)

    async def canceled(self, job: Job, reason: str, code: str = "canceled") -> None:
        log.info("canceled %r: %s", job.rel_path, reason)
        await self._record(job, self._journal.cancel, job.id, reason, code)
        self._signal(EventType.JOB_CANCELED, job, reason=reason)

    async def interrupted(self, job: Job) -> None:
        """Stopped by the daemon's stop: back in the queue, no attempt charged."""
        log.info("interrupted %r by the stop; it is back in the queue", job.rel_path)
        await self._record(job, self._journal.requeue, job.id)

    async def short(self, job: Job, message: str) -> None:
        """The daemon ran short (of descriptors): back in the queue, no attempt charged."""
        log.warning("%r goes back to the queue: the daemon is short (%s)", job.rel_path, message)
        await self._record(job, self._journal.requeue, job.id)

    async def retry_or_fail(self, job: Job, code: str, message: str) -> None:
        jobs = self._live.current.jobs
        if job.attempts >= jobs.max_attempts:
            await self.fail(job, code, message)
            return
        delay = jobs.retry_backoff_seconds * (2 ** (job.attempts - 1))
        log.warning("attempt %d on %r failed (%s: %s); retrying in %.0f s", job.attempts,
                    job.rel_path, code, message, delay)
        await self._record(job, self._journal.retry_later, job.id, code, message, delay)
        self._signal(EventType.JOB_RETRYING, job, error=code, message=message,
                     retry_in_seconds=delay)

    async def fail(self, job: Job, code: str, message: str) -> None:
        """The error file first, then the journal: whoever sees `failed` finds the file."""
        await self._write_error(job, code, message)
        await self._record(job, self._journal.fail, job.id, code, message)
        self._announce_failure(job, code, message)

    async def failed(self, job: Job, code: str, message: str) -> None:
        """A failure the journal already has (the crash recovery at start failed the job):
        its error file, the log line and the signal."""
        await self._write_error(job, code, message)
        self._announce_failure(job, code, message)

    def _announce_failure(self, job: Job, code: str, message: str) -> None:
        log.error("failed %r: %s: %s", job.rel_path, code, message)
        self._signal(EventType.JOB_FAILED, job, error=code, message=message)

    async def _write_error(self, job: Job, code: str, message: str) -> None:
        try:
            await self._blocking(outbox_of(self._live.current, job).write_error, job.rel_path,
                                 code, message, job.attempts)
        except OSError as exc:
            log.error("cannot write the error file for %r: %s", job.rel_path,
                      exc.strerror or exc)

    async def _record(self, job: Job, write: Callable[..., Any], *args: Any) -> Any:
        """A journal write of an outcome, tried until it is recorded: a journal that cannot be
        written (another process's lock, a full disk) holds the job in `running` meanwhile,
        as /status shows, never `running` for good. A stop cancels the wait; the job is then
        recovered at the next start."""
        delay = 0.5
        while True:
            try:
                return await self._blocking(write, *args)
            except JournalUnavailable as exc:
                if delay == 0.5:
                    log.warning("the outcome of %r waits for the journal: %s", job.rel_path, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_MAX_SECONDS)
