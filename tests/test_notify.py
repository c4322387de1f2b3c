"""Notifications and library refreshes out (issue 14): the documented JSON and the refresh calls
reach local servers; a receiver that hangs delays no job; one that is down is retried with
backoff and served after a restart. A real daemon in-process (real journal, real HTTP both
ways), a scripted pipeline: these tests are about delivery, not transcription."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from daemon.config import NotifyConfig
from daemon.errors import InputError
from daemon.notifications import backoff_delay
from testkit.daemon import free_port, running_service, wait_until
from testkit.fake_servers import FakeMediaBrowser, FakePlex, Receiver
from testkit.media import write_wav
from testkit.scripted import ScriptedPipeline

DOC_KEYS = {"event", "event_id", "timestamp", "job", "input", "rel_path", "outputs", "language",
            "result", "error", "message", "durations", "subwatch"}


def drop(root: Path, name: str) -> Path:
    return write_wav(root / "inbox" / name, np.zeros(1600, np.float32))


def owed(root: Path) -> list[dict[str, Any]]:
    """The notification outbox, read straight from its file."""
    path = root / "state" / "notifications.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        db.close()


def notify(url: str, **more: Any) -> dict[str, Any]:
    return {"webhook_url": url + "/notify", "retry_backoff_seconds": 0.05, **more}


async def test_done_and_failed_jobs_post_the_documented_json(tmp_path: Path) -> None:
    pipeline = ScriptedPipeline(failures=[InputError("not_media", "not a readable media file")])
    async with Receiver() as receiver, \
            running_service(tmp_path, transcribe=pipeline, notify=notify(receiver.url)) \
            as service:
        drop(tmp_path, "bad.wav")
        await wait_until(lambda: len(receiver.documents) == 1, 30, "the failure notified")
        drop(tmp_path, "show/good.wav")
        await wait_until(lambda: len(receiver.documents) == 2, 30, "the success notified")
        failed, done = receiver.documents
        assert set(done) == set(failed) == DOC_KEYS
        job = service.journal.get(done["job"]["id"])
        assert done["event"] == "job.done" and failed["event"] == "job.failed"
        assert done["job"] == {"id": job.id, "kind": "file", "state": "done", "attempts": 1,
                               "priority": 0}
        assert done["input"] == str(tmp_path / "inbox" / "show" / "good.wav")
        assert done["rel_path"] == "show/good.wav" and done["outputs"] == job.outputs
        assert done["language"] == "en" and done["result"] == "ok"
        assert done["durations"]["audio_seconds"] == job.audio_seconds
        assert done["durations"]["processing_seconds"] is not None
        assert (failed["error"], failed["message"]) == ("not_media",
                                                        "not a readable media file")
        assert done["subwatch"]["version"]
        posted = receiver.requests_to("/notify")[0]
        assert posted.headers["Content-Type"].startswith("application/json")
        await wait_until(lambda: owed(tmp_path) == [], 10, "the outbox emptied")


SERVERS_SEE_TV_AT = "/media/tv"  # the servers' path for the sidecar library `tv` (<root>/tv)


def libraries_and_maps(root: Path) -> dict[str, Any]:
    """A sidecar library `tv` (the servers see it, mapped) and an outbox library `films`."""
    return {"libraries": [{"name": "tv", "path": "tv", "output": "sidecar"},
                          {"name": "films", "path": "films", "output": "outbox"}],
            "path_maps": [{"from": SERVERS_SEE_TV_AT, "to": str(root / "tv")}]}


def servers(jf: Any, emby: Any, plex: Any) -> dict[str, Any]:
    return {"jellyfin": {"url": jf.url, "api_key": "jf", "refresh": True},
            "emby": {"url": emby.url, "api_key": "em", "refresh": True},
            "plex": {"url": plex.url, "token": "px", "refresh": True}}


async def test_refresh_calls_reach_each_media_server_with_its_own_paths(tmp_path: Path) -> None:
    async with FakeMediaBrowser({}, "jf") as jf, FakeMediaBrowser({}, "em", emby=True) as emby, \
            FakePlex("px", {}, {}, {"7": [SERVERS_SEE_TV_AT]}) as plex, \
            running_service(tmp_path, transcribe=ScriptedPipeline(),
                            media_servers=servers(jf, emby, plex),
                            **libraries_and_maps(tmp_path)):
        write_wav(tmp_path / "tv" / "show" / "ep1.wav", np.zeros(1600, np.float32))
        await wait_until(lambda: plex.requests_to("/library/sections/7/refresh"), 30, "plex")
        await wait_until(lambda: jf.requests_to("/Library/Media/Updated")
                         and emby.requests_to("/Library/Media/Updated"), 30, "jellyfin, emby")
        expected = {"Updates": [{"Path": f"{SERVERS_SEE_TV_AT}/show/ep1.en.srt",
                                 "UpdateType": "Created"}]}
        jf_call = jf.requests_to("/Library/Media/Updated")[0]
        assert jf_call.json() == expected
        assert jf_call.headers["Authorization"] == 'MediaBrowser Token="jf"'
        emby_call = emby.requests_to("/Library/Media/Updated")[0]
        assert emby_call.json() == expected and emby_call.headers["X-Emby-Token"] == "em"
        scan = plex.requests_to("/library/sections/7/refresh")[0]
        assert scan.query == {"path": f"{SERVERS_SEE_TV_AT}/show"}
        assert scan.headers["X-Plex-Token"] == "px"
        await wait_until(lambda: owed(tmp_path) == [], 10, "nothing owed")


async def test_only_subtitles_beside_the_media_are_refreshed_not_the_outbox(
        tmp_path: Path) -> None:
    async with FakeMediaBrowser({}, "jf") as jf, FakeMediaBrowser({}, "em", emby=True) as emby, \
            FakePlex("px", {}, {}, {"7": [SERVERS_SEE_TV_AT]}) as plex, \
            running_service(tmp_path, transcribe=ScriptedPipeline(),
                            media_servers=servers(jf, emby, plex),
                            **libraries_and_maps(tmp_path)) as service:
        write_wav(tmp_path / "films" / "film.wav", np.zeros(1600, np.float32))  # outbox library
        drop(tmp_path, "clip.wav")  # the inbox: its subtitle goes to the outbox too
        await wait_until(lambda: sum(j.state == "done" for j in
                                     service.journal.list_jobs(None, 10)) == 2, 30, "two done")
        write_wav(tmp_path / "tv" / "ep2.wav", np.zeros(1600, np.float32))  # sidecar library
        await wait_until(lambda: plex.requests_to("/library/sections/7/refresh")
                         and jf.requests_to("/Library/Media/Updated")
                         and emby.requests_to("/Library/Media/Updated"), 30, "the refreshes")
        await wait_until(lambda: owed(tmp_path) == [], 10, "nothing owed")
        assert (tmp_path / "tv" / "ep2.en.srt").exists()
        assert (tmp_path / "outbox" / "films" / "film.en.srt").exists()
        for server in (jf, emby):
            assert [c.json()["Updates"][0]["Path"] for c in
                    server.requests_to("/Library/Media/Updated")] == [
                f"{SERVERS_SEE_TV_AT}/ep2.en.srt"]
        assert [c.query["path"] for c in plex.requests_to("/library/sections/7/refresh")] == [
            SERVERS_SEE_TV_AT]


async def test_a_receiver_that_never_answers_delays_no_job(tmp_path: Path) -> None:
    """The receiver holds every request open (no answer, no timeout for 10 minutes): if
    delivery were in the pipeline's way, the second job would never start."""
    async with Receiver() as receiver, \
            running_service(tmp_path, transcribe=ScriptedPipeline(),
                            notify=notify(receiver.url, timeout=600)) as service:
        receiver.hold.clear()
        for i in range(3):
            drop(tmp_path, f"f{i}.wav")
        await wait_until(lambda: service.journal.counts()["done"] == 3, 60, "three jobs done")
        await wait_until(lambda: receiver.waiting == 1, 10, "the first notification in flight")
        assert len(receiver.documents) == 1  # ... and still unanswered, all jobs done meanwhile
        receiver.hold.set()
        await wait_until(lambda: len(receiver.documents) == 3 and owed(tmp_path) == [], 30,
                         "all three delivered once it answers")


