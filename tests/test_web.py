"""The monitoring API on a real daemon (in-process service, real aiohttp server); the real
model where the test is about what transcription streams, a scripted pipeline elsewhere."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.models import ModelCache
from daemon.service import Service
from testkit.daemon import base_url, make_config, read_sse, running_service, wait_until
from testkit.scripted import ScriptedPipeline
from testkit.speech import srt_lines

REQUIRED = {"progress.overall", "subtitle.draft", "subtitle.overwrite", "signal.job_started",
            "signal.job_done"}


def done_count(events: list[dict]) -> int:
    return sum(e["event"] == "signal.job_done" for e in events)


async def test_stream_replay_history_and_routes(tmp_path: Path, short_wav: Path,
                                                cache: ModelCache) -> None:
    async with running_service(tmp_path, cache) as service, aiohttp.ClientSession() as http:
        url = base_url(service)
        events: list[dict] = []
        resp = await http.get(url + "/events")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_sse(resp, events))
        for name in ("one.wav", "two.wav"):
            shutil.copy(short_wav, tmp_path / "inbox" / name)
        await wait_until(lambda: done_count(events) == 2, what="two jobs done")
        reader.cancel()
        resp.close()

        types = {e["event"] for e in events}
        assert REQUIRED <= types, types
        ids = [e["id"] for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        for e in events:
            assert {"job_id", "type", "timestamp", "payload"} <= set(e["data"])
            assert e["data"]["type"] == e["event"] and e["data"]["id"] == e["id"]
        drafts = {e["data"]["payload"]["temp_id"] for e in events if e["event"] == "subtitle.draft"}
        finals = [e["data"]["payload"] for e in events if e["event"] == "subtitle.overwrite"]
        assert finals and all(f["target_temp_id"] in drafts and f["words"] for f in finals)
        assert all(not f["is_draft"] and f["text"] for f in finals)

        # Last-Event-ID: exactly what came after N, then live events
        n = ids[len(ids) // 2]
        replayed: list[dict] = []
        resp = await http.get(url + "/events", headers={"Last-Event-ID": str(n)})
        reader = asyncio.create_task(read_sse(resp, replayed))
        await wait_until(lambda: len(replayed) >= len([i for i in ids if i > n]), 10, "replay")
        assert [e["id"] for e in replayed] == [i for i in ids if i > n]
        shutil.copy(short_wav, tmp_path / "inbox" / "three.wav")
        await wait_until(lambda: done_count(replayed) == 2, what="live after replay")
        reader.cancel()
        resp.close()
        live = [e["id"] for e in replayed]
        assert live == sorted(set(live))

        # history per job: counts match the stream, filters work
        job_id = next(e["data"]["job_id"] for e in events if e["event"] == "signal.job_done")
        stream_of_job = [e for e in events if e["data"]["job_id"] == job_id]
        hist = await (await http.get(f"{url}/jobs/{job_id}/events/history")).json()
        assert hist["job_id"] == job_id and hist["count"] == len(stream_of_job)
        assert [e["id"] for e in hist["events"]] == [e["id"] for e in stream_of_job]
        only = await (await http.get(f"{url}/jobs/{job_id}/events/history",
                                     params={"types": "subtitle.overwrite,signal.job_done"})).json()
        assert {e["type"] for e in only["events"]} == {"subtitle.overwrite", "signal.job_done"}
        mid = hist["events"][len(hist["events"]) // 2]
        after = await (await http.get(f"{url}/jobs/{job_id}/events/history",
                                      params={"after_id": mid["id"]})).json()
        assert [e["id"] for e in after["events"]] == \
            [e["id"] for e in hist["events"] if e["id"] > mid["id"]]
        since = await (await http.get(f"{url}/jobs/{job_id}/events/history",
                                      params={"since": mid["timestamp"]})).json()
        assert all(e["timestamp"] >= mid["timestamp"] for e in since["events"])
        assert 0 < since["count"] <= hist["count"]

        # per-job stream replays only that job
        one: list[dict] = []
        resp = await http.get(f"{url}/jobs/{job_id}/events", headers={"Last-Event-ID": "0"})
        reader = asyncio.create_task(read_sse(resp, one))
        await wait_until(lambda: len(one) >= len(stream_of_job), 10, "job stream")
        reader.cancel()
        resp.close()
        assert {e["data"]["job_id"] for e in one} == {job_id}

        # status, jobs, job, 404s
        status = await (await http.get(url + "/status")).json()
        assert status["queue"]["done"] == 3 and "models" in status and status["version"]
        listing = await (await http.get(url + "/jobs", params={"state": "done"})).json()
        assert listing["count"] == 3
        one_job = await (await http.get(f"{url}/jobs/{job_id}")).json()
        assert one_job["state"] == "done" and one_job["outputs"][0].endswith(".en.srt")
        for bad in ("/jobs/ffffffffffffffff", "/jobs/..%2F..%2Fetc%2Fpasswd",
                    "/jobs/../../etc/passwd", "/jobs/%00", "/jobs/x/events/history",
                    "/jobs/ffffffffffffffff/events"):
            assert (await http.get(url + bad)).status == 404, bad

        # retry a done job, cancel errors
        retried = await http.post(f"{url}/jobs/{job_id}/retry")
        assert retried.status == 200 and (await retried.json())["state"] == "queued"
        await wait_until(lambda: service.journal.get(job_id).state == "done", what="retried")
        assert (await http.post(f"{url}/jobs/{job_id}/cancel")).status == 409

        # metrics parse as Prometheus text
        text = await (await http.get(url + "/metrics")).text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["subwatch_jobs"].samples[0].value >= 3
        assert "subwatch_processing_seconds" in families and "subwatch_sse_clients" in families
        assert "subwatch_model_loads" in families and "subwatch_events_published" in families


async def test_fan_out_and_a_reader_that_never_reads(tmp_path: Path, short_wav: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service)
        # a client that sends its request and then never reads a byte
        stalled_reader, stalled = await asyncio.open_connection("127.0.0.1", service.http_port)
        stalled.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await stalled.drain()
        streams = [[] for _ in range(20)]
        responses = [await http.get(url + "/events") for _ in streams]
        readers = [asyncio.create_task(read_sse(r, s))
                   for r, s in zip(responses, streams, strict=True)]
        await wait_until(lambda: service.bus.subscriber_count == 21, 10, "21 subscribers")
        # a burst far beyond socket buffers: 4 MB of final-priority events
        blob = "x" * 2000
        for n in range(2000):
            service.bus.publish("subtitle.overwrite", "0" * 16, {"n": n, "text": blob})
        # /healthz still answers (a timeout, not a timing assertion: it must not hang)
        async with http.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=30)) as h:
            assert h.status == 200
        shutil.copy(short_wav, tmp_path / "inbox" / "a.wav")
        await wait_until(lambda: all(done_count(s) == 1 for s in streams), what="all readers")
        for reader in readers:
            reader.cancel()
        for resp in responses:
            resp.close()
        expected = [e.id for e in service.bus.history(None)]
        for s in streams:
            assert [e["id"] for e in s] == expected  # every reader got every event, in order
        stalled.close()


@pytest.mark.parametrize("mode", ["whisper", "dual"])
async def test_live_page_in_headless_chromium(tmp_path: Path, short_wav: Path,
                                              cache: ModelCache, mode: str,
                                              request: pytest.FixtureRequest) -> None:
    from browser import Browser

    from testkit.daemon import free_port

    tables: dict[str, Any] = {"pipeline": {"mode": mode}}
    if mode == "dual":
        tables["sensevoice"] = {"model": request.getfixturevalue("sensevoice_folder")}
    async with running_service(tmp_path, cache, **tables) as service, \
            Browser(free_port()) as browser:
        await browser.open(base_url(service) + "/")
        await _until_page(browser, "document.getElementById('health').textContent === 'live'")
        shutil.copy(short_wav, tmp_path / "inbox" / "page.wav")
        await wait_until(lambda: service.journal.counts()["done"] == 1, what="job done")
        cue_text = " ".join(srt_lines(tmp_path / "outbox" / "page.en.srt")[:2])
        await _until_page(browser, "document.querySelectorAll('#subs .final').length > 0"
                                   " && !document.querySelector('#subs .draft')")
        shown = await browser.evaluate(
            "[...document.querySelectorAll('#subs .final .x')].map(e => e.textContent).join(' ')")
        assert cue_text in shown, (cue_text, shown)
        recent = await browser.evaluate("document.getElementById('recent').textContent")
        assert "page.wav" in recent
        # each draft turned final in its place: the finals sit where the drafts were
        engine = "s" if mode == "dual" else ""
        took_place = await browser.evaluate(
            f"document.querySelectorAll('#subs .final[data-target*=\":{engine}\"]').length")
        assert took_place > 0


async def _until_page(browser: Any, condition: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await browser.evaluate(condition):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"page never satisfied: {condition}")


async def test_streams_close_cleanly_on_shutdown(tmp_path: Path) -> None:
    service = Service(make_config(tmp_path), pipeline=ScriptedPipeline())
    await service.startup()
    events: list[dict] = []
    async with aiohttp.ClientSession() as http:
        resp = await http.get(base_url(service) + "/events")
        reader = asyncio.create_task(read_sse(resp, events))
        await wait_until(lambda: service.bus.subscriber_count == 1, 10, "subscribed")
        await service.shutdown()
        await asyncio.wait_for(reader, 10)  # the stream ends instead of hanging
        resp.close()
    assert events and events[-1]["event"] == "stream.closed"
