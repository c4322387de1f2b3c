"""The durable job queue: SQLite in WAL mode, one row per input identity.

Identity is the relative path, size and mtime (the inode is recorded but not part of it: SMB and
NFS remounts renumber inodes, and a library must not be transcribed again after a remount). A
finished identity is never processed again; a changed file is a new identity and a new job.

States: queued → running → done | failed | retry_wait (→ queued again when due) | canceled |
skipped. A job left `running` by a crash is requeued at start, and its attempt stays charged when
it ran alone, so a file that kills the process is retried `max_attempts` times and then failed,
not forever (`recover` says how a crash with several jobs running is attributed).

The interface is narrow on purpose (admit, claim, finish, fail, retry_later, requeue, cancel,
queries) so that a later backend can put the queue on a shared engine. Methods are blocking and
thread-safe; the daemon calls them from worker threads, never on the event loop. They raise
JournalUnavailable when SQLite cannot read or write the file just now (locked, disk full) and
JournalCorrupt when it is not a database any more; `problem` says so to /healthz.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shlex
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TransientError

log = logging.getLogger(__name__)

STATES = ("queued", "running", "retry_wait", "done", "failed", "canceled", "skipped")
CRASH_SUSPECT = "crash_suspect"  # the error of a job that was running when the process died
FINAL_STATES = ("done", "failed", "canceled", "skipped")
# How long a write waits for another process's lock on the file (a backup, an operator's
# sqlite3 shell) before it gives up and is retried; reads (WAL: they never wait on a writer)
# wait less, so /status answers promptly whatever holds the file.
WRITE_WAIT_SECONDS = 5.0
READ_WAIT_SECONDS = 2.0
CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")  # sqlite_errorname of a file SQLite cannot read


class JournalUnavailable(TransientError):
    """The journal cannot be read or written just now: another process holds its lock, its
    disk is full (SQLite says so with its own error, not an OSError), an I/O error. Never a
    file's fault: what was to be recorded waits for the journal (Outcomes, Intake)."""

    def __init__(self, message: str, code: str = "journal_unavailable") -> None:
        super().__init__(code, message)


class JournalCorrupt(JournalUnavailable):
    """journal.sqlite3 is not a database SQLite can read. No restart changes that: at start
    the daemon stops with this one line (exit 3, which the systemd unit does not restart);
    README "Journal trouble" says what moving it aside costs."""

    def __init__(self, path: Path, detail: str) -> None:
        aside = path.with_name(path.name + ".broken")
        super().__init__(
            f"the journal {path} is corrupt ({detail}); move it aside: mv"
            f" {shlex.quote(str(path))} {shlex.quote(str(aside))}; subwatch will start a fresh"
            " journal and re-admit the inbox", "journal_corrupt")

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
    written         TEXT,
    kind            TEXT NOT NULL DEFAULT 'file',
    track           TEXT,
    priority        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (rel_path, size, mtime_ns)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, next_attempt_at, created_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# The hot reads take their few rows from an index in order, so a deep queue (a library dropped
# at once) costs them nothing: with 10 000 queued, a claim sorted them all (7 ms, under the
# write lock) and /jobs sorted the whole table (30 ms). Made after `_add_missing_columns`: a
# journal older than `priority` gets the column first.
INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (state, priority DESC, created_at);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs (updated_at);
CREATE INDEX IF NOT EXISTS jobs_state_updated ON jobs (state, updated_at);
"""
# The most urgent due job: the first queued one and the first due retry, each by an index,
# then the more urgent of the two.
CLAIM_NEXT = """
SELECT id, error FROM (
    SELECT * FROM (SELECT id, error, priority, created_at FROM jobs WHERE state='queued'
                   ORDER BY priority DESC, created_at LIMIT 1)
    UNION ALL
    SELECT * FROM (SELECT id, error, priority, created_at FROM jobs
                   WHERE state='retry_wait' AND next_attempt_at <= ?
                   ORDER BY priority DESC, created_at LIMIT 1))
