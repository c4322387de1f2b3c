"""How a job ends, recorded once: the journal, a signal, a log line, and the files.

Done writes nothing here (the worker wrote the outputs) but applies `jobs.on_success`; a
failure for good writes the error file beside where the subtitle would have gone; a transient
failure waits with exponential backoff while attempts remain; a stop puts the job back in the
queue without charging an attempt.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .config import LiveConfig
from .domain import Transcript
from .events import EventType
from .journal import Job, Journal
from .models import ModelCache
from .progress import JobReporter, JobSignals
from .threads import Blocking
from .writer import outbox_for

log = logging.getLogger(__name__)


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


class Outcomes:
    def __init__(self, live: LiveConfig, journal: Journal, signal: JobSignals,
                 blocking: Blocking, cache: ModelCache) -> None:
        self._live = live
        self._journal = journal
        self._signal = signal
        self._blocking = blocking
        self._cache = cache

    async def done(self, job: Job, transcript: Transcript, outputs: list[str],
                   elapsed: float, reporter: JobReporter) -> None:
        result = "no_speech" if transcript.no_speech else "ok"
        await self._blocking(self._journal.finish, job.id, outputs, transcript.language,
                             result, transcript.duration, elapsed)
        reporter.finished(result)
        speed = transcript.duration / elapsed if elapsed > 0 else 0.0
        log.info("done %r: %s, %d cues, %.1f s of audio in %.1f s (%.1fx)", job.rel_path,
                 result, len(transcript.cues), transcript.duration, elapsed, speed)
        log.info("models: %s", self._model_figures())
        self._signal(EventType.JOB_DONE, job, result=result, outputs=outputs,
                     language=transcript.language, cues=len(transcript.cues),
                     audio_seconds=round(transcript.duration, 3),
                     processing_seconds=round(elapsed, 3))
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
        src = inbox / job.rel_path
        try:
            if action != "keep" and identity_problem(job, src) is not None:
                log.info("left %r in place (on_success = %s): it changed while it was "
                         "transcribed", job.rel_path, action)
                return
            if action == "move":
                dest = inbox / ".done" / job.rel_path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(src, dest)
            elif action == "delete":
                src.unlink()
        except OSError as exc:
            log.warning("could not %s %r after success: %s", action, job.rel_path,
                        exc.strerror or exc)

    async def canceled(self, job: Job, reason: str, code: str = "canceled") -> None:
        log.info("canceled %r: %s", job.rel_path, reason)
        await self._blocking(self._journal.cancel, job.id, reason, code)
        self._signal(EventType.JOB_CANCELED, job, reason=reason)

    async def interrupted(self, job: Job) -> None:
        """Stopped by the daemon's stop: back in the queue, no attempt charged."""
        log.info("interrupted %r by the stop; it is back in the queue", job.rel_path)
        await self._blocking(self._journal.requeue, job.id)

    async def retry_or_fail(self, job: Job, code: str, message: str) -> None:
        jobs = self._live.current.jobs
        if job.attempts >= jobs.max_attempts:
            await self.fail(job, code, message)
            return
        delay = jobs.retry_backoff_seconds * (2 ** (job.attempts - 1))
        log.warning("attempt %d on %r failed (%s: %s); retrying in %.0f s", job.attempts,
                    job.rel_path, code, message, delay)
        await self._blocking(self._journal.retry_later, job.id, code, message, delay)
        self._signal(EventType.JOB_RETRYING, job, error=code, message=message,
                     retry_in_seconds=delay)

    async def fail(self, job: Job, code: str, message: str) -> None:
        log.error("failed %r: %s: %s", job.rel_path, code, message)
        await self._blocking(self._journal.fail, job.id, code, message)
        self._signal(EventType.JOB_FAILED, job, error=code, message=message)
        try:
            await self._blocking(outbox_for(self._live.current).write_error, job.rel_path, code,
                                 message, job.attempts)
        except OSError as exc:
            log.error("cannot write the error file for %r: %s", job.rel_path,
                      exc.strerror or exc)
