"""Scale-out over Redis Streams (issue 15), on a real redis-server started per test or module.

In one process: takeover of a dead worker's job after `claim_timeout` with its attempt charged,
heartbeats that keep a running job its worker's, idempotent admission from two intake nodes,
key prefixes that keep libraries apart, Redis unreachable at start or lost while running, and
events numbered once for every node. Then real daemon processes (testkit DaemonProcess, the
real tiny model): three nodes on one shared inbox and outbox, kill -9 of a worker mid-job, a
file that kills every worker that takes it, Redis killed and restarted during a batch.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.cli import format_status
from daemon.cluster.events import ClusterEvents
from daemon.cluster.link import Link, shown_url
from daemon.cluster.queue import RedisQueue
from daemon.config import config_from_dict
from daemon.errors import ConfigError
from daemon.events import EventBus, EventType
from daemon.journal import FINAL_STATES, Identity, Job, JournalUnavailable
from testkit import oracle
from testkit.daemon import (
    DaemonProcess,
    free_port,
    read_sse,
    running_service,
    wait_for,
    wait_until,
)
from testkit.media import Speech
from testkit.redis_server import RedisServer
from testkit.scripted import ScriptedPipeline
from testkit.speech import long_speech_wav, srt_text, wer

NAMES = itertools.count()
CLAIM_TIMEOUT = 0.6  # in-process tests: seconds without a heartbeat before a takeover


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


def fresh_name() -> str:
    return f"cluster{next(NAMES)}"


def node(server: RedisServer, name: str, node_name: str, attempts: int = 3,
         claim_timeout: float = CLAIM_TIMEOUT) -> RedisQueue:
    link = Link(server.url)
    link.connect(wait=False)
    return RedisQueue(link, name, node_name, attempts, claim_timeout)


def until_ripe(*queues: RedisQueue) -> None:
    """Each queue has seen Redis answer for a claim timeout: it may take others' jobs over."""
    for q in queues:
        q.counts()
    time.sleep(CLAIM_TIMEOUT * 1.2)


# ---------------------------------------------------------------------------- takeover

def test_a_worker_that_stops_heartbeating_is_taken_over_with_its_attempt_charged(
        server: RedisServer) -> None:
    name = fresh_name()
    a, b = node(server, name, "a"), node(server, name, "b")
    job = a.admit(Identity("long.wav", 1, 1))
    assert a.claim().id == job.id
    until_ripe(a, b)
    for _ in range(4):  # a heartbeats while it works: b takes nothing
        assert a.heartbeat(job.id)
        time.sleep(CLAIM_TIMEOUT / 3)
        assert b.recover() == (0, [])
    time.sleep(CLAIM_TIMEOUT * 1.5)  # a stalls (or died): no heartbeat for a claim timeout
    assert b.recover()[0] == 1
    requeued = b.get(job.id)
    assert requeued.state == "queued" and requeued.attempts == 1  # charged, not refunded
    assert not a.heartbeat(job.id)  # a learns it is not its job any more
    a.finish(job.id, ["/out/long.en.srt"], "en", "ok", 1.0, 1.0)  # a late finish: refused
    assert b.get(job.id).state == "queued"
    again = b.claim()
    assert again.id == job.id and again.attempts == 2
    b.finish(job.id, ["/out/long.en.srt"], "en", "ok", 1.0, 1.0)
    assert a.get(job.id).state == "done"
    assert b.recover() == (0, [])


def test_no_takeover_until_the_taker_has_seen_redis_for_a_claim_timeout(
        server: RedisServer) -> None:
    """After an outage every node reconnects at once; a worker still running its job gets a
    claim timeout to heartbeat before anyone may take its (long idle) entry."""
    name = fresh_name()
    a = node(server, name, "a")
    job = a.admit(Identity("x.wav", 1, 1))
    a.claim()
    time.sleep(CLAIM_TIMEOUT * 1.5)  # idle past the timeout, as after an outage
    b = node(server, name, "b")  # just (re)connected
    assert b.recover() == (0, [])
    assert a.heartbeat(job.id)
    time.sleep(CLAIM_TIMEOUT * 0.8)
    assert b.recover() == (0, [])  # ripe now, but the heartbeat came first
    assert b.get(job.id).state == "running"


def test_a_file_that_kills_every_worker_fails_after_max_attempts(server: RedisServer) -> None:
    name = fresh_name()
    intake = node(server, name, "intake", attempts=2)
    job = intake.admit(Identity("poison.wav", 1, 1))
    w1, w2 = node(server, name, "w1", attempts=2), node(server, name, "w2", attempts=2)
    until_ripe(intake, w1, w2)
    assert w1.claim().attempts == 1  # w1 dies with it
    time.sleep(CLAIM_TIMEOUT * 1.5)
    assert w2.recover()[0] == 1
    assert w2.claim().attempts == 2  # w2 dies with it too
    time.sleep(CLAIM_TIMEOUT * 1.5)
    requeued, (failed,) = intake.recover()
    assert requeued == 0 and failed.id == job.id and failed.state == "failed"
    assert failed.error == "crashed" and "2 times" in failed.message
    assert w1.claim() is None and w2.claim() is None


