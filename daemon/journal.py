"""The durable job queue: SQLite in WAL mode, one row per input identity.

Identity is the relative path, size and mtime (the inode is recorded but not part of it: SMB and
NFS remounts renumber inodes, and a library must not be transcribed again after a remount). A
finished identity is never processed again; a changed file is a new identity and a new job.

States: queued → running → done | failed | retry_wait (→ queued again when due) | canceled |
skipped. A job left `running` by a crash is requeued at start, and its attempt stays charged, so
a file that kills the process is retried `max_attempts` times and then failed, not forever.

The interface is narrow on purpose (admit, claim, finish, fail, retry_later, requeue, cancel,
queries) so that a later backend can put the queue on a shared engine. Methods are blocking and
thread-safe; the daemon calls them from worker threads, never on the event loop.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "retry_wait", "done", "failed", "canceled", "skipped")
FINAL_STATES = ("done", "failed", "canceled", "skipped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    rel_path        TEXT NOT NULL,
    size            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    inode           INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    next_attempt_at REAL,
    error           TEXT,
    message         TEXT,
    outputs         TEXT NOT NULL DEFAULT '[]',
    language        TEXT,
    result          TEXT,
    audio_seconds   REAL,
    processing_seconds REAL,
    UNIQUE (rel_path, size, mtime_ns)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, next_attempt_at, created_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Identity:
    rel_path: str
    size: int
    mtime_ns: int
    inode: int = 0


@dataclass(frozen=True)
class Job:
    id: str
    rel_path: str
    size: int
    mtime_ns: int
    inode: int
    state: str
    attempts: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    next_attempt_at: float | None
    error: str | None
    message: str | None
    outputs: list[str]
    language: str | None
    result: str | None
    audio_seconds: float | None
    processing_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["outputs"] = json.loads(data["outputs"] or "[]")
    return Job(**data)


class Journal:
    def __init__(self, path: Path, max_attempts: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL survives a process crash; a power cut may lose the last commits, which
        # only means a rescan finds the file again (or skip_existing skips it).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self)

    # ---------------------------------------------------------------- lifecycle

    def recover(self) -> tuple[int, int]:
        """After a crash: `running` jobs go back to the queue, or fail when out of attempts."""
        now = time.time()
        with self._tx() as db:
            failed = db.execute(
                "UPDATE jobs SET state='failed', error='crashed', finished_at=?, updated_at=?,"
                " message='the daemon stopped abruptly while processing this file '"
                " || attempts || ' times' WHERE state='running' AND attempts >= ?",
                (now, now, self.max_attempts)).rowcount
            requeued = db.execute(
                "UPDATE jobs SET state='queued', updated_at=? WHERE state='running'",
                (now,)).rowcount
        return requeued, failed

    # ---------------------------------------------------------------- intake

    def known(self, identity: Identity) -> bool:
        """Has this identity a job? (One canceled because its file had vanished does not count:
        a share that comes back brings it back.)"""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM jobs WHERE rel_path=? AND size=? AND mtime_ns=? AND NOT"
                " (state='canceled' AND error='vanished')",
                (identity.rel_path, identity.size, identity.mtime_ns)).fetchone()
        return row is not None

    def outputs_of(self, rel_path: str) -> set[str]:
        """Every output path earlier jobs of this input path wrote (to tell ours from others')."""
        with self._lock:
            rows = self._db.execute("SELECT outputs FROM jobs WHERE rel_path=? AND state='done'",
                                    (rel_path,)).fetchall()
        return {out for row in rows for out in json.loads(row[0] or "[]")}

    def admit(self, identity: Identity, state: str = "queued",
              message: str | None = None) -> Job | None:
        """A new job for an unseen identity; None when this identity already has one."""
        now = time.time()
        job_id = secrets.token_hex(8)
        with self._tx() as db:
            revived = db.execute(
                "UPDATE jobs SET state='queued', attempts=0, error=NULL, message=NULL,"
                " finished_at=NULL, updated_at=? WHERE rel_path=? AND size=? AND mtime_ns=?"
                " AND state='canceled' AND error='vanished' RETURNING id",
                (now, identity.rel_path, identity.size, identity.mtime_ns)).fetchone()
            if revived is not None:
                job_id = revived[0]
            elif db.execute(
                    "INSERT OR IGNORE INTO jobs (id, rel_path, size, mtime_ns, inode, state,"
                    " created_at, updated_at, message, finished_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (job_id, identity.rel_path, identity.size, identity.mtime_ns,
                     identity.inode, state, now, now, message,
                     now if state in FINAL_STATES else None)).rowcount == 0:
                return None
        return self.get(job_id)

    # ---------------------------------------------------------------- work

    def claim(self, now: float | None = None) -> Job | None:
        """Take the oldest due job and mark it running, charging one attempt."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state='queued' OR (state='retry_wait' AND"
                " next_attempt_at <= ?) ORDER BY created_at LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, started_at=?,"
                " updated_at=?, next_attempt_at=NULL WHERE id=?", (now, now, row["id"]))
        return self.get(row["id"])

    # Every transition names the states it may start from, so a late writer (a stop racing a
    # finish, a cancel racing a claim) can never move a job backwards.

    def finish(self, job_id: str, outputs: list[str], language: str | None, result: str,
               audio_seconds: float, processing_seconds: float) -> None:
        self._set(job_id, "done", outputs=json.dumps(outputs), language=language, result=result,
                  audio_seconds=audio_seconds, processing_seconds=processing_seconds,
                  error=None, message=None, finished_at=time.time())

    def fail(self, job_id: str, code: str, message: str) -> None:
        self._set(job_id, "failed", error=code, message=message, finished_at=time.time())

    def retry_later(self, job_id: str, code: str, message: str, delay: float) -> None:
        self._set(job_id, "retry_wait", error=code, message=message,
                  next_attempt_at=time.time() + delay)

    def requeue(self, job_id: str) -> bool:
        """A running job back to the queue; a stop is not the file's fault, so its attempt is
        refunded."""
        with self._tx() as db:
            return db.execute(
                "UPDATE jobs SET state='queued', updated_at=?, attempts=MAX(attempts - 1, 0)"
                " WHERE id=? AND state='running'", (time.time(), job_id)).rowcount == 1

    def reset(self, job_id: str) -> bool:
        """A finished job back to the queue with fresh attempts (an operator's retry)."""
        with self._tx() as db:
            return db.execute(
                "UPDATE jobs SET state='queued', attempts=0, error=NULL, message=NULL,"
                " next_attempt_at=NULL, finished_at=NULL, updated_at=? WHERE id=? AND state IN"
                " ('failed', 'canceled', 'done', 'skipped')", (time.time(), job_id)).rowcount == 1

    def cancel(self, job_id: str, reason: str, code: str = "canceled",
               states: tuple[str, ...] = ("running",)) -> bool:
        """Cancel a job that is in one of `states`; False if it had moved on meanwhile."""
        return self._set(job_id, "canceled", error=code, message=reason,
                         finished_at=time.time(), from_states=states)

    def _set(self, job_id: str, state: str, from_states: tuple[str, ...] = ("running",),
             **fields: Any) -> bool:
        fields["state"] = state
        fields["updated_at"] = time.time()
        names = ", ".join(f"{k}=?" for k in fields)
        marks = ", ".join("?" for _ in from_states)
        with self._tx() as db:
            return db.execute(
                f"UPDATE jobs SET {names} WHERE id=? AND state IN ({marks})",
                (*fields.values(), job_id, *from_states)).rowcount == 1

    # ---------------------------------------------------------------- meta

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key)"
                       " DO UPDATE SET value=excluded.value", (key, value))

    # ---------------------------------------------------------------- queries

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list_jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        query, args = "SELECT * FROM jobs", list[Any]()
        if state:
            query += " WHERE state=?"
            args.append(state)
        query += " ORDER BY updated_at DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [_job(r) for r in self._db.execute(query, args).fetchall()]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def next_due(self) -> float | None:
        """When the earliest waiting retry becomes due (unix time), if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM jobs WHERE state='retry_wait'").fetchone()
        return row[0]


class _Transaction:
    """`with journal._tx() as db:` — the lock plus BEGIN IMMEDIATE … COMMIT/ROLLBACK."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def __enter__(self) -> sqlite3.Connection:
        self._journal._lock.acquire()
        try:
            self._journal._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._journal._lock.release()  # a failed BEGIN (busy, disk full) must not wedge us
            raise
        return self._journal._db

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        db = self._journal._db
        try:
            db.execute("ROLLBACK" if exc_type else "COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT leaves the transaction open: end it
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        finally:
            self._journal._lock.release()
