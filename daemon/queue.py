"""The queue seam: the job operations the daemon's parts use, whatever holds the queue.

Two implementations pass one contract suite (tests/test_queue_contract.py): the SQLite journal
(daemon/journal.py, the embedded default: one process, no server) and Redis Streams with
consumer groups (daemon/cluster/, `[cluster] backend = "redis"`: several machines work one
library). The parts (intake, worker, outcomes, control, monitor, web) are typed against this
Protocol and never ask which one they hold.

Every method is blocking and thread-safe: the daemon calls them from its threads (`Blocking`),
never on the event loop. A backend that cannot be read or written just now (SQLite locked or
its disk full, Redis unreachable) raises JournalUnavailable, and `problem` says why until a
call works again; /healthz reports it as degraded and the callers retry.
"""

from __future__ import annotations

from typing import Any, Protocol

from .journal import Identity, Job


class JobQueue(Protocol):
    """Durable job states keyed by input identity; see daemon/journal.py for the states."""

    max_attempts: int  # a reload changes it in place

    @property
    def problem(self) -> str | None:
        """Why the last call failed, until one works again; None while all is well."""

    def close(self) -> None: ...

    def recover(self) -> tuple[int, list[Job]]:
        """Jobs whose worker died go back to the queue with their attempt still charged, or
        fail (`crashed`) when out of attempts: how many were requeued, and the jobs failed
        for good (they need their error files). SQLite: at start, every `running` job; Redis:
        also, at any time, entries no worker heartbeated for `cluster.claim_timeout`."""

    # ---------------------------------------------------------------- intake

    def known(self, identity: Identity) -> bool: ...

    def outputs_of(self, rel_path: str) -> set[str]: ...

    def admit(self, identity: Identity, state: str = "queued", message: str | None = None,
              *, kind: str = "file", priority: int = 0) -> Job | None:
        """A new job for an unseen identity; None when this identity already has one."""

    # ---------------------------------------------------------------- work

    def claim(self, now: float | None = None) -> Job | None:
        """The most urgent due job (highest priority first), running, one attempt charged."""

    def heartbeat(self, job_id: str) -> bool:
        """Keep a claimed job this worker's while it runs; False when it is not (any more)."""

    def record_written(self, job_id: str, written: dict[str, Any] | None) -> None: ...

    def finish(self, job_id: str, outputs: list[str], language: str | None, result: str,
               audio_seconds: float, processing_seconds: float,
               track: dict[str, Any] | None = None) -> bool:
        """False when the job was no longer this runner's (taken over, canceled)."""

    def fail(self, job_id: str, code: str, message: str) -> None: ...

    def retry_later(self, job_id: str, code: str, message: str, delay: float) -> None: ...

    def prioritize(self, job_id: str, priority: int) -> bool: ...

    def requeue(self, job_id: str) -> bool: ...

    def defer(self, job_id: str, delay: float) -> bool:
        """Running → waiting `delay` s, the attempt refunded (its folder is away)."""

    def reset(self, job_id: str) -> bool: ...

    def cancel(self, job_id: str, reason: str, code: str = "canceled",
               states: tuple[str, ...] = ("running",)) -> bool: ...

    # ---------------------------------------------------------------- queries

    def get(self, job_id: str) -> Job | None: ...

    def list_jobs(self, state: str | None = None, limit: int = 100) -> list[Job]: ...

    def counts(self) -> dict[str, int]: ...

    def next_due(self) -> float | None: ...

    def get_meta(self, key: str, default: str | None = None) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What /status shows of the backend (and, for a cluster, its nodes)."""