def test_a_restarted_node_takes_back_its_own_jobs_at_once(server: RedisServer) -> None:
    name = fresh_name()
    a = node(server, name, "a", claim_timeout=3600)
    other = node(server, name, "b", claim_timeout=3600)
    job = a.admit(Identity("x.wav", 1, 1))
    a.claim()
    mine = a.admit(Identity("y.wav", 1, 1))
    assert other.claim().id == mine.id
    a.close()  # killed
    again = node(server, name, "a", claim_timeout=3600)  # the same node, restarted
    assert again.recover() == (1, [])
    assert again.get(job.id).state == "queued"
    assert again.get(mine.id).state == "running"  # b's job: b is alive (and not timed out)


def test_two_intake_nodes_scanning_one_share_admit_each_file_once(server: RedisServer) -> None:
    name = fresh_name()
    nodes = [node(server, name, f"intake{n}") for n in range(2)]
    admitted: list[str] = []
    start = threading.Barrier(2)

    def scan(q: RedisQueue) -> None:
        start.wait()
        for n in range(50):
            job = q.admit(Identity(f"lib/e{n:02d}.mkv", n + 1, n + 1))
            if job is not None:
                admitted.append(job.rel_path)

    threads = [threading.Thread(target=scan, args=(q,)) for q in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(admitted) == [f"lib/e{n:02d}.mkv" for n in range(50)]
    assert nodes[0].counts()["queued"] == 50


def test_workers_on_two_nodes_claim_each_job_once(server: RedisServer) -> None:
    name = fresh_name()
    nodes = [node(server, name, f"w{n}") for n in range(3)]
    for n in range(60):
        nodes[0].admit(Identity(f"f{n}.wav", n, n), priority=n % 3)
    claimed: list[tuple[str, int]] = []

    def work(q: RedisQueue) -> None:
        while (job := q.claim()) is not None:
            claimed.append((job.id, job.priority))
            q.finish(job.id, [], "en", "ok", 1.0, 1.0)

    threads = [threading.Thread(target=work, args=(q,)) for q in nodes for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 60 == len({i for i, _ in claimed})
    assert nodes[1].counts()["done"] == 60


def test_cluster_names_keep_two_libraries_on_one_redis_apart(server: RedisServer) -> None:
    films, music = node(server, fresh_name(), "a"), node(server, fresh_name(), "a")
    films.admit(Identity("x.wav", 1, 1))
    assert not music.known(Identity("x.wav", 1, 1))
    assert music.claim() is None and music.counts()["queued"] == 0
    assert films.claim() is not None


# ---------------------------------------------------------------------------- Redis away

def test_redis_unreachable_at_start_is_one_clear_error() -> None:
    link = Link(f"redis://:secret@127.0.0.1:{free_port()}/0")
    with pytest.raises(JournalUnavailable) as caught:
        link.connect(wait=False)
    message = str(caught.value)
    assert "cannot reach Redis at redis://:***@127.0.0.1" in message
    assert "cluster.wait_for_backend" in message and "secret" not in message
    assert "\n" not in message


def test_wait_for_backend_waits_until_redis_answers(tmp_path: Path) -> None:
    later = RedisServer(tmp_path / "redis")
    link = Link(later.url)
    connected = threading.Event()
    waiter = threading.Thread(target=lambda: (link.connect(wait=True), connected.set()))
    waiter.start()
    try:
        assert not connected.wait(1.0)
        later.start()
        assert connected.wait(30)
    finally:
        later.kill()
        waiter.join(30)


def test_redis_lost_while_running_is_a_problem_until_it_returns_and_nothing_is_lost(
        tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        q = node(server, fresh_name(), "a")
        q.admit(Identity("a.wav", 1, 1))
        running = q.claim()
        server.kill()  # kill -9: appendfsync always kept every acknowledged write
        with pytest.raises(JournalUnavailable):
            q.finish(running.id, ["/out/a.en.srt"], "en", "ok", 1.0, 1.0)
        assert q.problem and "cannot reach Redis" in q.problem
        with pytest.raises(JournalUnavailable):
            q.admit(Identity("b.wav", 1, 1))
        server.start()  # same port, same folder: the AOF is read back
        q.finish(running.id, ["/out/a.en.srt"], "en", "ok", 1.0, 1.0)  # what Outcomes retries
        assert q.problem is None
        assert q.get(running.id).state == "done" and q.heartbeat(running.id) is False
        q.admit(Identity("b.wav", 1, 1))
        assert q.claim().rel_path == "b.wav"
    finally:
        server.kill()


def test_a_url_with_a_password_is_never_shown() -> None:
    assert shown_url("redis://user:pw@nas:6380/1") == "redis://user:***@nas:6380/1"
    assert shown_url("redis://nas:6379/0") == "redis://nas:6379/0"


# ---------------------------------------------------------------------------- events

def cluster_bus(server: RedisServer, name: str, node_name: str) -> tuple[EventBus, ClusterEvents]:
    link = Link(server.url)
    link.connect(wait=False)
    bus = EventBus(history_size=100)
    events = ClusterEvents(link, f"{name}:", bus, node_name, cap=1000)
    events.start()
    stop = events.stop

    def stop_and_close(flush_seconds: float = 2.0) -> None:  # the link's socket too
        stop(flush_seconds)
        link.close()

    events.stop = stop_and_close  # type: ignore[method-assign]
    return bus, events


def test_every_nodes_events_reach_every_node_with_the_same_ids(server: RedisServer) -> None:
    name = fresh_name()
    bus_a, events_a = cluster_bus(server, name, "a")
    bus_b, events_b = cluster_bus(server, name, "b")
    counted: list[int] = []
    bus_a.on_publish.append(lambda e: counted.append(e.id))
    try:
        bus_a.publish(EventType.JOB_QUEUED, "aaaaaaaaaaaaaaaa", {"input": "x.wav"})
        bus_b.publish(EventType.JOB_STARTED, "aaaaaaaaaaaaaaaa", {"input": "x.wav"})
        bus_b.publish(EventType.PROGRESS, "aaaaaaaaaaaaaaaa", {"percent": 50.0})
        wait_for(lambda: len(bus_a.history()) == 3 and len(bus_b.history()) == 3, 10,
                 "three events on both nodes")
        seen_a = [(e.id, e.type, e.payload["node"]) for e in bus_a.history()]
        assert seen_a == [(e.id, e.type, e.payload["node"]) for e in bus_b.history()]
        # the two nodes publish concurrently: the cluster orders them, in whichever order
        # their batches reached it, the same on every node
        assert sorted(n for _, _, n in seen_a) == ["a", "b", "b"]
        ids = [i for i, _, _ in seen_a]
        assert ids == sorted(set(ids)) and ids[0] > 1_600_000_000_000  # above the time in ms
        assert [e.id for e in bus_a.history("aaaaaaaaaaaaaaaa", after_id=ids[0])] == ids[1:]
        assert counted == [i for i, _, n in seen_a if n == "a"]  # a's metrics: its own only
        assert bus_a.last_id == bus_b.last_id == ids[-1]
        # a node started later reads the history from before its start
        bus_c, events_c = cluster_bus(server, name, "c")
        wait_for(lambda: [e.id for e in bus_c.history()] == ids, 10, "history on a new node")
        # /status' events.last_id, where the live page starts its stream: the cluster's newest
        # id, not the later node's own clock (the page would then skip every event)
        assert bus_c.last_id == ids[-1]
        events_c.stop()
    finally:
        events_a.stop()
        events_b.stop()


def test_a_batch_sent_again_after_a_lost_reply_is_stored_once(server: RedisServer) -> None:
    name = fresh_name()
    bus, events = cluster_bus(server, name, "a")
    try:
        bus.publish(EventType.JOB_DONE, "bbbbbbbbbbbbbbbb", {"result": "ok"})
        wait_for(lambda: len(bus.history()) == 1, 10, "the event")
        (event,) = bus.history()
        events._send([(1, event)])  # the same seq again, as a retry after a lost reply would
        bus.publish(EventType.JOB_QUEUED, "cccccccccccccccc", {})
        wait_for(lambda: len(bus.history()) == 2, 10, "the next event")
        assert [e.type for e in bus.history()] == ["signal.job_done", "signal.job_queued"]
        assert server.client().xlen(f"{name}:events") == 2
    finally:
        events.stop()


def test_events_published_while_redis_is_away_arrive_when_it_returns(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    bus, events = cluster_bus(server, fresh_name(), "a")
    try:
        bus.publish(EventType.JOB_QUEUED, "dddddddddddddddd", {})
        wait_for(lambda: len(bus.history()) == 1, 10, "the first event")
        server.kill()
        for _ in range(3):
            bus.publish(EventType.PROGRESS, "dddddddddddddddd", {"percent": 10.0})
        bus.publish(EventType.JOB_DONE, "dddddddddddddddd", {"result": "ok"})
        time.sleep(1.5)
        assert len(bus.history()) == 1 and events.backlog == 4  # waiting, not lost
        server.start()
        wait_for(lambda: len(bus.history()) == 5, 30, "the events after Redis returned")
        assert bus.history()[-1].type == "signal.job_done"
    finally:
        events.stop()
        server.kill()


async def test_an_event_thread_that_hits_an_unexpected_error_goes_on_and_healthz_says_so(
        server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises on the reader thread once (a bug): the error is logged once with its
    traceback, /healthz is degraded ("cluster events") until events cross again, and they do:
    the thread went on instead of ending in silence."""
    name = fresh_name()
    (tmp_path / "inbox").mkdir()
    async with running_service(tmp_path / "i", **cluster_tables(
            server, tmp_path, name, "intake", "state-i")) as service:
        fired = threading.Event()

        def broken_hook(event: Any) -> None:  # on_publish runs on the reader thread
            if event.job_id == "eeeeeeeeeeeeeeee" and not fired.is_set():
                fired.set()
                raise RuntimeError("a metrics hook with a bug")
        service.bus.on_publish.append(broken_hook)
        service.bus.publish(EventType.JOB_QUEUED, "eeeeeeeeeeeeeeee", {"input": "x.wav"})
        await wait_until(lambda: "cluster events" in service.monitor.public_health()[1], 30,
                         "/healthz degraded by the failing event thread")
        ok, reasons = service.monitor.health()
        assert not ok and any("RuntimeError('a metrics hook with a bug')" in r for r in reasons)
        service.bus.publish(EventType.JOB_DONE, "eeeeeeeeeeeeeeee", {"result": "ok"})
        await wait_until(lambda: [e.type for e in service.bus.history("eeeeeeeeeeeeeeee")] == [
            "signal.job_queued", "signal.job_done"], 30, "the next event, read after the error")
        await wait_until(lambda: service.monitor.healthy(), 30, "healthy again")
    failures = [r for r in caplog.records if "cluster events: reading failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None  # once, with its traceback


async def test_a_second_daemon_beating_under_this_nodes_id_makes_healthz_degraded(
        server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two daemons that started in the same instant both pass the start's check; the beats
    see it then: an error in the log and /healthz degraded, no fight; ok again once the other
    is gone."""
    name = fresh_name()
    (tmp_path / "inbox").mkdir()
    async with running_service(tmp_path / "i", **cluster_tables(
            server, tmp_path, name, "intake", "state-i")) as service:
        me = service.journal.describe()["node"]
        other = node(server, name, me, claim_timeout=3.0)  # the twin's queue: its own life
        twin_gone = threading.Event()

        def twin() -> None:  # beats like a second daemon's node, with its own token
            while not twin_gone.is_set():
                other.registry.beat(me, {"token": other.life, "pid": 4242, "host": "twin"}, 3.0)
                twin_gone.wait(0.3)
        beating = threading.Thread(target=twin)
        beating.start()
        try:
            await wait_until(lambda: "cluster node id in use twice"
                             in service.monitor.public_health()[1], 30, "/healthz degraded")
            (reason,) = [r for r in service.monitor.health()[1] if "in use twice" in r]
            assert f"{me!r}" in reason and "pid 4242 on twin" in reason
            assert "delete state_dir/cluster-node on one of them" in reason
        finally:
            twin_gone.set()
            beating.join(10)
            other.close()
        await wait_until(lambda: service.monitor.healthy(), 30, "healthy once the twin is gone")
        assert service.life.tasks[0].get_name() == "cluster" and not service.life.tasks[0].done()
    said = [r for r in caplog.records if "is in use by another daemon too" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "ERROR"


# ---------------------------------------------------------------------------- config

def test_cluster_config_is_checked_at_start(tmp_path: Path) -> None:
    config = config_from_dict({"cluster": {"backend": "redis", "role": "worker",
                                           "url": "redis://nas:6379/2", "name": "films",
                                           "claim_timeout": 30, "wait_for_backend": True}},
                              base=tmp_path)
    assert config.cluster.role == "worker" and config.cluster.claim_timeout == 30.0
    assert config_from_dict({}, base=tmp_path).cluster.backend == "sqlite"
    bad = [({"role": "worker"}, "needs cluster.backend"),
           ({"backend": "postgres"}, "cluster.backend"),
           ({"backend": "redis", "url": "http://nas"}, "cluster.url"),
           ({"backend": "redis", "name": "a b"}, "cluster.name"),
           ({"backend": "redis", "claim_timeout": 0}, "cluster.claim_timeout"),
           ({"backend": "redis", "role": "boss"}, "cluster.role")]
    for table, key in bad:
        with pytest.raises(ConfigError, match=key):
            config_from_dict({"cluster": table}, base=tmp_path)


# ---------------------------------------------------------------------------- two services

def cluster_tables(server: RedisServer, shared: Path, name: str, role: str,
                   state: str) -> dict[str, Any]:
    return {"paths": {"inbox": str(shared / "inbox"), "outbox": str(shared / "outbox"),
                      "state_dir": str(shared / state)},
            "cluster": {"backend": "redis", "url": server.url, "name": name, "role": role,
                        "claim_timeout": 3.0}}


async def test_an_sse_client_on_the_intake_node_sees_jobs_run_by_a_worker_node(
        server: RedisServer, tmp_path: Path) -> None:
    """Two services in one process (their own state_dirs, one inbox and outbox, one Redis):
    the intake node runs no job, yet its /events shows every job's signals, drafts and finals
    with the worker node's ids, a reconnect replays what was missed, and /status lists both
    nodes."""
    name = fresh_name()
    (tmp_path / "inbox").mkdir()
    async with running_service(tmp_path / "i", **cluster_tables(
                server, tmp_path, name, "intake", "state-i")) as intake, \
            running_service(tmp_path / "w", transcribe=ScriptedPipeline(), **cluster_tables(
                server, tmp_path, name, "worker", "state-w")) as worker, \
            aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{intake.http_port}"
        worker_node = worker.journal.describe()["node"]
        first: list[dict[str, Any]] = []
        resp = await http.get(url + "/events")
        reader = asyncio.create_task(read_sse(resp, first))
        for n in range(3):
            (tmp_path / "inbox" / f"a{n}.wav").write_bytes(b"RIFF" + bytes(100))
        await wait_until(lambda: done(first) == 3, 60, "three jobs done, seen on the intake")
        reader.cancel()
        resp.close()
        started = [e for e in first if e["event"] == "signal.job_started"]
        assert len(started) == 3 and {e["data"]["payload"]["node"] for e in started} == {
            worker_node}
        assert any(e["event"] == "subtitle.overwrite" for e in first)
        ids = [e["id"] for e in first]
        assert ids == sorted(set(ids))

        for n in range(3, 5):  # while the client is away
            (tmp_path / "inbox" / f"a{n}.wav").write_bytes(b"RIFF" + bytes(100))
        await wait_until(lambda: worker_done(worker) == 5, 60,
                         "two more jobs done")
        again: list[dict[str, Any]] = []
        resp = await http.get(url + "/events", headers={"Last-Event-ID": str(ids[-1])})
        reader = asyncio.create_task(read_sse(resp, again))
        await wait_until(lambda: done(again) == 2, 30, "the missed jobs replayed")
        reader.cancel()
        resp.close()
        replayed = [e["id"] for e in again]
        assert replayed == sorted(set(replayed)) and replayed[0] > ids[-1]
        on_worker = [e.id for e in worker.bus.history() if e.id > ids[-1]]
        assert replayed[:len(on_worker)] == on_worker  # no gap, no duplicate, same ids

        job_id = started[0]["data"]["job_id"]
        history = await (await http.get(f"{url}/jobs/{job_id}/events/history")).json()
        assert [e["id"] for e in history["events"]] == [
            e.id for e in worker.bus.history(job_id)]
        status = await (await http.get(url + "/status")).json()
        nodes = {n["node"]: n for n in status["cluster"]["nodes"]}
        assert {nodes[n]["role"] for n in nodes} == {"intake", "worker"} and all(
            n["alive"] for n in nodes.values())
        assert status["queue"]["done"] == 5 and status["cluster"]["backend"] == "redis"
        assert f"node:    {worker_node}  worker on " in format_status(status)  # subwatch status


async def test_a_job_running_on_one_node_is_canceled_from_another(
        server: RedisServer, tmp_path: Path) -> None:
    """Before, only the node running a job could cancel it; any other answered 409. Now the
    asking node answers `canceling`, the running node hears it through the cluster's events and
    stops the job mid-transcription, and the job is canceled once, saying where it was asked."""
    name = fresh_name()
    (tmp_path / "inbox").mkdir()
    scripted = ScriptedPipeline(hold_after=1)
    async with running_service(tmp_path / "i", **cluster_tables(
                server, tmp_path, name, "intake", "state-i")) as intake, \
            running_service(tmp_path / "w", transcribe=scripted, **cluster_tables(
                server, tmp_path, name, "worker", "state-w")) as worker, \
            aiohttp.ClientSession() as http:
        (tmp_path / "inbox" / "long.wav").write_bytes(b"RIFF" + bytes(100))
        await wait_until(scripted.held.is_set, 60, "the job running on the worker node")
        (job,) = worker.journal.list_jobs()
        assert job.state == "running" and job.id in worker.running
        resp = await http.post(f"http://127.0.0.1:{intake.http_port}/jobs/{job.id}/cancel",
                               json={})
        assert resp.status == 200 and (await resp.json())["state"] == "canceling"
        await wait_until(lambda: worker.journal.get(job.id).state == "canceled", 30,
                         "the job canceled on the worker node")
        ended = worker.journal.get(job.id)
        intake_node = intake.journal.describe()["node"]
        assert intake_node in (ended.message or ""), ended.message
        assert scripted.emitted == 1 and not scripted.release.is_set()  # stopped mid-run
        types = [e.type for e in worker.bus.history(job.id)]
        assert types.count("signal.cancel_requested") == 1
        assert types.count("signal.job_canceled") == 1 and "signal.job_done" not in types


def done(events: list[dict[str, Any]]) -> int:
    return sum(e["event"] == "signal.job_done" for e in events)


def worker_done(service: Any) -> int:
    return int(service.journal.counts()["done"])



# ---------------------------------------------------------------------------- real daemons

KILL_ON_OPEN = '''"""Test hook (tests/test_cluster.py): SIGKILL this process when it opens a
file named $SUBWATCH_TEST_KILL_ON_OPEN, as a decoder that crashes on a poison file would."""
import builtins
import os
import signal

_TARGET = os.environ.get("SUBWATCH_TEST_KILL_ON_OPEN")
_os_open, _open = os.open, builtins.open


def _check(path):
    named = isinstance(path, (str, bytes, os.PathLike))
    if named and os.path.basename(os.fsdecode(path)) == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)


def _os_open_or_die(path, *args, **kwargs):
    _check(path)
    return _os_open(path, *args, **kwargs)


def _open_or_die(file, *args, **kwargs):
    _check(file)
    return _open(file, *args, **kwargs)


if _TARGET:
    os.open, builtins.open = _os_open_or_die, _open_or_die
'''
PROCESS_CLAIM_TIMEOUT = 4.0


class Cluster:
    """Daemon processes on one Redis, each with its own state_dir, on one shared inbox and
    outbox (as several machines on one NFS or SMB share)."""

    def __init__(self, root: Path, server: RedisServer) -> None:
        self.root = root
        self.server = server
        self.inbox, self.outbox = root / "inbox", root / "outbox"
        self.inbox.mkdir()
        self.nodes: list[DaemonProcess] = []
        self.name = "library"
        self.observer = node(server, self.name, "observer", claim_timeout=3600)

    def node(self, role: str, **tables: dict[str, Any]) -> DaemonProcess:
        root = self.root / f"node{len(self.nodes)}"
        root.mkdir()
        config: dict[str, dict[str, Any]] = {
            "paths": {"inbox": str(self.inbox), "outbox": str(self.outbox)},
            "cluster": {"backend": "redis", "url": self.server.url, "name": self.name,
                        "role": role, "claim_timeout": PROCESS_CLAIM_TIMEOUT},
            "whisper": {"cpu_threads": 1}}
        for table, values in tables.items():
            config.setdefault(table, {}).update(values)
        daemon = DaemonProcess(root, **config)
        self.nodes.append(daemon)
        return daemon

    def start(self, *daemons: DaemonProcess) -> None:
        for d in daemons:
            d.start(wait=False)
        for d in daemons:
            d.wait_ready(120)

    def jobs(self) -> list[Job]:
        return self.observer.list_jobs(limit=10_000)

    def by_path(self) -> dict[str, list[Job]]:
        out: dict[str, list[Job]] = {}
        for job in self.jobs():
            out.setdefault(job.rel_path, []).append(job)
        return out

    def finished(self, names: list[str]) -> bool:
        jobs = self.by_path()
        return all(n in jobs and jobs[n][0].state in FINAL_STATES for n in names)

    def done_lines(self, rel: str) -> int:
        """How many times the nodes' logs say `rel` was done (the oracle's test, summed)."""
        return sum(d.log.read_text(errors="replace").count(f"done {rel!r}:")
                   for d in self.nodes)

    def close(self) -> None:
        for d in self.nodes:
            d.kill()
        self.observer.close()


def node_name(d: DaemonProcess) -> str:
    return (d.root / "state" / "cluster-node").read_text().strip()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    server = RedisServer(tmp_path / "redis").start()
    running = Cluster(tmp_path, server)
    try:
        yield running
    finally:
        running.close()
        server.kill()


def check_once_each(c: Cluster, names: list[str], speech_text: str) -> dict[str, Job]:
    """Each input one job, done, its SRT whole and right, done once over all the logs."""
    jobs = c.by_path()
    assert sorted(jobs) == sorted(names), sorted(jobs)
    out = {}
    for rel in names:
        (job,) = jobs[rel]
        assert job.state == "done", (rel, job.state, job.error, job.message)
        (srt,) = [Path(p) for p in job.outputs if p.endswith(".srt")]
        assert oracle.valid_srt(srt) and wer(speech_text, srt_text(srt)) <= 0.25, srt_text(srt)
        assert c.done_lines(rel) == 1, (rel, c.done_lines(rel))
        out[rel] = job
    subtitles = sorted(p.name for p in c.outbox.rglob("*.srt"))
    assert subtitles == sorted(f"{Path(n).stem}.en.srt" for n in names)
    assert not oracle.temp_files(c.outbox)
    return out


async def test_three_daemons_on_one_redis_transcribe_thirty_files_once_each(
        cluster: Cluster, short_wav: Path, short_speech: Speech) -> None:
    """One intake+worker node and two worker nodes: 30 files dropped, 30 right SRTs, each
    identity done once; an SSE client on the intake node sees the jobs the workers ran, and
    after a reconnect the replay fills what it missed with the same ids every node has."""
    first = cluster.node("all")
    workers = [cluster.node("worker"), cluster.node("worker")]
    cluster.start(first, *workers)
    names = [f"batch/clip {n:02d}.wav" for n in range(30)]
    (cluster.inbox / "batch").mkdir()
    url = f"http://127.0.0.1:{first.port}"
    async with aiohttp.ClientSession() as http:
        seen: list[dict[str, Any]] = []
        resp = await http.get(url + "/events")
        reader = asyncio.create_task(read_sse(resp, seen))
        for name in names:
            shutil.copy(short_wav, cluster.inbox / name)
        await wait_until(lambda: done(seen) >= 8, 600, "the first jobs done")
        reader.cancel()
        resp.close()
        missed_after = seen[-1]["id"]
        await asyncio.sleep(1.0)  # events go on while the client is away
        again: list[dict[str, Any]] = []
        resp = await http.get(url + "/events", headers={"Last-Event-ID": str(missed_after)})
        reader = asyncio.create_task(read_sse(resp, again))
        await wait_until(lambda: done(seen) + done(again) == 30, 900, "30 jobs done")
        reader.cancel()
        resp.close()
        everything: list[dict[str, Any]] = []  # the whole stream, replayed by a worker node
        resp = await http.get(f"http://127.0.0.1:{workers[0].port}/events",
                              headers={"Last-Event-ID": str(seen[0]["id"] - 1)})
        reader = asyncio.create_task(read_sse(resp, everything))
        await wait_until(lambda: done(everything) == 30, 60, "the replay on a worker node")
        reader.cancel()
        resp.close()

    check_once_each(cluster, names, short_speech.text)
    received = seen + again
    ids = [e["id"] for e in received]
    assert ids == sorted(set(ids)) and again[0]["id"] > missed_after
    kept = [e["id"] for e in received if e["data"]["priority"] > 0]  # never dropped
    assert kept == [e["id"] for e in everything
                    if e["data"]["priority"] > 0 and e["id"] <= ids[-1]]  # no gap, same ids
    finals = [e for e in received if e["event"] == "signal.job_done"]
    assert len({e["data"]["job_id"] for e in finals}) == 30
    ran_on = {e["data"]["payload"]["node"] for e in finals}
    assert ran_on & {node_name(w) for w in workers}, ran_on  # jobs the other workers ran
    status = first.status()
    assert {n["node"] for n in status["cluster"]["nodes"] if n["alive"]} == {
        node_name(d) for d in cluster.nodes}
    assert status["queue"]["done"] == 30
    assert all(d.healthz()["status"] == "ok" for d in cluster.nodes)


def test_a_worker_killed_mid_job_is_taken_over_and_the_job_done_once(
        cluster: Cluster, tmp_path: Path) -> None:
    intake = cluster.node("intake")
    workers = [cluster.node("worker"), cluster.node("worker")]
    cluster.start(intake, *workers)
    long_speech_wav(cluster.inbox / "long.wav", sentences=8)

    def running_on() -> DaemonProcess | None:
        for w in workers:
            if any(r["percent"] > 0 for r in w.status()["running"]):
                return w
        return None
    victim = wait_for(running_on, 300, "the long job under way on a worker")
    victim.kill()  # kill -9: no stop, no requeue, no heartbeat any more
    (survivor,) = [w for w in workers if w is not victim]
    survivor.wait_for(lambda: survivor.status()["running"], PROCESS_CLAIM_TIMEOUT * 3 + 30,
                      "the job taken over by the other worker")
    survivor.wait_for(lambda: cluster.finished(["long.wav"]), 300, "the job finished")
    (job,) = cluster.by_path()["long.wav"]
    assert job.state == "done" and job.attempts == 2  # the dead worker's attempt is charged
    assert cluster.done_lines("long.wav") == 1
    assert "done 'long.wav':" in survivor.log.read_text()
    assert oracle.valid_srt(cluster.outbox / "long.en.srt")
    assert survivor.healthz()["status"] == intake.healthz()["status"] == "ok"


def test_a_file_that_kills_every_worker_is_failed_after_max_attempts_with_its_error_file(
        cluster: Cluster, tmp_path: Path, short_wav: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_ON_OPEN)
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("SUBWATCH_TEST_KILL_ON_OPEN", "poison.wav")
    # only the decode may open it: no skip rule that reads headers at intake
    tables: dict[str, Any] = {"jobs": {"max_attempts": 2},
                              "skip": {"embedded_subtitles": False}}
    nodes = [cluster.node("all", **tables), cluster.node("worker", **tables)]
    cluster.start(*nodes)
    shutil.copy(short_wav, cluster.inbox / "good.wav")
    shutil.copy(short_wav, cluster.inbox / "poison.wav")
    deaths: list[str] = []

    def restart_the_dead() -> None:  # as systemd's Restart=on-failure does
        for d in nodes:
            if d.proc is not None and d.proc.poll() is not None:
                assert d.proc.returncode == -9, d.log.read_text()[-3000:]
                deaths.append(node_name(d))
                d.start(wait=False)

    def settled() -> bool:
        restart_the_dead()
        return cluster.finished(["good.wav", "poison.wav"]) and bool(
            oracle.error_files(cluster.outbox))
    wait_for(settled, 600, "the poison failed and the good file done")
    (poison,) = cluster.by_path()["poison.wav"]
    assert poison.state == "failed" and poison.error == "crashed" and poison.attempts == 2
    assert len(deaths) == 2, deaths  # each attempt killed one worker, then no more
    record = oracle.error_files(cluster.outbox)["poison.wav"]
    assert record["error"] == "crashed" and record["attempts"] == 2
    (good,) = cluster.by_path()["good.wav"]
    assert good.state == "done" and cluster.done_lines("good.wav") == 1


def test_redis_killed_and_restarted_during_a_batch_loses_nothing_and_does_nothing_twice(
        cluster: Cluster, short_wav: Path, short_speech: Speech) -> None:
    nodes = [cluster.node("all"), cluster.node("worker")]
    cluster.start(*nodes)
    names = [f"r{n}.wav" for n in range(6)]
    for name in names:
        shutil.copy(short_wav, cluster.inbox / name)
    wait_for(lambda: cluster.observer.counts()["done"] >= 1, 300, "the first job done")
    cluster.server.kill()  # kill -9 of Redis (appendfsync always: nothing acknowledged is lost)
    for d in nodes:
        d.wait_for(lambda d=d: "journal degraded" in d.healthz().get("reasons", []), 60,
                   "/healthz degraded while Redis is away")
    time.sleep(PROCESS_CLAIM_TIMEOUT)  # longer than a claim timeout: no takeover after it
    cluster.server.start()
    wait_for(lambda: cluster.finished(names), 600, "the batch finished after Redis returned")
    check_once_each(cluster, names, short_speech.text)
    assert all(j.attempts == 1 for j in cluster.jobs())  # none taken over, none run twice
    for d in nodes:
        d.wait_for(lambda d=d: d.healthz()["status"] == "ok", 60, "healthy again")


def test_a_daemon_without_redis_exits_with_one_line_or_waits_for_it(tmp_path: Path) -> None:
    later = RedisServer(tmp_path / "redis")
    common = {"cluster": {"backend": "redis", "url": later.url}}
    (tmp_path / "a").mkdir()
    refused = DaemonProcess(tmp_path / "a", **common).start(wait=False)
    assert refused.wait_exit(60) == 1
    lines = [line for line in refused.log.read_text().splitlines() if line.strip()]
    assert len([line for line in lines if "cannot reach Redis" in line]) == 1, lines
    assert "cannot start: cannot reach Redis at " + later.url in lines[-1]
    (tmp_path / "b").mkdir()
    waiting = DaemonProcess(tmp_path / "b", cluster={**common["cluster"],
                                                      "wait_for_backend": True},
                            models={"preload": []}).start(wait=False)
    try:
        waiting.wait_for(lambda: "waiting for it" in waiting.log.read_text(), 60,
                         "a line saying it waits")
        later.start()
        waiting.wait_ready(120)
    finally:
        waiting.kill()
        later.kill()


def test_a_second_daemon_with_a_copied_node_id_refuses_to_start_with_one_line(
        tmp_path: Path) -> None:
    """A state_dir copied to a second machine: the copy's daemon finds its node id beating
    under another process and exits 1 with one line that names the id and the fix, leaving the
    first alone; with the file deleted it joins under a new id."""
    server = RedisServer(tmp_path / "redis").start()
    common = {"cluster": {"backend": "redis", "url": server.url, "role": "intake",
                          "claim_timeout": PROCESS_CLAIM_TIMEOUT}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = DaemonProcess(tmp_path / "a", **common)
    copy = DaemonProcess(tmp_path / "b", **common)
    try:
        first.start()
        (tmp_path / "b" / "state").mkdir(parents=True)
        shutil.copy(tmp_path / "a" / "state" / "cluster-node", tmp_path / "b" / "state")
        name = node_name(first)
        assert copy.start(wait=False).wait_exit(60) == 1
        lines = [line for line in copy.log.read_text().splitlines() if line.strip()]
        said = [line for line in lines if "in use by another daemon too" in line]
        assert said == [lines[-1]], lines
        assert f"cannot start: cluster node id {name!r} is in use by another daemon too" in said[0]
        assert "delete state_dir/cluster-node on one of them" in said[0]
        assert first.healthz()["status"] == "ok"
        assert "in use by another daemon" not in first.log.read_text()
        (tmp_path / "b" / "state" / "cluster-node").unlink()
        copy.start()  # ready: under a new id
        assert node_name(copy) != name
        nodes = {n["node"] for n in first.status()["cluster"]["nodes"]}
        assert nodes == {name, node_name(copy)}
    finally:
        copy.kill()
        first.kill()
        server.kill()


def test_a_node_stopped_and_restarted_at_once_starts_without_watching_its_own_record(
        cluster: Cluster) -> None:
    """`systemctl restart`: a node that stops cleanly takes its record down, so its next start
    does not take it for a second daemon and wait half a claim timeout to tell."""
    (only,) = [cluster.node("all")]
    cluster.start(only)
    name = node_name(only)
    only.signal(15)
    assert only.wait_exit(60) == 0
    only.start()
    assert node_name(only) == name
    assert "fresh record from another process life" not in only.log.read_text()
    assert only.healthz()["status"] == "ok"


def test_a_node_killed_and_restarted_with_its_own_id_starts_and_takes_back_its_job(
        cluster: Cluster) -> None:
    """kill -9 mid-job and a restart at once (as systemd's): its own record is still fresh,
    from a dead life; the start tells it from a second daemon (the record no longer moves),
    starts, and takes back its job at once, done once with the dead attempt charged."""
    (only,) = [cluster.node("all")]
    cluster.start(only)
    name = node_name(only)
    long_speech_wav(cluster.inbox / "long.wav", sentences=8)
    only.wait_for(lambda: any(r["percent"] > 0 for r in only.status()["running"]), 300,
                  "the long job under way")
    only.kill()
    only.start()  # well within a claim timeout of its last beat
    assert node_name(only) == name
    only.wait_for(lambda: cluster.finished(["long.wav"]), 300, "the job finished")
    (job,) = cluster.by_path()["long.wav"]
    assert job.state == "done" and job.attempts == 2
    assert cluster.done_lines("long.wav") == 1
    assert "fresh record from another process life" in only.log.read_text()
    assert only.healthz()["status"] == "ok"
