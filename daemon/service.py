"""The composition root: builds every part from the Config, then runs startup → loop → shutdown.

Like uvicorn's server: a linear lifecycle, the first signal asks to stop (intake stops, running
jobs are cancelled at the next safe point and requeued without charging an attempt), a second
signal leaves at once. `burst=True` returns when the queue is empty, which makes the forever-loop
testable, as in arq. Every part is built, whole, in the constructor; startup only starts them.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from . import __version__
from .cluster import cluster_work, job_workers, open_queue, takes_jobs, watch
from .config import Config, LiveConfig
from .control import Control
from .errors import SubwatchError
from .events import EventBus
from .intake import Intake
from .integrations import integrations
from .journal import JournalUnavailable
from .libraries import LibraryWatchers
from .logs import setup_logging
from .metrics import Metrics
from .models import ModelCache
from .monitor import Lifecycle, Monitor
from .notify import Notifier
from .outcomes import Outcomes
from .pipeline import Pipeline
from .progress import Degradations, JobSignals, RunningJobs
from .threads import Blocking
from .uploads import UploadAware
from .watcher import Watcher
from .web import Api, WebServer
from .worker import Transcribe, Worker
from .writer import sweep_temp_files

log = logging.getLogger(__name__)

IDLE_CHECKS_TO_END_BURST = 5


class AlreadyRunning(SubwatchError):
    code = "already_running"


class StateLock:
    """One daemon per state_dir: two would claim the same jobs and write the same outputs."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)  # the journal is private
        self._fh = open(state_dir / "subwatch.lock", "a+")  # held open for the daemon's life
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
    """The daemon. `pipeline` replaces the transcription (tests that are not about it)."""

    def __init__(self, config: Config, burst: bool = False, cache: ModelCache | None = None,
                 pipeline: Transcribe | None = None) -> None:
        self.burst = burst
        self.live = LiveConfig(config)
        self.life = Lifecycle()
        self.cache = cache or ModelCache(config.models.cache_size, config.models.memory_threshold)
        self._lock = StateLock(config.paths.state_dir)
        try:
            self._build(config, pipeline)
        except BaseException:  # nothing half-built keeps the state_dir locked
            self._lock.release()
            raise
        self.live.subscribe(self._apply)

    def _build(self, config: Config, pipeline: Transcribe | None) -> None:
        self.journal = open_queue(config)  # SQLite, or Redis for a cluster ([cluster])
        self.bus = EventBus(config.http.history_size, history_bytes=config.http.history_bytes)
        self.blocking = Blocking(config.jobs.workers + 4)
        self.running = RunningJobs()
        self.degradations = Degradations(self.bus)
        self.notifier = Notifier()
        self._wake = asyncio.Event()
        self._signals = 0
        self.pipeline = Pipeline(config, self.cache, config.jobs.workers)
        self._transcribe: Transcribe = pipeline or UploadAware(self.live, self.pipeline, self.cache)
        self._prepare_models = pipeline is None and takes_jobs(config)
        self._build_parts(config)

    def _build_parts(self, config: Config) -> None:
        signals = JobSignals(self.bus)
        self.intake = Intake(self.live, self.journal, signals, self.blocking, self._wake)
        self.watcher = Watcher(config.paths.inbox, config.watch, self.intake.is_known,
                               self.intake.admit, self.blocking)
        self.libraries = LibraryWatchers(self.live, self.intake, self.blocking)  # issue 13
        self.monitor = Monitor(self.live, self.life, self.journal, self.running, self.bus,
                               self.cache, self.watcher, self.blocking, self.notifier,
                               self.degradations)
        self.metrics = Metrics(self.journal.counts, self.cache, self.bus, self.monitor.healthy,
                               self.life.lag)
        self.control = Control(self.live, self.journal, self.running, signals, self.blocking,
                               self._wake, self.notifier, self.monitor.status_line)
        self.outcomes = Outcomes(self.live, self.journal, signals, self.blocking, self.cache)
        self.worker = Worker(self.live, self.journal, self.running, self.bus, self.blocking,
                             self.outcomes, self._transcribe, self.life.stopping, self._wake,
                             self.degradations)
        peers = (self.live, self.journal, self.bus, self.intake, self.control, self.blocking)
        self.web = WebServer(Api(self.live, self.journal, self.bus, self.running, self.monitor,
                                 self.control, self.metrics, self.blocking, integrations(*peers)))

    @property
    def config(self) -> Config:
        return self.live.current

    @property
    def http_port(self) -> int | None:
        return self.web.port

    @property
    def stopping(self) -> asyncio.Event:
        return self.life.stopping

    @property
    def threads_busy(self) -> bool:
        return self.blocking.busy

    def _apply(self, config: Config) -> None:
        """A reloaded config reaches the parts that keep settings of their own."""
        setup_logging(config.logging)
        self.watcher.reconfigure(config.watch)
        self.journal.max_attempts = config.jobs.max_attempts
        self.pipeline.reconfigure(config)

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
        cfg.paths.outbox.mkdir(parents=True, exist_ok=True)
        last_id = int(await self.blocking(self.journal.get_meta, "last_event_id", "0") or 0)
        self.bus.continue_after(last_id)
        self.bus.bind(asyncio.get_running_loop())
        self._start_task(cluster_work(self, self._wake), "cluster")
        requeued, failed = await self.blocking(self.journal.recover)
        if requeued or failed:
            log.warning("recovered after an abrupt stop: %d job(s) requeued, %d failed for good",
                        requeued, len(failed))
        for job in failed:  # an error file, like every failure for good
            await self.outcomes.failed(job, job.error or "crashed", job.message or "")
        swept = await self.blocking(sweep_temp_files, cfg.paths.outbox)
        if swept:
            log.info("removed %d temp file(s) left in the outbox", swept)
        if self._prepare_models:  # a model that cannot be had stops the start, not jobs
            await self.blocking(self.pipeline.prepare)
        self._start_task(self.life.lag.run(), "loop-lag")
        await self.web.start()
        self._start_task(watch(cfg, self.watcher), "watcher")
        self.libraries.start(self.life, self.degradations)  # not awaited: a NAS may be slow
        for n in range(job_workers(cfg)):
            self._start_task(self.worker.run(n), f"worker-{n}")
        await self.watcher.first_scan_done.wait()  # ready means: what was there is found
        self._start_task(self.monitor.watch_health(), "health")
        self._start_task(self.monitor.unload_idle_models(), "idle-unload")
        self.life.ready = True
        self.notifier.ready(await self.blocking(self.monitor.status_line))
        self._start_task(self.monitor.systemd_updates(), "systemd")
        log.info("subwatch %s ready: watching %r (%s mode), writing to %r", __version__,
                 str(cfg.paths.inbox), self.watcher.mode, str(cfg.paths.outbox))

    def _start_task(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        self.life.tasks.append(asyncio.create_task(work, name=name))

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
            counts = await self.blocking(self.journal.counts)
            busy = counts["queued"] + counts["running"] + len(self.running)
            pending = self.watcher.describe()["pending"]
            due = await self.blocking(self.journal.next_due)
            quiet = quiet + 1 if not (busy or pending or due) else 0
            if quiet >= IDLE_CHECKS_TO_END_BURST:
                return

    async def shutdown(self) -> None:
        was_ready, self.life.ready = self.life.ready, False
        self.notifier.stopping()
        if was_ready:
            log.info("stopping: no new files are taken")
        self.stopping.set()
        self.watcher.pause()
        self.running.cancel_all()
        await self._stop_workers()
        for task in self.life.tasks:
            task.cancel()
        await asyncio.gather(*self.life.tasks, return_exceptions=True)
        self.bus.close_all("the daemon is stopping")
        await self.web.stop()
        await self._journal_write(self.journal.set_meta, "last_event_id", str(self.bus.last_id))
        self.journal.close()
        self._lock.release()
        self.blocking.shutdown()
        if was_ready:
            log.info("stopped")

    async def _stop_workers(self) -> None:
        """Give running jobs the grace period to reach a safe point; requeue the rest."""
        workers = [t for t in self.life.tasks if t.get_name().startswith("worker")]
        if not workers:
            return
        grace = self.config.jobs.grace_seconds
        await asyncio.wait(workers, timeout=grace)
        for run in self.running.values():
            log.warning("job %s did not stop within %.0f s; it will run again after restart",
                        run.job.id, grace)
            await self._journal_write(self.journal.requeue, run.job.id)

    async def _journal_write(self, write: Any, *args: Any) -> None:
        """A write on the way out: a journal that cannot take it (locked, full, corrupt) must
        not stop the stop; the start recovers what it missed (a `running` job is requeued)."""
        try:
            await self.blocking(write, *args)
        except JournalUnavailable as exc:
            log.warning("stopping without writing to the journal: %s", exc)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_hup(self) -> None:
        self._start_task(self.control.reload(), "reload")

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second %s: leaving now", sig.name)
            logging.shutdown()
            os._exit(1)
        log.info("%s received: finishing up (send it again to leave at once)", sig.name)
        self.stopping.set()
