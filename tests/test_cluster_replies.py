"""Replies lost on the wire: Redis acted, the node never heard it (Redis killed -9 just after
its append-only write, a connection cut). The node asks again, as redis-py's one retry and the
daemon's own retries do; the queue must answer as if the first reply had arrived, and act once.

Before, a finish whose reply was lost answered "not yours" on its retry, so the daemon logged
the job as finished elsewhere and sent no job_done (CI caught it: a job done with no done line);
a claim whose reply was lost took a second job while the first sat running, charged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from daemon.cluster.link import Link
from daemon.cluster.queue import RedisQueue
from daemon.journal import Identity
from testkit.cut_wire import CutWire
from testkit.redis_server import RedisServer

NAMES = itertools.count()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def wire(redis_server: RedisServer) -> Iterator[CutWire]:
    with CutWire("127.0.0.1", redis_server.port) as relay:
        yield relay


def queue_through(wire: CutWire, node: str = "node-a", name: str | None = None) -> RedisQueue:
    link = Link(wire.url)
    link.connect(wait=False)
    return RedisQueue(link, name or f"replies{next(NAMES)}", node, 3, claim_timeout=30.0)


def sha(q: RedisQueue, script: str) -> bytes:
    return q._scripts[script].sha.encode()  # the request to cut


def test_a_finish_whose_reply_is_lost_is_still_this_nodes_finish(wire: CutWire) -> None:
    q = queue_through(wire)
    q.admit(Identity("warm.wav", 1, 1))
    warm = q.claim()
    assert q.finish(warm.id, [], "en", "ok", 1.0, 1.0)  # the script is loaded: no NOSCRIPT
    q.admit(Identity("x.wav", 1, 1))
    job = q.claim()
    wire.lose_reply_to(sha(q, "MOVE"))
    assert q.finish(job.id, ["/out/x.en.srt"], "en", "ok", 3.0, 1.5)
    assert wire.cuts == 1
    done = q.get(job.id)
    assert done.state == "done" and done.outputs == ["/out/x.en.srt"] and done.attempts == 1
    assert q.held() == []


def test_a_requeue_whose_reply_is_lost_refunds_its_attempt_once(wire: CutWire) -> None:
    q = queue_through(wire)
    q.admit(Identity("warm.wav", 1, 1))
    assert q.requeue(q.claim().id)
    q.admit(Identity("r.wav", 1, 1))
    first = q.claim()  # warm.wav again, then r.wav
    second = q.claim()
    assert {first.rel_path, second.rel_path} == {"warm.wav", "r.wav"}
    wire.lose_reply_to(sha(q, "MOVE"))
    assert q.requeue(second.id)
    assert wire.cuts == 1
    back = q.get(second.id)
    assert (back.state, back.attempts) == ("queued", 0)


def test_a_move_asked_again_after_another_node_took_the_job_over_is_still_refused(
        wire: CutWire) -> None:
    """The note of a move is one claim's: a node whose job was taken over, requeued and finished
    by another node is told no, whatever it asks."""
    a = queue_through(wire, "node-a")
    b = queue_through(wire, "node-b", a.name)
    a.admit(Identity("t.wav", 1, 1))
    mine = a.claim()
    assert b.recover() == (0, [])  # not ripe: the claim timeout has not passed
    b.claim_timeout = 0.0  # a's claim is now older than b's timeout
    assert b.recover()[0] == 1
    theirs = b.claim()
    assert theirs.id == mine.id and b.finish(theirs.id, ["/b.srt"], "en", "ok", 1.0, 1.0)
    assert not a.finish(mine.id, ["/a.srt"], "en", "ok", 1.0, 1.0)
    assert a.get(mine.id).outputs == ["/b.srt"]


def test_a_claim_whose_reply_is_lost_returns_the_same_job_when_asked_again(
        wire: CutWire) -> None:
    q = queue_through(wire)
    q.admit(Identity("warm.wav", 1, 1))
    assert q.finish(q.claim().id, [], "en", "ok", 1.0, 1.0)
    q.admit(Identity("one.wav", 1, 1))
    q.admit(Identity("two.wav", 1, 1))
    wire.lose_reply_to(sha(q, "CLAIM"))
    job = q.claim()
    assert wire.cuts == 1
    assert job.rel_path == "one.wav" and job.attempts == 1
    assert q.counts()["running"] == 1 and q.counts()["queued"] == 1
    assert q.recover() == (0, [])  # nothing of this node's left running unheld
    assert q.claim().rel_path == "two.wav"


def test_a_claim_after_an_answered_one_takes_the_next_job(wire: CutWire) -> None:
    """The token is renewed once a reply arrives: claiming again is a new claim."""
    q = queue_through(wire)
    for name in ("a.wav", "b.wav"):
        q.admit(Identity(name, 1, 1))
    assert [q.claim().rel_path, q.claim().rel_path] == ["a.wav", "b.wav"]
    assert q.claim() is None