async def test_a_dead_receiver_is_retried_with_backoff_and_served_after_a_restart(
        tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}"
    async with running_service(tmp_path, transcribe=ScriptedPipeline(),
                               notify=notify(url, max_backoff_seconds=0.2)) as service:
        drop(tmp_path, "a.wav")
        await wait_until(lambda: service.journal.counts()["done"] == 1, 30, "the job done")
        await wait_until(lambda: owed(tmp_path) and owed(tmp_path)[0]["attempts"] >= 3, 30,
                         "tried again, and again")
        row = owed(tmp_path)[0]
        assert row["target"] == "webhook" and "Connect" in row["last_error"]
    assert len(owed(tmp_path)) == 1  # kept across the stop
    async with Receiver(port=port) as receiver, \
            running_service(tmp_path, transcribe=ScriptedPipeline(), notify=notify(url)):
        await wait_until(lambda: receiver.documents, 30, "delivered after the restart")
        await wait_until(lambda: owed(tmp_path) == [], 10, "and no longer owed")
        assert [d["rel_path"] for d in receiver.documents] == ["a.wav"]


async def test_an_error_answer_is_retried_until_a_2xx(tmp_path: Path) -> None:
    async with Receiver(statuses=[500, 503, 404]) as receiver, \
            running_service(tmp_path, transcribe=ScriptedPipeline(),
                            notify=notify(receiver.url)):
        drop(tmp_path, "a.wav")
        await wait_until(lambda: len(receiver.documents) == 4 and owed(tmp_path) == [], 30,
                         "three refusals, then accepted")
        assert len({d["event_id"] for d in receiver.documents}) == 1  # one event, redelivered