ORDER BY priority DESC, created_at LIMIT 1
"""
LIST_ALL = "SELECT * FROM jobs ORDER BY updated_at DESC LIMIT ?"
LIST_IN_STATE = "SELECT * FROM jobs WHERE state=? ORDER BY updated_at DESC LIMIT ?"


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
    # outputs about to be renamed into place, with their content hashes (see record_written)
    written: dict[str, Any] | None = None
    kind: str = "file"  # "file" (found in a watched folder) or "upload" (POST /asr)
    priority: int = 0  # higher is claimed first (an upload before a webhook before the scan)
    track: dict[str, Any] | None = None  # the audio stream transcribed (pipeline.tracks)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "written"}


def stored_path(rel_path: str) -> str | bytes:
    """How a relative path is bound in SQL. A name that is not UTF-8 (Latin-1 archives, old SMB
    clients) reaches us as a str with its odd bytes as surrogate escapes, which SQLite text
    cannot hold: it is stored as its raw bytes (a BLOB) and read back to the same str, so the
    file is found, known and named again byte for byte. Valid names stay text."""
    try:
        rel_path.encode("utf-8")
    except UnicodeEncodeError:
        return rel_path.encode("utf-8", "surrogateescape")
    return rel_path


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    if isinstance(data["rel_path"], bytes):  # see stored_path
        data["rel_path"] = data["rel_path"].decode("utf-8", "surrogateescape")
    data["outputs"] = json.loads(data["outputs"] or "[]")
    for name in ("written", "track"):
        data[name] = json.loads(data[name]) if data.get(name) else None
    return Job(**data)


class _SeamCalls:
    """The queue seam's calls (daemon/queue.py) that SQLite needs little for, kept apart from
    Journal, which is at the class-size limit."""

    path: Path
    _store: _Store

    def heartbeat(self, job_id: str) -> bool:
        """SQLite holds no lease (one process owns the file): a claimed job is its worker's
        while it is `running`, until the worker or the next start's `recover` moves it."""
        with self._store.read() as db:
            row = db.execute("SELECT 1 FROM jobs WHERE id=? AND state='running'",
                             (job_id,)).fetchone()
        return row is not None

    def record_written(self, job_id: str, written: dict[str, Any] | None) -> None:
        """See the module's `record_written`."""
        with self._store.write() as db:
            db.execute("UPDATE jobs SET written=?, updated_at=? WHERE id=? AND state='running'",
                       (None if written is None else json.dumps(written), time.time(), job_id))

    def describe(self) -> dict[str, Any]:
        return {"backend": "sqlite", "path": str(self.path)}

    def defer(self, job_id: str, delay: float) -> bool:
        """A running job set aside for `delay` s with its attempt refunded: its folder is away
        (a library's share), which is not the file's fault, and the queue goes on meanwhile."""
        now = time.time()
        with self._store.write() as db:
            return db.execute(
                "UPDATE jobs SET state='retry_wait', next_attempt_at=?, updated_at=?,"
                " attempts=MAX(attempts - 1, 0) WHERE id=? AND state='running'",
                (now + delay, now, job_id)).rowcount == 1


