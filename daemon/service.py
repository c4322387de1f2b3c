"""The composition root: builds every part from the Config and runs startup → loop → shutdown.

Like uvicorn's server: a linear lifecycle, the first signal asks to stop (intake stops, running
jobs are cancelled at the next safe point and requeued without charging an attempt), a second
signal leaves at once. `burst=True` returns when the queue is empty, which makes the forever-loop
testable, as in arq.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import fcntl
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, load_config
from .domain import Transcript
from .errors import (
    Cancelled,
    ConfigError,
    InputError,
    ModelUnavailable,
    SubwatchError,
    TransientError,
)
from .events import EventBus
from .journal import Identity, Job, Journal
from .logs import log_context, setup_logging
from .metrics import Metrics
from .models import ModelCache, whisper_spec
from .notify import Notifier
from .pipeline import Pipeline, expected_language
from .progress import JobReporter, RunningJob
from .watcher import Settled, Watcher
from .writer import Outbox, sweep_temp_files

log = logging.getLogger(__name__)

# Values a running daemon cannot change in place (SIGHUP names them; a restart applies them).
WORKER_BACKOFF_SECONDS = 5.0

RESTART_ONLY = ("paths", "models", "whisper", "vad", "separation", "sensevoice", "watch.mode",
                "watch.recursive",
                "jobs.workers", "http.host", "http.port", "http.history_size")


def _value(config: Config, name: str) -> Any:
    for part in name.split("."):
        config = getattr(config, part)
    return config


class AlreadyRunning(SubwatchError):
    code = "already_running"


class StateLock:
    """One daemon per state_dir: two would claim the same jobs and write the same outputs."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(state_dir / "subwatch.lock", "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise AlreadyRunning(
                f"another subwatch is already running with state_dir {str(state_dir)!r}") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()

    def release(self) -> None:
        self._fh.close()


