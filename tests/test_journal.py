"""The durable queue on real SQLite files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from daemon.journal import Identity, Journal


def open_journal(tmp_path: Path, attempts: int = 3) -> Journal:
    return Journal(tmp_path / "state" / "journal.sqlite3", attempts)


def test_identity_is_admitted_once(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    ident = Identity("a/b.mp4", 10, 123, 7)
    job = j.admit(ident)
    assert job and job.state == "queued" and len(job.id) == 16
    assert j.admit(ident) is None
    assert j.known(ident)
    changed = Identity("a/b.mp4", 11, 456, 7)
    assert not j.known(changed)
    assert j.admit(changed) is not None  # a changed file is a new job
    assert j.counts()["queued"] == 2


def test_claim_finish_and_never_again(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    j.admit(Identity("x.wav", 1, 1))
    job = j.claim()
    assert job and job.state == "running" and job.attempts == 1
    assert j.claim() is None
    j.finish(job.id, ["/out/x.en.srt"], "en", "ok", 3.0, 1.0)
    done = j.get(job.id)
    assert done and done.state == "done" and done.outputs == ["/out/x.en.srt"]
    j.close()
    again = open_journal(tmp_path)
    assert again.known(Identity("x.wav", 1, 1)) and again.claim() is None


def test_crash_recovery_requeues_then_gives_up(tmp_path: Path) -> None:
    j = open_journal(tmp_path, attempts=2)
    j.admit(Identity("poison.mp4", 5, 5))
    assert j.claim().attempts == 1
    j.close()  # the process dies while the job is 'running'
    j = open_journal(tmp_path, attempts=2)
    assert j.recover() == (1, 0)  # requeued, attempt still charged
    assert j.claim().attempts == 2
    j.close()  # dies again
    j = open_journal(tmp_path, attempts=2)
    assert j.recover() == (0, 1)  # out of attempts: failed for good
    (failed,) = j.list_jobs("failed")
    assert failed.error == "crashed" and "2 times" in failed.message


def test_retry_wait_and_requeue_refund(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    j.admit(Identity("r.wav", 1, 1))
    job = j.claim()
    j.retry_later(job.id, "io_error", "share busy", delay=60)
    assert j.claim() is None  # not due yet
    assert j.next_due() is not None
    job = j.claim(now=j.next_due() + 1)
    assert job and job.attempts == 2
    j.requeue(job.id)
    assert j.get(job.id).attempts == 1 and j.get(job.id).state == "queued"


def test_wal_mode_and_concurrent_claims(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    for n in range(40):
        j.admit(Identity(f"f{n}.wav", n, n))
    claimed: list[str] = []

    def worker() -> None:
        while (job := j.claim()) is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40 == len(set(claimed))
    mode = sqlite3.connect(j.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_transitions_never_move_a_job_backwards(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    job = j.admit(Identity("race.wav", 1, 1))
    claimed = j.claim()
    assert claimed and claimed.id == job.id
    # a cancel meant for a queued job arrives after the claim: it must not apply
    assert not j.cancel(job.id, "canceled by request", states=("queued", "retry_wait"))
    j.finish(job.id, [], "en", "ok", 1.0, 1.0)
    assert not j.requeue(job.id)  # a late stop cannot put a finished job back in the queue
    assert j.get(job.id).state == "done"


def test_vanished_jobs_come_back_with_their_file(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    ident = Identity("nas/movie.mkv", 10, 10)
    j.admit(ident)
    job = j.claim()
    assert j.cancel(job.id, "the input file is gone", code="vanished")
    assert not j.known(ident)  # the share came back: the scan sees it as new…
    again = j.admit(ident)
    assert again and again.id == job.id and again.state == "queued" and again.attempts == 0
    j.claim()
    assert j.cancel(job.id, "canceled by request")  # …but a user's cancel stays
    assert j.known(ident) and j.admit(ident) is None


def test_a_failed_transaction_releases_the_lock(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    other = sqlite3.connect(j.path, timeout=0)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    j._db.execute("PRAGMA busy_timeout = 0")
    try:
        j.admit(Identity("busy.wav", 1, 1))
    except sqlite3.OperationalError:
        pass
    else:
        raise AssertionError("the admit should have met a locked database")
    other.rollback()
    assert j.admit(Identity("busy.wav", 1, 1)) is not None  # not wedged
