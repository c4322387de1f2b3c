"""The queue seam's contract (daemon/queue.py), one suite run on both backends: the SQLite
journal on a real file and the Redis Streams queue on a real redis-server.

Whatever holds the queue, the daemon's parts see the same behaviour: identity admitted once,
priority first, attempts charged and refunded the same, transitions that never move a job
backwards, a job left running by a dead process requeued with its attempt charged and failed
when out of attempts. "A restart" is what a dead process's successor sees: SQLite reopens the
file; a Redis node comes back under its own node name.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cluster.link import Link
from daemon.cluster.queue import RedisQueue
from daemon.journal import Identity, Journal
from daemon.queue import JobQueue
from testkit.redis_server import RedisServer

NAMES = itertools.count()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


class Backend:
    """Opens queues of one backend on one store, and restarts them as a dead process's
    successor would."""

    def __init__(self, kind: str, tmp_path: Path, server: RedisServer | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.server = server
        self.name = f"contract{next(NAMES)}"  # a fresh key prefix: tests share the server
        self.opened: list[JobQueue] = []

    def open(self, attempts: int = 3) -> JobQueue:
        queue: JobQueue
        if self.server is None:
            queue = Journal(self.tmp_path / "state" / "journal.sqlite3", attempts)
        else:
            link = Link(self.server.url)
            link.connect(wait=False)
            queue = RedisQueue(link, self.name, "node-a", attempts, claim_timeout=30.0)
        self.opened.append(queue)
        return queue

    def restart(self, queue: JobQueue, attempts: int = 3) -> JobQueue:
        """The process that held `queue` died (nothing it ran was recorded); a new one starts."""
        queue.close()
        return self.open(attempts)

    def close(self) -> None:
        for queue in self.opened:
            queue.close()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    b = Backend(request.param, tmp_path, server)
    yield b
    b.close()


def recovered(q: JobQueue) -> tuple[int, int]:
    requeued, failed = q.recover()
    return requeued, len(failed)


# ---------------------------------------------------------------------------- intake

def test_an_identity_is_admitted_once_and_a_changed_file_is_a_new_job(backend: Backend) -> None:
    q = backend.open()
    ident = Identity("a/b.mp4", 10, 123, 7)
    job = q.admit(ident)
    assert job and job.state == "queued" and len(job.id) == 16 and job.inode == 7
    assert job.attempts == 0 and job.outputs == [] and job.kind == "file" and job.priority == 0
    assert q.admit(ident) is None
    assert q.known(ident)
    changed = Identity("a/b.mp4", 11, 456, 7)
    assert not q.known(changed)
    assert q.admit(changed) is not None
    assert q.counts()["queued"] == 2
    assert q.get(job.id) == job


def test_an_admission_as_skipped_is_final_and_never_claimed(backend: Backend) -> None:
    q = backend.open()
    job = q.admit(Identity("s.wav", 1, 1), state="skipped", message="subtitle exists: s.en.srt")
    assert job and job.state == "skipped" and job.finished_at is not None
    assert job.message == "subtitle exists: s.en.srt"
    assert q.claim() is None and q.counts()["skipped"] == 1


def test_a_name_that_is_not_utf8_is_kept_byte_for_byte(backend: Backend) -> None:
    q = backend.open()
    name = b"caf\xe9/\xff.wav".decode("utf-8", "surrogateescape")
    job = q.admit(Identity(name, 5, 5))
    assert job and job.rel_path == name
    assert q.known(Identity(name, 5, 5))
    claimed = q.claim()
    assert claimed and claimed.rel_path == name
    assert q.list_jobs("running")[0].rel_path == name


def test_vanished_jobs_come_back_with_their_file(backend: Backend) -> None:
    q = backend.open()
    ident = Identity("nas/movie.mkv", 10, 10)
    q.admit(ident)
    job = q.claim()
    assert q.cancel(job.id, "the input file is gone", code="vanished")
    assert not q.known(ident)  # the share came back: the scan sees it as new...
    again = q.admit(ident)
    assert again and again.id == job.id and again.state == "queued"  # ...and it is the same job
    assert again.attempts == 0 and again.error is None and again.finished_at is None
    assert q.claim().id == job.id


def test_outputs_of_lists_what_done_jobs_of_a_path_wrote(backend: Backend) -> None:
    q = backend.open()
    q.admit(Identity("x.wav", 1, 1))
    first = q.claim()
    q.finish(first.id, ["/out/x.en.srt", "/out/x.en.vtt"], "en", "ok", 3.0, 1.0)
    q.admit(Identity("x.wav", 2, 2))  # a new version, not done yet
    q.claim()
    assert q.outputs_of("x.wav") == {"/out/x.en.srt", "/out/x.en.vtt"}
    assert q.outputs_of("other.wav") == set()


# ---------------------------------------------------------------------------- work

def test_claim_runs_charges_and_a_finished_job_is_never_claimed_again(backend: Backend) -> None:
    q = backend.open()
    q.admit(Identity("x.wav", 1, 1))
    job = q.claim()
    assert job and job.state == "running" and job.attempts == 1 and job.started_at
    assert q.claim() is None
    assert q.heartbeat(job.id)
    q.finish(job.id, ["/out/x.en.srt"], "en", "ok", 3.0, 1.5)
    done = q.get(job.id)
    assert done and done.state == "done" and done.outputs == ["/out/x.en.srt"]
    assert (done.language, done.result, done.audio_seconds, done.processing_seconds) == (
        "en", "ok", 3.0, 1.5)
    assert not q.heartbeat(job.id)
    again = backend.restart(q)
    assert again.known(Identity("x.wav", 1, 1)) and again.claim() is None
    assert again.get(job.id).state == "done"


def test_the_audio_track_heard_is_kept_in_the_job_record(backend: Backend) -> None:
    q = backend.open()
    q.admit(Identity("dual.mkv", 1, 1))
    job = q.claim()
    track = {"index": 2, "audio_index": 1, "language": "en", "offset_seconds": 2.5,
             "reason": "language"}
    q.finish(job.id, [], "en", "ok", 3.0, 1.5, track)
    assert backend.restart(q).get(job.id).track == track


def test_claim_takes_the_highest_priority_first_then_the_oldest(backend: Backend) -> None:
    q = backend.open()
    low_old = q.admit(Identity("old.wav", 1, 1))
    low_new = q.admit(Identity("new.wav", 1, 1))
    upload = q.admit(Identity("up.wav", 1, 1), kind="upload", priority=10)
    hook = q.admit(Identity("hook.wav", 1, 1), priority=5)
    assert upload.kind == "upload" and upload.priority == 10
    assert [q.claim().id for _ in range(4)] == [upload.id, hook.id, low_old.id, low_new.id]


def test_prioritize_raises_a_waiting_job_and_nothing_else(backend: Backend) -> None:
    q = backend.open()
    a = q.admit(Identity("a.wav", 1, 1))
    b = q.admit(Identity("b.wav", 1, 1))
    assert q.prioritize(b.id, 5)
    assert q.get(b.id).priority == 5 and q.get(b.id).state == "queued"
    first = q.claim()
    assert first.id == b.id
    assert not q.prioritize(b.id, 9)  # running: nothing to raise
    assert not q.prioritize("0" * 16, 9)
    assert q.claim().id == a.id


def test_retry_waits_until_due_and_a_requeue_refunds_its_attempt(backend: Backend) -> None:
    q = backend.open()
    q.admit(Identity("r.wav", 1, 1))
    job = q.claim()
    q.retry_later(job.id, "io_error", "share busy", delay=60)
    waiting = q.get(job.id)
    assert waiting.state == "retry_wait" and waiting.error == "io_error"
    assert q.claim() is None  # not due yet
    due = q.next_due()
    assert due is not None and due == pytest.approx(waiting.next_attempt_at)
    job = q.claim(now=due + 1)
    assert job and job.attempts == 2 and job.next_attempt_at is None
    assert q.next_due() is None
    assert q.requeue(job.id)
    assert q.get(job.id).attempts == 1 and q.get(job.id).state == "queued"
    assert q.claim().attempts == 2


def test_a_deferred_job_waits_refunded_and_the_queue_goes_on(backend: Backend) -> None:
    """A job whose library's share is away steps aside: the next one is claimed, and it
    comes back when due with its attempt refunded."""
    q = backend.open()
    q.admit(Identity("away.wav", 1, 1))
    q.admit(Identity("here.wav", 1, 1))
    away = q.claim()
    assert away.rel_path == "away.wav" and q.defer(away.id, 60)
    assert not q.defer(away.id, 60)  # only a running job
    waiting = q.get(away.id)
    assert (waiting.state, waiting.attempts) == ("retry_wait", 0)
    assert q.claim().rel_path == "here.wav"
    back = q.claim(now=waiting.next_attempt_at + 1)
    assert back and back.id == away.id and back.attempts == 1


def test_transitions_never_move_a_job_backwards(backend: Backend) -> None:
    q = backend.open()
    job = q.admit(Identity("race.wav", 1, 1))
    claimed = q.claim()
    assert claimed and claimed.id == job.id
    # a cancel meant for a queued job arrives after the claim: it must not apply
    assert not q.cancel(job.id, "canceled by request", states=("queued", "retry_wait"))
    q.finish(job.id, [], "en", "ok", 1.0, 1.0)
    assert not q.requeue(job.id)  # a late stop cannot put a finished job back in the queue
    q.fail(job.id, "late", "a late failure")  # ignored: it is done
    assert q.get(job.id).state == "done" and q.get(job.id).error is None


def test_a_queued_or_waiting_job_canceled_is_never_claimed(backend: Backend) -> None:
    q = backend.open()
    a = q.admit(Identity("a.wav", 1, 1))
    b = q.admit(Identity("b.wav", 1, 1))
    c = q.admit(Identity("c.wav", 1, 1))
    assert q.claim().id == a.id
    q.retry_later(a.id, "io_error", "busy", delay=0)  # due at once
    states = ("queued", "retry_wait")
    assert q.cancel(a.id, "canceled by request", states=states)
    assert q.cancel(b.id, "canceled by request", states=states)
    assert q.claim().id == c.id and q.claim() is None
    assert q.get(a.id).state == q.get(b.id).state == "canceled" and q.next_due() is None


def test_reset_queues_a_finished_job_again_with_fresh_attempts(backend: Backend) -> None:
    q = backend.open(attempts=1)
    q.admit(Identity("f.wav", 1, 1))
    job = q.claim()
    q.fail(job.id, "no_audio", "no audio stream")
    assert q.counts()["failed"] == 1
    assert not q.reset("0" * 16)
    assert q.reset(job.id)
    again = q.get(job.id)
    assert again.state == "queued" and again.attempts == 0 and again.error is None
    assert again.finished_at is None
    assert q.claim().attempts == 1
    assert not q.reset(job.id)  # running: not finished


def test_the_written_note_is_kept_on_a_running_job_and_forgotten(backend: Backend) -> None:
    q = backend.open()
    q.admit(Identity("n.wav", 1, 1))
    job = q.claim()
    note = {"outputs": {"/out/n.en.srt": "0" * 64}, "language": "en"}
    q.record_written(job.id, note)
    assert q.get(job.id).written == note
    q.record_written(job.id, None)
    assert q.get(job.id).written is None
    q.record_written(job.id, note)
    q.finish(job.id, ["/out/n.en.srt"], "en", "ok", 1.0, 1.0)
    assert q.get(job.id).written is None


def test_concurrent_claims_take_each_job_once(backend: Backend) -> None:
    q = backend.open()
    for n in range(40):
        q.admit(Identity(f"f{n}.wav", n, n))
    claimed: list[str] = []

    def worker() -> None:
        while (job := q.claim()) is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40 == len(set(claimed))
    assert q.counts()["running"] == 40


# ---------------------------------------------------------------------------- a dead process

def test_a_dead_workers_job_is_requeued_charged_then_failed_when_out_of_attempts(
        backend: Backend) -> None:
    q = backend.open(attempts=2)
    q.admit(Identity("poison.mp4", 5, 5))
    assert q.claim().attempts == 1
    q = backend.restart(q, attempts=2)  # the process died while the job ran
    assert recovered(q) == (1, 0)  # requeued, attempt still charged
    assert q.claim().attempts == 2
    q = backend.restart(q, attempts=2)  # died again
    requeued, (gave_up,) = q.recover()  # out of attempts: failed for good
    (failed,) = q.list_jobs("failed")
    assert failed.error == "crashed" and "2 times" in failed.message
    assert requeued == 0 and gave_up == failed  # handed back for its error file
    assert q.claim() is None


def test_a_dead_workers_job_with_whole_outputs_is_requeued_even_out_of_attempts(
        backend: Backend) -> None:
    """Killed after its outputs' renames, before the record: the next claim finishes it from
    the note (the worker checks the files), so recovery must not fail it as crashed."""
    q = backend.open(attempts=1)
    q.admit(Identity("w.wav", 1, 1))
    job = q.claim()
    q.record_written(job.id, {"outputs": {"/out/w.en.srt": "0" * 64}})
    q = backend.restart(q, attempts=1)
    assert recovered(q) == (1, 0)
    again = q.claim()
    assert again.id == job.id and again.written == {"outputs": {"/out/w.en.srt": "0" * 64}}


def test_recover_leaves_finished_and_waiting_jobs_alone(backend: Backend) -> None:
    q = backend.open()
    q.admit(Identity("d.wav", 1, 1))
    q.admit(Identity("q.wav", 1, 1))
    done = q.claim()
    q.finish(done.id, [], "en", "no_speech", 1.0, 1.0)
    q = backend.restart(q)
    assert recovered(q) == (0, 0)
    assert q.counts()["done"] == 1 and q.counts()["queued"] == 1


# ---------------------------------------------------------------------------- queries

def test_list_jobs_by_state_newest_change_first_and_counts(backend: Backend) -> None:
    q = backend.open()
    for name in ("a.wav", "b.wav", "c.wav"):
        q.admit(Identity(name, 1, 1))
    first = q.claim()
    q.fail(first.id, "no_audio", "no audio stream")
    assert [j.rel_path for j in q.list_jobs("failed")] == ["a.wav"]
    everything = q.list_jobs()
    assert everything[0].rel_path == "a.wav" and len(everything) == 3  # changed last
    assert len(q.list_jobs(limit=2)) == 2
    assert q.counts() == {"queued": 2, "running": 0, "retry_wait": 0, "done": 0, "failed": 1,
                          "canceled": 0, "skipped": 0}


def test_meta_values_are_kept(backend: Backend) -> None:
    q = backend.open()
    assert q.get_meta("last_event_id") is None and q.get_meta("x", "0") == "0"
    q.set_meta("last_event_id", "41")
    q.set_meta("last_event_id", "42")
    assert backend.restart(q).get_meta("last_event_id") == "42"


def test_a_healthy_backend_has_no_problem_and_names_itself(backend: Backend) -> None:
    q = backend.open()
    assert q.problem is None
    assert q.describe()["backend"] == backend.kind
    assert q.get("0" * 16) is None and q.list_jobs("running") == []