class Service:
    def __init__(self, config: Config, burst: bool = False,
                 cache: ModelCache | None = None) -> None:
        self.config = config
        self.burst = burst
        self.started_at = time.time()
        self.ready = False
        self.stopping = asyncio.Event()
        self.running: dict[str, RunningJob] = {}
        self.cache = cache or ModelCache(config.models.cache_size,
                                         config.models.memory_threshold)
        self.outbox = Outbox(config.paths.outbox, config.output.name_template,
                             config.output.formats)
        self._db: Journal | None = None
        self.bus = EventBus(config.http.history_size)
        self.metrics = Metrics(self)
        self.bus.on_publish.append(self.metrics.on_event)
        self.watcher: Watcher | None = None
        self._pipeline: Pipeline | None = None
        self._lock: StateLock | None = None
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.jobs.workers + 4, thread_name_prefix="subwatch")
        self._tasks: list[asyncio.Task[Any]] = []
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        self._web: Any = None
        self.http_port: int | None = None
        self.notifier = Notifier()
        self._signals = 0

    @property
    def journal(self) -> Journal:
        """The open journal (between startup and shutdown)."""
        if self._db is None:
            raise RuntimeError("the service has not started")
        return self._db

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise RuntimeError("the service has not started")
        return self._pipeline

    # ------------------------------------------------------------------ lifecycle

    async def run(self, install_signals: bool = True) -> None:
        if install_signals:
            self._install_signals()
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        cfg = self.config
        self._lock = StateLock(cfg.paths.state_dir)
        cfg.paths.outbox.mkdir(parents=True, exist_ok=True)
        self._db = Journal(cfg.paths.state_dir / "journal.sqlite3", cfg.jobs.max_attempts)
        last_id = int(await self._blocking(self.journal.get_meta, "last_event_id", "0") or 0)
        self.bus.continue_after(last_id)
        self.bus.bind(asyncio.get_running_loop())
        requeued, failed = await self._blocking(self.journal.recover)
        if requeued or failed:
            log.warning("recovered after an abrupt stop: %d job(s) requeued, %d failed for good",
                        requeued, failed)
        swept = await self._blocking(sweep_temp_files, cfg.paths.outbox)
        if swept:
            log.info("removed %d temp file(s) left in the outbox", swept)
        await self._prepare_models()
        from .web import start_web

        self._web = await start_web(self)
        self.watcher = Watcher(cfg.paths.inbox, cfg.watch, self._is_known, self._admit,
                               self._blocking)
        self._tasks.append(asyncio.create_task(self.watcher.run(), name="watcher"))
        for n in range(cfg.jobs.workers):
            self._tasks.append(asyncio.create_task(self._worker(n), name=f"worker-{n}"))
        await self.watcher.first_scan_done.wait()  # ready means: what was there is found
        self._tasks.append(asyncio.create_task(self._watch_health(), name="health"))
        self._tasks.append(asyncio.create_task(self._unload_idle_models(), name="idle-unload"))
        self.ready = True
        self.notifier.ready(await self._blocking(self.status_line))
        self._tasks.append(asyncio.create_task(self._systemd_updates(), name="systemd"))
        log.info("subwatch %s ready: watching %r (%s mode), writing to %r", __version__,
                 str(cfg.paths.inbox), self.watcher.mode, str(cfg.paths.outbox))

    async def _prepare_models(self) -> None:
        """Resolve the Whisper model now: a model that cannot be had stops the start, not jobs."""
        cfg = self.config
        spec = await self._blocking(whisper_spec, cfg.whisper, cfg.models, cfg.jobs.workers)
        self._pipeline = Pipeline(cfg, self.cache, spec)
        if "vad" in cfg.models.preload:
            await self._blocking(self.pipeline.vad_model)
        if "whisper" in cfg.models.preload:
            await self._blocking(self.pipeline.whisper_model)

    async def main_loop(self) -> None:
        if self.burst:
            await self._until_idle()
        else:
            await self.stopping.wait()

    async def _until_idle(self) -> None:
        """Burst mode: return once the watcher has nothing pending and the queue is drained."""
        quiet = 0
        while not self.stopping.is_set():
            await asyncio.sleep(0.2)
            counts = await self._blocking(self.journal.counts)
            busy = counts["queued"] + counts["running"] + len(self.running)
            pending = self.watcher.describe()["pending"] if self.watcher else 0
            due = await self._blocking(self.journal.next_due)
            quiet = quiet + 1 if not (busy or pending or due) else 0
            if quiet >= 5:
                return

    async def shutdown(self) -> None:
        was_ready, self.ready = self.ready, False
        self.notifier.stopping()
        if was_ready:
            log.info("stopping: no new files are taken")
        self.stopping.set()
        if self.watcher:
            self.watcher.pause()
        for run in self.running.values():
            run.cancel.set()
        workers = [t for t in self._tasks if t.get_name().startswith("worker")]
        if workers:
            await asyncio.wait(workers, timeout=self.config.jobs.grace_seconds)
            for run in list(self.running.values()):
                log.warning("job %s did not stop within %.0f s; it will run again after restart",
                            run.job.id, self.config.jobs.grace_seconds)
                await self._blocking(self.journal.requeue, run.job.id)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.bus.close_all("the daemon is stopping")
        if self._web is not None:
            await self._web.cleanup()
        if self._db:
            await self._blocking(self._save_event_id)
            self._db.close()
        if self._lock:
            self._lock.release()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if was_ready:
            log.info("stopped")

    def _save_event_id(self) -> None:
        self.journal.set_meta("last_event_id", str(self.bus.last_id))

    async def _watch_health(self) -> None:
        """Publish signal.degraded whenever health changes (watcher trouble, recovery)."""
        previous: tuple[bool, list[str]] = (True, [])
        while True:
            await asyncio.sleep(1.0)
            current = self.health()
            if current != previous and not self.stopping.is_set():
                ok, reasons = current
                self.bus.publish("signal.degraded", None, {"degraded": not ok,
                                                           "reasons": reasons})
                previous = current

    async def _systemd_updates(self) -> None:
        """WATCHDOG=1 from the event loop itself (a blocked loop stops the pings, and systemd
        restarts the daemon), and STATUS= whenever the queue or the running job changes."""
        interval = self.notifier.watchdog_seconds
        tick = min(interval, 2.0) if interval else 2.0
        last_status, last_ping = "", 0.0
        while self.notifier.enabled:
            now = time.monotonic()
            if interval and now - last_ping >= interval:
                self.notifier.watchdog()
                last_ping = now
            line = await self._blocking(self.status_line)
            if line != last_status:
                self.notifier.status(line)
                last_status = line
            await asyncio.sleep(tick)

    def status_line(self) -> str:
        """One line for `systemctl status`: the queue and the running job."""
        counts = self._db.counts() if self._db else {}
        line = (f"{counts.get('queued', 0) + counts.get('retry_wait', 0)} queued, "
                f"{len(self.running)} running, {counts.get('done', 0)} done, "
                f"{counts.get('failed', 0)} failed")
        for run in list(self.running.values())[:1]:
            line += f"; {run.job.rel_path!r} {run.phase} {run.percent:.0f}%"
        return line

    async def _unload_idle_models(self) -> None:
        """models.idle_unload_seconds: give memory back when nothing has run for a while."""
        idle = self.config.models.idle_unload_seconds
        if idle <= 0:
            return
        while True:
            await asyncio.sleep(min(60.0, max(0.5, idle / 4)))
            if not self.running:  # a long job's model is in use even if fetched long ago
                await self._blocking(self.cache.unload_idle, idle)

    @property
    def threads_busy(self) -> bool:
        """True when a thread is still inside a call the process must abandon (an inference the
        grace period did not see end): the interpreter would otherwise wait for it at exit."""
        return any(not work.done() for work in list(self._inflight))

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_hup(self) -> None:
        task = asyncio.create_task(self.reload(), name="reload")
        self._tasks.append(task)

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file (SIGHUP): apply what can change safely, name the rest."""
        source = self.config.source
        if source is None:
            return {"applied": [], "restart_needed": [], "error": "no config file to re-read"}
        self.notifier.reloading()
        try:
            new = await self._blocking(load_config, source)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready(await self._blocking(self.status_line))
            return {"applied": [], "restart_needed": [], "error": str(exc)}
        old = self.config
        restart = [name for name in RESTART_ONLY if _value(old, name) != _value(new, name)]
        merged = dataclasses.replace(
            old, watch=dataclasses.replace(new.watch, mode=old.watch.mode,
                                           recursive=old.watch.recursive),
            output=new.output, logging=new.logging,
            jobs=dataclasses.replace(new.jobs, workers=old.jobs.workers),
            http=dataclasses.replace(old.http, token=new.http.token,
                                     allowed_hosts=new.http.allowed_hosts))
        applied = [f.name for f in dataclasses.fields(Config)
                   if getattr(merged, f.name) != getattr(old, f.name)]
        self.apply_config(merged)
        self.notifier.ready(await self._blocking(self.status_line))
        log.info("reloaded %r: applied %s%s", str(source), ", ".join(applied) or "nothing",
                 f"; needs a restart: {', '.join(restart)}" if restart else "")
        return {"applied": applied, "restart_needed": restart}

    def apply_config(self, config: Config) -> None:
        """Switch to a config whose restart-only values equal the running ones."""
        self.config = config
        setup_logging(config.logging)
        if self.watcher:
            self.watcher.reconfigure(config.watch)
        if self._db:
            self._db.max_attempts = config.jobs.max_attempts
        self.outbox = Outbox(config.paths.outbox, config.output.name_template,
                             config.output.formats)
        if self._pipeline:
            self._pipeline.reconfigure(config)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second %s: leaving now", sig.name)
            logging.shutdown()
            os._exit(1)
        log.info("%s received: finishing up (send it again to leave at once)", sig.name)
        self.stopping.set()

    # ------------------------------------------------------------------ helpers

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work off the event loop, carrying the log context into the thread."""
        ctx = contextvars.copy_context()
        work = self._executor.submit(ctx.run, fn, *args)
        self._inflight.add(work)
        work.add_done_callback(self._inflight.discard)
        return await asyncio.wrap_future(work)

    # ------------------------------------------------------------------ intake

    def _is_known(self, rel_path: str, st: os.stat_result) -> bool:
        """Called from the scan thread: is this file's current identity in the journal?"""
        return self.journal.known(Identity(rel_path, st.st_size, st.st_mtime_ns, st.st_ino))

    async def _admit(self, item: Settled) -> None:
        identity = Identity(item.rel_path, item.size, item.mtime_ns, item.inode)
        job = await self._blocking(self._admit_blocking, identity)
        if job is not None:
            self._wake.set()

    def _admit_blocking(self, identity: Identity) -> Job | None:
        if self.config.jobs.skip_existing:
            existing = self.outbox.existing_subtitle(identity.rel_path,
                                                     expected_language(self.config.whisper))
            # our own subtitle for an earlier version of this file does not count: a changed
            # file is a new identity and is transcribed again
            if existing is not None and str(existing) not in self.journal.outputs_of(
                    identity.rel_path):
                job = self.journal.admit(identity, state="skipped",
                                         message=f"subtitle exists: {existing.name}")
                if job:
                    log.info("skipped %r: %s already exists", identity.rel_path, existing.name)
                    self._signal("job_skipped", job, reason=job.message)
                return None
        job = self.journal.admit(identity)
        if job:
            log.info("queued %r as job %s", identity.rel_path, job.id)
            self._signal("job_queued", job)
        return job

    def _signal(self, kind: str, job: Job, **payload: Any) -> None:
        self.bus.publish(f"signal.{kind}", job.id,
                         {"input": job.rel_path, "attempt": job.attempts, **payload})

    # ------------------------------------------------------------------ work

    async def _worker(self, number: int) -> None:
        """Claim and run jobs until the stop; an unexpected error (a full disk under the
        journal, a stale NFS handle) is logged and retried, never the silent end of a worker."""
        while not self.stopping.is_set():
            try:
                self._wake.clear()  # before the claim, so an admission during it is not missed
                job = await self._blocking(self.journal.claim)
                if job is None:
                    await self._idle_wait()
                    continue
                with log_context(job_id=job.id):
                    await self._run_job(job)
            except Exception:
                log.exception("worker %d: unexpected error; going on in %.0f s", number,
                              WORKER_BACKOFF_SECONDS)
                await asyncio.sleep(WORKER_BACKOFF_SECONDS)

    async def _idle_wait(self) -> None:
        due = await self._blocking(self.journal.next_due)
        timeout = 5.0 if due is None else min(5.0, max(0.05, due - time.time()))
        waiters = [asyncio.ensure_future(self._wake.wait()),
                   asyncio.ensure_future(self.stopping.wait())]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    async def _run_job(self, job: Job) -> None:
        path = self.config.paths.inbox / job.rel_path
        if self.stopping.is_set() or not await self._blocking(self._inbox_available):
            await self._blocking(self.journal.requeue, job.id)
            if not self.stopping.is_set():
                await asyncio.sleep(self.config.watch.poll_interval)
            return
        try:
            problem = await self._blocking(self._identity_problem, job, path)
        except OSError as exc:
            await self._retry_or_fail(job, "io_error", f"cannot read the file: {exc.strerror}")
            return
        if problem:
            code, reason = problem
            log.info("canceled %r: %s", job.rel_path, reason)
            await self._blocking(self.journal.cancel, job.id, reason, code)
            self._signal("job_canceled", job, reason=reason)
            return
        run = RunningJob(job)
        self.running[job.id] = run
        log.info("started %r (attempt %d of %d)", job.rel_path, job.attempts,
                 self.config.jobs.max_attempts)
        self._signal("job_started", job, max_attempts=self.config.jobs.max_attempts)
        try:
            await self._process(run, path)
        finally:
            self.running.pop(job.id, None)

    def _inbox_available(self) -> bool:
        return self.config.paths.inbox.is_dir()

    @staticmethod
    def _identity_problem(job: Job, path: Path) -> tuple[str, str] | None:
        """(code, reason) when the file is not the one admitted. A vanished file is canceled
        as `vanished`, which the journal revives if it comes back (a share that unmounted
        under its mount point looks exactly like this)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return "vanished", "the input file is gone"
        if (st.st_size, st.st_mtime_ns) != (job.size, job.mtime_ns):
            return "superseded", "the input file changed; its new version is a new job"
        return None

    async def _process(self, run: RunningJob, path: Path) -> None:
        job = run.job
        started = time.monotonic()
        try:
            reporter = JobReporter(run, self.bus)
            transcript = await self._blocking(self.pipeline.run, path, run.cancel, reporter)
            reporter.progress("write", 0.0, "writing subtitles")
            outputs = await self._blocking(self._write, job, transcript)
        except Cancelled as exc:
            await self._on_cancelled(job, exc)
        except InputError as exc:
            await self._fail(job, exc.code, str(exc))
        except (TransientError, ModelUnavailable) as exc:
            await self._retry_or_fail(job, exc.code, str(exc))
        except MemoryError:
            await self._retry_or_fail(job, "out_of_memory", "ran out of memory")
        except Exception as exc:  # an unexpected bug must not kill the daemon or loop forever
            log.exception("unexpected error on %r", job.rel_path)
            await self._retry_or_fail(job, "internal", f"{type(exc).__name__}: {exc}")
        else:
            elapsed = time.monotonic() - started
            await self._done(job, transcript, outputs, elapsed)

    def _write(self, job: Job, transcript: Transcript) -> list[str]:
        if transcript.no_speech:
            self.outbox.error_path(job.rel_path).unlink(missing_ok=True)
            return []
        return [str(p) for p in self.outbox.write(job.rel_path, transcript)]

    async def _done(self, job: Job, transcript: Transcript, outputs: list[str],
                    elapsed: float) -> None:
        result = "no_speech" if transcript.no_speech else "ok"
        await self._blocking(self.journal.finish, job.id, outputs, transcript.language, result,
                             transcript.duration, elapsed)
        speed = transcript.duration / elapsed if elapsed > 0 else 0.0
        log.info("done %r: %s, %d cues, %.1f s of audio in %.1f s (%.1fx)", job.rel_path,
                 result, len(transcript.cues), transcript.duration, elapsed, speed)
        log.info("models: %s", "; ".join(
            f"{key.split('/')[0]} loads {st['load_count']} hits {st['hits']} inferences "
            f"{st['inference_count']} avg {st['avg_inference_seconds']} s"
            for key, st in self.cache.snapshot()["stats"].items()))
        self.bus.publish("progress.overall", job.id, {"phase": "done", "percent": 100.0,
                                                      "message": result, "status": "done"})
        self._signal("job_done", job, result=result, outputs=outputs,
                     language=transcript.language, cues=len(transcript.cues),
                     audio_seconds=round(transcript.duration, 3),
                     processing_seconds=round(elapsed, 3))
        await self._blocking(self._after_success, job)

    def _after_success(self, job: Job) -> None:
        """on_success: keep the input, move it to inbox/.done/, or delete it."""
        action = self.config.jobs.on_success
        src = self.config.paths.inbox / job.rel_path
        try:
            if action != "keep" and self._identity_problem(job, src) is not None:
                log.info("left %r in place (on_success = %s): it changed while it was "
                         "transcribed", job.rel_path, action)
                return
            if action == "move":
                dest = self.config.paths.inbox / ".done" / job.rel_path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(src, dest)
            elif action == "delete":
                src.unlink()
        except OSError as exc:
            log.warning("could not %s %r after success: %s", action, job.rel_path,
                        exc.strerror or exc)

    async def _on_cancelled(self, job: Job, exc: Cancelled) -> None:
        if self.stopping.is_set():
            log.info("interrupted %r by the stop; it is back in the queue", job.rel_path)
            await self._blocking(self.journal.requeue, job.id)
        else:
            run = self.running.get(job.id)
            reason = (run.cancel_reason if run else "") or str(exc) or "canceled"
            log.info("canceled %r: %s", job.rel_path, reason)
            await self._blocking(self.journal.cancel, job.id, reason)
            self._signal("job_canceled", job, reason=reason)

    async def _retry_or_fail(self, job: Job, code: str, message: str) -> None:
        if job.attempts >= self.config.jobs.max_attempts:
            await self._fail(job, code, message)
            return
        delay = self.config.jobs.retry_backoff_seconds * (2 ** (job.attempts - 1))
        log.warning("attempt %d on %r failed (%s: %s); retrying in %.0f s", job.attempts,
                    job.rel_path, code, message, delay)
        await self._blocking(self.journal.retry_later, job.id, code, message, delay)
        self._signal("job_retrying", job, error=code, message=message, retry_in_seconds=delay)

    async def _fail(self, job: Job, code: str, message: str) -> None:
        log.error("failed %r: %s: %s", job.rel_path, code, message)
        await self._blocking(self.journal.fail, job.id, code, message)
        self._signal("job_failed", job, error=code, message=message)
        try:
            await self._blocking(self.outbox.write_error, job.rel_path, code, message,
                                 job.attempts)
        except OSError as exc:
            log.error("cannot write the error file for %r: %s", job.rel_path,
                      exc.strerror or exc)

    # ------------------------------------------------------------------ requests

    async def cancel_job(self, job_id: str) -> str | None:
        """Cancel a queued job now, or a running one at its next safe point; None if unknown."""
        run = self.running.get(job_id)
        if run is not None:
            run.cancel_reason = "canceled by request"
            run.cancel.set()
            return "canceling"
        job = await self._blocking(self.journal.get, job_id)
        if job is None:
            return None
        if job.state in ("queued", "retry_wait") and await self._blocking(
                self.journal.cancel, job.id, "canceled by request", "canceled",
                ("queued", "retry_wait")):
            self._signal("job_canceled", job, reason="canceled by request")
            return "canceled"
        if job.id in self.running:  # claimed meanwhile: stop it at its next safe point
            return await self.cancel_job(job.id)
        return (await self._blocking(self.journal.get, job_id) or job).state

    async def retry_job(self, job_id: str) -> str | None:
        """Queue a finished job again (failed, canceled, done, skipped) with fresh attempts."""
        job = await self._blocking(self.journal.get, job_id)
        if job is None:
            return None
        if await self._blocking(self.journal.reset, job_id):
            self._signal("job_queued", job, retry=True)
            self._wake.set()
            return "queued"
        return job.state

    # ------------------------------------------------------------------ views

    def health(self) -> tuple[bool, list[str]]:
        reasons = []
        if self.watcher and self.watcher.state in ("unavailable", "degraded"):
            reasons.append(self.watcher.last_error or f"watcher {self.watcher.state}")
        if self.stopping.is_set():
            reasons.append("stopping")
        elif not self.ready:
            reasons.append("starting")
        else:
            reasons += [f"internal task {t.get_name()} failed: {t.exception()!r}"
                        for t in self._tasks
                        if t.done() and not t.cancelled() and t.exception() is not None]
        return (not reasons, reasons)

    def status(self) -> dict[str, Any]:
        counts = self._db.counts() if self._db else {}
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "ready": self.ready,
            "watcher": self.watcher.describe() if self.watcher else None,
            "queue": counts,
            "running": [r.as_dict() for r in list(self.running.values())],
            "recent_failures": [
                {"id": j.id, "input": j.rel_path, "error": j.error, "message": j.message}
                for j in (self._db.list_jobs("failed", 5) if self._db else [])],
            "models": self.cache.snapshot(),
            "events": {"last_id": self.bus.last_id, "published": self.bus.published,
                       "subscribers": self.bus.subscriber_count},
            "settings": {"log_level": self.config.logging.level,
                         "settle_seconds": self.config.watch.settle_seconds,
                         "watch_mode": self.watcher.mode if self.watcher else None,
                         "workers": self.config.jobs.workers,
                         "formats": list(self.config.output.formats)},
        }
