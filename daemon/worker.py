"""The worker: claim a job, check it is still the file that was admitted, transcribe, write.

The transcription is a callable passed in (path, cancel flag, reporter → transcript): the real
pipeline in the daemon, a scripted one in tests that are not about recognition. Every way a job
can end is handed to Outcomes as data (an exception class → a decision), as arq does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import LiveConfig
from .domain import Transcript
from .errors import Cancelled, InputError, ModelUnavailable, TransientError, daemon_short
from .events import EventBus, EventType
from .journal import Job, JournalUnavailable
from .logs import log_context
from .outcomes import Outcomes, identity_problem
from .pipeline import Reporter
from .progress import Degradations, JobReporter, JobSignals, RunningJob, RunningJobs
from .queue import JobQueue
from .threads import Blocking
from .uploads import input_path, input_root, outbox_of
from .writer import Outbox, OutboxFull, content_hash, outputs_intact

log = logging.getLogger(__name__)

Transcribe = Callable[[Path, threading.Event, Reporter], Transcript]
UNEXPECTED_BACKOFF_SECONDS = 5.0
OUTBOX_RETRY_FIRST_SECONDS = 1.0  # a full outbox is tried again after this, then twice as long
OUTBOX_RETRY_MAX_SECONDS = 30.0


class Worker:
    def __init__(self, live: LiveConfig, journal: JobQueue, running: RunningJobs,
                 bus: EventBus, blocking: Blocking, outcomes: Outcomes,
                 transcribe: Transcribe, stopping: asyncio.Event,
                 wake: asyncio.Event, degradations: Degradations) -> None:
        self._live = live
        self._journal = journal
        self._running = running
        self._bus = bus
        self._signal = JobSignals(bus)
        self._blocking = blocking
        self._outcomes = outcomes
        self._transcribe = transcribe
        self._stopping = stopping
        self._wake = wake
        self._degradations = degradations

    async def run(self, number: int) -> None:
        """Claim and run jobs until the stop; an unexpected error (a full disk under the
        journal, a stale NFS handle) is logged and retried, never the silent end of a worker."""
        while not self._stopping.is_set():
            try:
                self._wake.clear()  # before the claim, so an admission during it is not missed
                job = await self._blocking(self._journal.claim)
                if job is None:
                    await self._idle_wait()
                    continue
                with log_context(job_id=job.id):
                    await self._run_job(job)
            except JournalUnavailable:  # said once by the journal, and in /healthz
                await asyncio.sleep(UNEXPECTED_BACKOFF_SECONDS)
            except Exception:
                log.exception("worker %d: unexpected error; going on in %.0f s", number,
                              UNEXPECTED_BACKOFF_SECONDS)
                await asyncio.sleep(UNEXPECTED_BACKOFF_SECONDS)

    async def _idle_wait(self) -> None:
        due = await self._blocking(self._journal.next_due)
        timeout = 5.0 if due is None else min(5.0, max(0.05, due - time.time()))
        waiters = [asyncio.ensure_future(self._wake.wait()),
                   asyncio.ensure_future(self._stopping.wait())]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    async def _run_job(self, job: Job) -> None:
        config = self._live.current
        path = input_path(config, job)  # the inbox's file, or an upload's in state_dir
        if self._stopping.is_set():
            await self._blocking(self._journal.requeue, job.id)
            return
        if not await self._blocking(input_root(config, job).is_dir):  # a share that is away:
            await self._blocking(self._journal.defer, job.id, config.watch.poll_interval)
            return  # set aside, not charged, while other folders' jobs go on
        try:
            problem = await self._blocking(identity_problem, job, path)
        except OSError as exc:
            await self._outcomes.retry_or_fail(job, "io_error",
                                               f"cannot read the file: {exc.strerror}")
            return
        if problem:
            code, reason = problem
            await self._outcomes.canceled(job, reason, code)
            return
        if job.written is not None and await self._done_earlier(job, job.written):
            return
        run = self._running.start(job)
        log.info("started %r (attempt %d of %d)", job.rel_path, job.attempts,
                 config.jobs.max_attempts)
        self._signal(EventType.JOB_STARTED, job, max_attempts=config.jobs.max_attempts)
        try:
            await self._process(run, path)
        finally:
            self._running.end(job.id)

    async def _process(self, run: RunningJob, path: Path) -> None:
        job, started = run.job, time.monotonic()
        reporter = JobReporter(run, self._bus, self._degradations)
        try:
            transcript = await self._blocking(self._transcribe, path, run.cancel, reporter)
            reporter.writing()
            outputs = await self._write(run, transcript, time.monotonic() - started)
        except Exception as exc:  # every failure is data for one decision below
            await self._failed(run, exc)
        else:
            await self._outcomes.done(job, transcript, outputs, time.monotonic() - started,
                                      reporter)

    async def _failed(self, run: RunningJob, exc: Exception) -> None:
        job, outcomes = run.job, self._outcomes
        if daemon_short(exc):  # out of descriptors: not the job's fault
            await outcomes.short(job, str(exc))
            await asyncio.sleep(self._live.current.jobs.retry_backoff_seconds)
        elif isinstance(exc, Cancelled):
            if self._stopping.is_set():
                await outcomes.interrupted(job)
            else:
                await outcomes.canceled(job, run.cancel_reason or str(exc) or "canceled")
        elif isinstance(exc, InputError):
            await outcomes.fail(job, exc.code, str(exc))
        elif isinstance(exc, (TransientError, ModelUnavailable)):
            await outcomes.retry_or_fail(job, exc.code, str(exc))
        elif isinstance(exc, MemoryError):
            await outcomes.retry_or_fail(job, "out_of_memory", "ran out of memory")
        else:  # an unexpected bug must not kill the daemon or loop forever
            log.error("unexpected error on %r", job.rel_path, exc_info=exc)
            await outcomes.retry_or_fail(job, "internal", f"{type(exc).__name__}: {exc}")

    async def _done_earlier(self, job: Job, written: dict[str, Any]) -> bool:
        """A job killed after its outputs' renames and before the journal recorded it done:
        when every output it noted is still whole, it is done without running the models
        again. Otherwise the note is stale and forgotten, and the job runs as usual."""
        if await self._blocking(outputs_intact, written.get("outputs", {})):
            await self._outcomes.done_earlier(job, written)
            return True
        try:  # forgotten, so a crash in this run is charged as usual (Journal.recover)
            await self._blocking(self._journal.record_written, job.id, None)
        except JournalUnavailable:  # a note that does not match harms nothing meanwhile
            pass
        return False

    async def _write(self, run: RunningJob, transcript: Transcript,
                     elapsed: float) -> list[str]:
        job, outbox = run.job, outbox_of(self._live.current, run.job)
        if transcript.no_speech:
            await self._blocking(outbox.clear_error, job.rel_path)
            return []
        planned = await self._blocking(outbox.plan, job.rel_path, transcript)
        await self._blocking(self._note_written, job, transcript, planned, elapsed)
        await self._write_when_room(run, outbox, planned)
        return [str(p) for p in planned]

    def _note_written(self, job: Job, transcript: Transcript, planned: dict[Path, str],
                      elapsed: float) -> None:
        """Tell the journal what is about to be renamed into place (see _done_earlier)."""
        written = {"outputs": {str(p): content_hash(text) for p, text in planned.items()},
                   "language": transcript.language, "audio_seconds": transcript.duration,
                   "processing_seconds": elapsed, "cues": len(transcript.cues),
                   "track": dict(transcript.track) if transcript.track else None}
        try:
            self._journal.record_written(job.id, written)
        except JournalUnavailable as exc:  # the outcome waits for the journal anyway
            log.warning("writing the outputs of %r unnoted (%s): a crash before the journal "
                        "records it would transcribe it again", job.rel_path, exc)

    async def _write_when_room(self, run: RunningJob, outbox: Outbox,
                               planned: dict[Path, str]) -> None:
        """A full outbox is no job's fault and would fail every job alike: the job keeps its
        transcript and waits (running, not charged; /healthz says "outbox full"), trying the
        write again with a growing pause until it works, the daemon stops or it is canceled."""
        delay = OUTBOX_RETRY_FIRST_SECONDS
        while True:
            try:
                await self._blocking(outbox.write_planned, run.job.rel_path, planned)
            except OutboxFull as exc:
                self._degradations.report("outbox", f"outbox full: {exc} ({outbox.root})",
                                          run.job.id, holds_jobs=True)
                await self._pause(run, delay)
                delay = min(delay * 2, OUTBOX_RETRY_MAX_SECONDS)
            else:
                self._degradations.clear("outbox")
                return

    async def _pause(self, run: RunningJob, seconds: float) -> None:
        """Sleep up to `seconds`; Cancelled as soon as the job is canceled or the daemon
        stops (the stop requeues it, uncharged)."""
        deadline = time.monotonic() + seconds
        while not (self._stopping.is_set() or run.cancel.is_set()):
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(min(0.5, seconds))
        raise Cancelled(run.cancel_reason or "canceled")