class Journal(_SeamCalls):
    def __init__(self, path: Path, max_attempts: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)  # the queue is private
        self.path = path
        self.max_attempts = max_attempts
        self._store = _Store(path)

    def close(self) -> None:
        self._store.close()

    def _tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._store.write()

    @property
    def problem(self) -> str | None:
        """What the last read or write met ("cannot write: database is locked") until one
        works again; None while the journal is fine. /healthz reports it as degraded."""
        return self._store.problem

    # ---------------------------------------------------------------- lifecycle

    def recover(self) -> tuple[int, list[Job]]:
        """After a crash: `running` jobs go back to the queue, or fail when out of attempts:
        how many were requeued, and the jobs failed for good (they need their error files).

        Who is charged: a process killed from outside (the OOM killer, a segfault in a decoder)
        leaves no word on which file did it. With one job running, that job is charged. With
        several, none is: each is refunded its attempt and marked `crash_suspect`, which makes
        `claim` run it alone; a crash while it runs alone is then its own. So a poison file
        still fails after `max_attempts`, and the files beside it lose nothing."""
        now = time.time()
        with self._tx() as db:
            suspects = _refund_if_several_running(db, now)
            if suspects:
                return suspects, []
            failed = db.execute(
                "UPDATE jobs SET state='failed', error='crashed', finished_at=?, updated_at=?,"
                " message='the daemon stopped abruptly while processing this file '"
                " || attempts || ' times' WHERE state='running' AND attempts >= ?"
                " AND written IS NULL RETURNING id",
                (now, now, self.max_attempts)).fetchall()
            requeued = db.execute(
                "UPDATE jobs SET state='queued', updated_at=? WHERE state='running'",
                (now,)).rowcount
        return requeued, [job for (job_id,) in failed if (job := self.get(job_id))]

    # ---------------------------------------------------------------- intake

    def known(self, identity: Identity) -> bool:
        """Has this identity a job? (One canceled because its file had vanished does not count:
        a share that comes back brings it back.)"""
        with self._store.read() as db:
            row = db.execute(
                "SELECT 1 FROM jobs WHERE rel_path=? AND size=? AND mtime_ns=? AND NOT"
                " (state='canceled' AND error='vanished')",
                (stored_path(identity.rel_path), identity.size, identity.mtime_ns)).fetchone()
        return row is not None

    def outputs_of(self, rel_path: str) -> set[str]:
        """Every output path earlier jobs of this input path wrote (to tell ours from others')."""
        with self._store.read() as db:
            rows = db.execute("SELECT outputs FROM jobs WHERE rel_path=? AND state='done'",
                                    (stored_path(rel_path),)).fetchall()
        return {out for row in rows for out in json.loads(row[0] or "[]")}

    def admit(self, identity: Identity, state: str = "queued", message: str | None = None,
              *, kind: str = "file", priority: int = 0) -> Job | None:
        """A new job for an unseen identity; None when this identity already has one."""
        now = time.time()
        job_id = secrets.token_hex(8)
        with self._tx() as db:
            revived = db.execute(
                "UPDATE jobs SET state='queued', attempts=0, error=NULL, message=NULL,"
                " finished_at=NULL, updated_at=? WHERE rel_path=? AND size=? AND mtime_ns=?"
                " AND state='canceled' AND error='vanished' RETURNING id",
                (now, stored_path(identity.rel_path), identity.size, identity.mtime_ns)).fetchone()
            if revived is not None:
                job_id = revived[0]
            elif db.execute(
                    "INSERT OR IGNORE INTO jobs (id, rel_path, size, mtime_ns, inode, state,"
                    " created_at, updated_at, message, finished_at, kind, priority)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (job_id, stored_path(identity.rel_path), identity.size, identity.mtime_ns,
                     identity.inode, state, now, now, message,
                     now if state in FINAL_STATES else None, kind, priority)).rowcount == 0:
                return None
        return self.get(job_id)

    # ---------------------------------------------------------------- work

    def claim(self, now: float | None = None) -> Job | None:
        """Take the most urgent due job (priority, then age), mark it running, charge an attempt."""
        now = time.time() if now is None else now
        with self._tx() as db:
            row = db.execute(CLAIM_NEXT, (now,)).fetchone()
            if row is None or not _may_start(db, row["error"] == CRASH_SUSPECT):
                return None
            db.execute(
                "UPDATE jobs SET state='running', attempts=attempts+1, started_at=?,"
                " updated_at=?, next_attempt_at=NULL WHERE id=?", (now, now, row["id"]))
        return self.get(row["id"])

    # Every transition names the states it may start from, so a late writer (a stop racing a
    # finish, a cancel racing a claim) can never move a job backwards.

    def finish(self, job_id: str, outputs: list[str], language: str | None, result: str,
               audio_seconds: float, processing_seconds: float,
               track: dict[str, Any] | None = None) -> bool:
        return self._set(job_id, "done", outputs=json.dumps(outputs), language=language,
                         result=result, audio_seconds=audio_seconds,
                         processing_seconds=processing_seconds,
                         track=json.dumps(track) if track else None, error=None, message=None,
                         written=None, finished_at=time.time())

    def fail(self, job_id: str, code: str, message: str) -> None:
        self._set(job_id, "failed", error=code, message=message, finished_at=time.time())

    def retry_later(self, job_id: str, code: str, message: str, delay: float) -> None:
        self._set(job_id, "retry_wait", error=code, message=message,
                  next_attempt_at=time.time() + delay)

    def prioritize(self, job_id: str, priority: int) -> bool:
        """Raise a waiting job's priority (a webhook names a file the scan already queued)."""
        return self._set(job_id, "queued", from_states=("queued",), priority=priority)

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

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._store.read() as db:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key)"
                       " DO UPDATE SET value=excluded.value", (key, value))

    def get(self, job_id: str) -> Job | None:
        with self._store.read() as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list_jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        query, args = (LIST_IN_STATE, (state, limit)) if state else (LIST_ALL, (limit,))
        with self._store.read() as db:
            return [_job(r) for r in db.execute(query, args).fetchall()]

    def counts(self) -> dict[str, int]:
        with self._store.read() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def next_due(self) -> float | None:
        """When the earliest waiting retry becomes due (unix time), if any."""
        with self._store.read() as db:
            row = db.execute(
                "SELECT MIN(next_attempt_at) FROM jobs WHERE state='retry_wait'").fetchone()
        return row[0]


