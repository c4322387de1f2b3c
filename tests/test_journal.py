"""The durable queue on real SQLite files."""

from __future__ import annotations

import shlex
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from daemon.journal import Identity, Journal, JournalCorrupt, JournalUnavailable


def open_journal(tmp_path: Path, attempts: int = 3) -> Journal:
    return Journal(tmp_path / "state" / "journal.sqlite3", attempts)


def recovered(j: Journal) -> tuple[int, int]:
    """recover(): how many were requeued, how many failed for good."""
    requeued, failed = j.recover()
    return requeued, len(failed)


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
    assert recovered(j) == (1, 0)  # requeued, attempt still charged
    assert j.claim().attempts == 2
    j.close()  # dies again
    j = open_journal(tmp_path, attempts=2)
    requeued, (gave_up,) = j.recover()  # out of attempts: failed for good
    (failed,) = j.list_jobs("failed")
    assert failed.error == "crashed" and "2 times" in failed.message
    assert requeued == 0 and gave_up == failed  # handed back for its error file


def test_crash_with_several_running_charges_none_and_isolates_them(tmp_path: Path) -> None:
    """An OOM kill while two files run: it cannot say which file did it, so neither is charged;
    each then runs alone, and a crash while one runs alone is that file's."""
    j = open_journal(tmp_path, attempts=2)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        j.admit(Identity(name, 5, 5))
    a, b = j.claim(), j.claim()
    j.close()  # killed with a and b running
    j = open_journal(tmp_path, attempts=2)
    assert recovered(j) == (2, 0)
    assert [j.get(x.id).attempts for x in (a, b)] == [0, 0]
    assert j.get(a.id).error == "crash_suspect"
    first = j.claim()
    assert first.id == a.id and j.claim() is None  # a runs alone: b waits, and so does c
    j.finish(first.id, [], "en", "ok", 1.0, 1.0)
    second = j.claim()
    assert second.id == b.id and j.claim() is None
    j.close()  # killed again, b alone: b's fault
    j = open_journal(tmp_path, attempts=2)
    assert recovered(j) == (1, 0) and j.get(b.id).attempts == 1
    assert j.claim().id == b.id
    j.close()
    j = open_journal(tmp_path, attempts=2)
    assert recovered(j) == (0, 1) and j.get(b.id).state == "failed"
    third = j.claim()
    assert third.rel_path == "c.mp4"
    assert third.attempts == 1 and j.claim() is None


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
    with pytest.raises(JournalUnavailable, match="database is locked"):
        j.admit(Identity("busy.wav", 1, 1))  # after the bounded wait for the lock
    other.rollback()
    assert j.admit(Identity("busy.wav", 1, 1)) is not None  # not wedged


def test_reads_go_on_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """A write stuck behind another process's lock used to hold the one connection's lock for
    its whole 30 s wait, and every read (/status) waited behind it. Reads have their own
    connection now and the journal says what is wrong until a write works again."""
    j = open_journal(tmp_path)
    job = j.admit(Identity("a.wav", 1, 1))
    other = sqlite3.connect(j.path, timeout=0)
    other.execute("BEGIN EXCLUSIVE")
    met: list[BaseException] = []

    def claim() -> None:  # a worker's claim, waiting (WRITE_WAIT_SECONDS) for the lock
        try:
            j.claim()
        except JournalUnavailable as exc:
            met.append(exc)

    stuck = threading.Thread(target=claim)
    stuck.start()
    time.sleep(0.5)  # let it start waiting
    try:
        assert j.counts()["queued"] == 1 and j.get(job.id).state == "queued"
        assert j.known(Identity("a.wav", 1, 1))
        assert stuck.is_alive()  # the reads did not wait for the claim to give up
    finally:
        stuck.join()
    assert len(met) == 1 and j.problem == "cannot write the journal: database is locked"
    other.rollback()
    assert j.claim().id == job.id and j.problem is None


def test_a_corrupt_file_is_named_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.sqlite3"
    open_journal(tmp_path).close()
    with open(path, "r+b") as f:
        f.write(b"garbage " * 16)  # over the header
    with pytest.raises(JournalCorrupt) as caught:
        open_journal(tmp_path)
    message = str(caught.value)
    assert str(path) in message and "not a database" in message
    move = message[message.index("mv "):].split(";")[0]
    assert shlex.split(move) == ["mv", str(path), f"{path}.broken"]
    path.rename(f"{path}.broken")
    assert open_journal(tmp_path).counts()["queued"] == 0  # a fresh journal


def test_claim_takes_higher_priority_first_then_the_oldest(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3", max_attempts=3)
    first = j.admit(Identity("a.wav", 1, 1))
    second = j.admit(Identity("b.wav", 1, 1))
    upload = j.admit(Identity("upload.wav", 1, 1), kind="upload", priority=2)
    assert first and second and upload and upload.kind == "upload"
    assert j.prioritize(second.id, 1)
    claimed = [j.claim(), j.claim(), j.claim()]
    assert [c.id for c in claimed if c] == [upload.id, second.id, first.id]
    assert not j.prioritize(first.id, 5)  # running now: only a waiting job is raised