def test_backoff_doubles_from_the_first_wait_up_to_the_cap() -> None:
    cfg = NotifyConfig(retry_backoff_seconds=5, max_backoff_seconds=60)
    assert [backoff_delay(n, cfg) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]


async def test_nothing_is_kept_when_nothing_is_configured(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service:
        drop(tmp_path, "a.wav")
        await wait_until(lambda: service.journal.counts()["done"] == 1, 30, "done")
        await asyncio.sleep(0.3)
        assert owed(tmp_path) == []


async def test_jobs_that_finish_while_a_delivery_hangs_are_kept_across_a_stop(
        tmp_path: Path) -> None:
    """A receiver that never answers holds the delivery task; jobs that finish meanwhile wait
    in memory. A stop then cancels the task: they go to the outbox first, and the next start
    delivers them."""
    async with Receiver() as receiver:
        receiver.hold.clear()
        async with running_service(tmp_path, transcribe=ScriptedPipeline(),
                                   notify=notify(receiver.url, timeout=600)) as service:
            drop(tmp_path, "f0.wav")
            await wait_until(lambda: receiver.waiting == 1, 30, "the first notification held")
            for i in (1, 2):
                drop(tmp_path, f"f{i}.wav")
            await wait_until(lambda: service.journal.counts()["done"] == 3, 60, "all done")
        assert len(owed(tmp_path)) == 3  # the held one and the two that came after
        receiver.hold.set()
        async with running_service(tmp_path, transcribe=ScriptedPipeline(),
                                   notify=notify(receiver.url)):
            await wait_until(lambda: owed(tmp_path) == [], 30, "delivered after the restart")
        assert {d["rel_path"] for d in receiver.documents} >= {"f0.wav", "f1.wav", "f2.wav"}