def _refund_if_several_running(db: sqlite3.Connection, now: float) -> int:
    """`Journal.recover` with several jobs left running: requeue them all uncharged, as crash
    suspects; how many (0 when at most one was running, which is charged as before)."""
    running = db.execute("SELECT COUNT(*) FROM jobs WHERE state='running'").fetchone()[0]
    if running < 2:
        return 0
    return int(db.execute(
        "UPDATE jobs SET state='queued', updated_at=?, attempts=MAX(attempts - 1, 0), error=?,"
        " message=? WHERE state='running'",
        (now, CRASH_SUSPECT, f"the daemon stopped abruptly while {running} files were running;"
         " no attempt charged, and it runs alone next")).rowcount)


def _may_start(db: sqlite3.Connection, suspect: bool) -> bool:
    """`Journal.claim`: a crash suspect (see `recover`) runs alone. It starts only when nothing
    runs, and nothing starts while it runs; the queue waits behind it, so it is never starved."""
    busy = db.execute("SELECT COUNT(*), COALESCE(SUM(error=?), 0) FROM jobs"
                      " WHERE state='running'", (CRASH_SUSPECT,)).fetchone()
    return bool(busy[1] == 0 and not (suspect and busy[0] > 0))


def record_written(journal: Journal, job_id: str, written: dict[str, Any] | None) -> None:
    """Note on a running job the outputs it is about to rename into place, with their content
    hashes and what `finish` will need (None forgets them). Committed before the first rename:
    a kill after the renames and before `finish` then leaves a job whose outputs are known to
    be whole, which the next claim finishes without running the models again (Worker)."""
    journal.record_written(job_id, written)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """A journal made by an older version gets the columns added since (empty)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    for column, decl in (("written", "TEXT"), ("track", "TEXT"),
                         ("kind", "TEXT NOT NULL DEFAULT 'file'"),
                         ("priority", "INTEGER NOT NULL DEFAULT 0")):
        if column not in have:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {decl}")


def _connect(path: Path, wait: float) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=wait)
    db.row_factory = sqlite3.Row
    return db


def _open(path: Path) -> sqlite3.Connection:
    """The writing connection, with the schema in place (the first statements that read the
    file: a corrupt one fails here)."""
    db = _connect(path, WRITE_WAIT_SECONDS)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL survives a process crash; a power cut may lose the last commits, which
        # only means a rescan finds the file again (or skip_existing skips it).
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        _add_missing_columns(db)
        db.executescript(INDEXES)
    except BaseException:
        db.close()
        raise
    return db


class _Store:
    """The journal's two connections to its file, and what using them last met.

    Writes take one connection under a lock (BEGIN IMMEDIATE … COMMIT/ROLLBACK) and wait at
    most WRITE_WAIT_SECONDS for another process's lock. Reads take a second connection: in WAL
    mode a reader never waits on a writer, so a write stuck behind a lock (or a full disk)
    never holds up /status. Every SQLite failure comes out as JournalUnavailable, or as
    JournalCorrupt, and `problem` keeps the last one until that kind of use works again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._problems: dict[str, str] = {}
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        with self._guard("open"):
            self._db = _open(path)
        self._reader = _connect(path, READ_WAIT_SECONDS)

    @property
    def problem(self) -> str | None:
        return next(iter(self._problems.values()), None)

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._db.close()
            self._reader.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock, self._guard("read"):
            yield self._reader

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock, self._guard("write"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT leaves it open too: end it
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _guard(self, use: str) -> Iterator[None]:
        """SQLite's errors as ours; a success after trouble clears it (and says so)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            trouble = self._trouble(use, exc)
            if trouble is None:
                raise  # a constraint or a misuse: a bug, not the file's state
            raise trouble from exc
        if self._problems.pop(use, None) is not None:
            log.info("the journal %s can be %s again", str(self.path),
                        "read" if use == "read" else "written")

    def _trouble(self, use: str, exc: sqlite3.DatabaseError) -> JournalUnavailable | None:
        if getattr(exc, "sqlite_errorname", "") in CORRUPT:
            trouble: JournalUnavailable = JournalCorrupt(self.path, str(exc))
        elif isinstance(exc, sqlite3.OperationalError):
            trouble = JournalUnavailable(f"cannot {use} the journal: {exc}")
        else:
            return None
        if use != "open" and use not in self._problems:  # once per spell, not every retry
            log.error("%s (%s)%s", trouble, self.path, "" if isinstance(trouble, JournalCorrupt)
                      else "; tried again until it works")
        self._problems[use] = str(trouble)
        return trouble
