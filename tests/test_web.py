"""The monitoring API on a real daemon (in-process service, real aiohttp server); the real
model where the test is about what transcription streams, a scripted pipeline elsewhere."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.logs import THIRD_PARTY
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
        retried = await http.post(f"{url}/jobs/{job_id}/retry", json={})
        assert retried.status == 200 and (await retried.json())["state"] == "queued"
        await wait_until(lambda: service.journal.get(job_id).state == "done", what="retried")
        assert (await http.post(f"{url}/jobs/{job_id}/cancel", json={})).status == 409

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


# ---------------------------------------------------------------------------- hostile requests

async def raw_http(port: int, head: str, body: bytes = b"", extra: bytes = b"") -> int:
    """Send one request byte for byte (headers aiohttp's client would refuse); its status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode() + extra
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        return int(status_line.split()[1])
    finally:
        writer.close()


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """POST /logging reconfigures this process's logging (the daemon runs in it): undo that."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {name: logging.getLogger(name).level for name in (*THIRD_PARTY, "daemon.worker")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, value in named.items():
        logging.getLogger(name).setLevel(value)


@pytest.mark.usefixtures("restore_logging")
async def test_logging_takes_known_loggers_only_a_bounded_count_off_the_loop(
        tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service) + "/logging"
        applied_on: list[str] = []
        service.live.subscribe(lambda _: applied_on.append(threading.current_thread().name))
        unknown = await http.post(url, json={"levels": {"not.a.logger.here": "DEBUG"}})
        assert unknown.status == 400 and "not.a.logger.here" in await unknown.text()
        flood = {f"daemon.x{n}": "DEBUG" for n in range(4000)}  # 2.65 s of a blocked loop once
        assert (await http.post(url, json={"levels": flood})).status == 413
        many = await http.post(url, json={"levels": {f"x{n}": "DEBUG" for n in range(100)}})
        assert many.status == 400 and "at most" in await many.text()
        made = logging.root.manager.loggerDict
        assert "not.a.logger.here" not in made and "daemon.x0" not in made and "x0" not in made
        assert applied_on == [] and service.config.logging.levels == {}
        ok = await http.post(url, json={"level": "DEBUG", "levels": {
            "faster_whisper": "INFO", "daemon.worker": "WARNING"}})
        assert ok.status == 200, await ok.text()
        assert (await ok.json())["levels"] == {"faster_whisper": "INFO",
                                               "daemon.worker": "WARNING"}
        assert logging.getLogger("faster_whisper").level == logging.INFO
        assert service.config.logging.level == "DEBUG"
        again = await http.post(url, json={"levels": dict.fromkeys(THIRD_PARTY, "WARNING")})
        assert again.status == 200  # every library it configures, in one request
    assert len(applied_on) == 2
    assert threading.main_thread().name not in applied_on  # applied in a thread, not the loop


@pytest.mark.usefixtures("restore_logging")
async def test_a_web_page_cannot_post_to_a_daemon_without_token(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service)
        # a form or a fetch() without preflight: text/plain, form-encoded
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            for route in ("/logging", "/reload"):
                resp = await http.post(url + route, data=b'{"level": "DEBUG"}',
                                       headers={"Content-Type": ctype})
                assert resp.status == 415, (route, ctype)
        foreign = [{"Origin": "http://evil.example"}, {"Origin": "null"},
                   {"Origin": f"http://127.0.0.1:{service.http_port + 1}"},
                   {"Sec-Fetch-Site": "cross-site"}]
        for headers in foreign:
            resp = await http.post(url + "/logging", json={"level": "DEBUG"}, headers=headers)
            assert resp.status == 403, headers
            assert (await http.post(url + "/reload", json={}, headers=headers)).status == 403
        assert service.config.logging.level == "INFO"
        # the daemon's own page, curl and the CLI still work
        own = {"Origin": f"http://127.0.0.1:{service.http_port}", "Sec-Fetch-Site": "same-origin"}
        assert (await http.post(url + "/logging", json={"level": "DEBUG"},
                                headers=own)).status == 200
        assert (await http.post(url + "/logging", json={"level": "INFO"},
                                headers={"Origin": f"http://localhost:{service.http_port}"})
                ).status == 200
        # an empty POST too must say JSON (a form to /jobs/x/cancel needs no body at all)
        empty = await http.post(url + "/jobs/ffffffffffffffff/cancel",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert empty.status == 415
        assert (await http.post(url + "/jobs/ffffffffffffffff/cancel", json={})).status == 404


async def test_bound_beyond_loopback_without_token_warns_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_service(tmp_path / "open", transcribe=ScriptedPipeline(),
                               http={"host": "0.0.0.0"}):
        pass
    async with running_service(tmp_path / "closed", transcribe=ScriptedPipeline(),
                               http={"host": "0.0.0.0", "token": "s3cret"}):
        pass
    async with running_service(tmp_path / "local", transcribe=ScriptedPipeline()):
        pass
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and "without http.token" in r.getMessage()]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0].getMessage()


async def test_event_streams_are_capped_with_retry_after(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline(),
                               http={"max_event_streams": 2}) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service)
        first = [await http.get(url + "/events") for _ in range(2)]
        assert [r.status for r in first] == [200, 200]
        refused = await http.get(url + "/events")
        assert refused.status == 503 and int(refused.headers["Retry-After"]) > 0
        await wait_until(lambda: service.bus.subscriber_count == 2, 10, "two readers")
        first[0].close()
        await wait_until(lambda: service.bus.subscriber_count == 1, 30, "one reader left")
        again = await http.get(url + "/events")
        assert again.status == 200
        again.close()
        first[1].close()
        assert (await http.get(url + "/healthz")).status == 200


async def test_malformed_requests_get_4xx_not_tracebacks(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline(),
                               http={"token": "s3cret"}) as service, \
            aiohttp.ClientSession() as http:
        port, url = service.http_port, base_url(service)
        assert port is not None
        auth = b"Authorization: Bearer s3cret\r\n"
        assert await raw_http(port, "GET /status HTTP/1.1",
                              extra=b"Authorization: Bearer s3cr\xc3\xa9t\xff\r\n") == 401
        json_ct = b"Content-Type: application/json\r\n"
        nested = b"[" * 30_000 + b"]" * 30_000  # under the body limit, past the recursion limit
        assert await raw_http(port, "POST /logging HTTP/1.1", nested, auth + json_ct) == 400
        assert await raw_http(port, "POST /logging HTTP/1.1", b"{}", auth +
                              b"Content-Type: application/json; charset=no-such-set\r\n") == 415
        assert await raw_http(port, "POST /logging HTTP/1.1", b"\xff{}", auth + json_ct) == 400
        assert await raw_http(port, "POST /logging HTTP/1.1", b"[1]", auth + json_ct) == 400
        for scheme in ("bearer", "BEARER", "Bearer"):
            resp = await http.get(url + "/status", headers={"Authorization": f"{scheme} s3cret"})
            assert resp.status == 200, scheme
        await _leave_during_sse_setup(port, 30)
        await wait_until(lambda: service.bus.subscriber_count == 0, 30, "no reader left")
        too_long = "/jobs?" + "x" * 9000  # over aiohttp's 8 KB request line
        assert await raw_http(port, f"GET {too_long} HTTP/1.1") == 400
        many = ",".join(f"progress.t{n}" for n in range(200))
        resp = await http.get(f"{url}/jobs/{'0' * 16}/events/history", params={"types": many},
                              headers={"Authorization": "Bearer s3cret"})
        assert resp.status in (400, 404)
        service.bus.publish("signal.job_queued", "0" * 16, {})
        resp = await http.get(f"{url}/jobs/{'0' * 16}/events/history", params={"types": many},
                              headers={"Authorization": "Bearer s3cret"})
        assert resp.status == 400
    assert _problems(caplog) == []


async def _leave_during_sse_setup(port: int, times: int) -> None:
    """Ask for a stream and reset the connection at once (SO_LINGER 0: an RST, not a FIN)."""
    for _ in range(times):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer s3cret\r\n\r\n")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
    await asyncio.sleep(0.5)  # let the daemon meet the resets (the check after is a wait)


async def test_healthz_names_reasons_without_exception_text(tmp_path: Path) -> None:
    async def broken() -> None:
        raise RuntimeError("secret detail /etc/subwatch/config.toml line 3")

    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service)
        task = asyncio.create_task(broken(), name="probe")
        await asyncio.wait([task])
        service.life.tasks.append(task)
        resp = await http.get(url + "/healthz")
        body = await resp.json()
        assert resp.status == 503 and body["reasons"] == ["internal task probe failed"]
        service.life.tasks.remove(task)
        shutil.rmtree(tmp_path / "inbox")
        await wait_until(lambda: service.watcher.state == "unavailable", 60, "inbox gone")
        body = await (await http.get(url + "/healthz")).json()
        assert body["reasons"] == ["inbox unavailable"], body


async def test_events_of_a_name_that_is_not_utf8_reach_every_reader(tmp_path: Path) -> None:
    """A Latin-1 file name (odd bytes as surrogate escapes) in an event's payload: the stream
    sends it as JSON escapes and stays open for everyone (it used to raise in the send and cut
    every reader's stream)."""
    name = os.fsdecode(b"caf\xe9.wav")
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            aiohttp.ClientSession() as http:
        events: list[dict] = []
        resp = await http.get(base_url(service) + "/events")
        reader = asyncio.create_task(read_sse(resp, events))
        (tmp_path / "inbox" / name).write_bytes(b"RIFF" + b"\0" * 64)
        await wait_until(lambda: done_count(events) == 1, 30, "the job done, on the stream")
        (tmp_path / "inbox" / "next.wav").write_bytes(b"RIFF" + b"\0" * 64)
        await wait_until(lambda: done_count(events) == 2, 30, "the stream still open")
        reader.cancel()
        resp.close()
    started = [e["data"]["payload"]["input"] for e in events if e["event"] ==
               "signal.job_started"]
    assert name in started


async def test_a_locked_journal_answers_503_not_500(tmp_path: Path) -> None:
    """Another process holds the journal's write lock (a backup, an operator's sqlite3 shell):
    a retry that must write, and /metrics, answer 503 with the reason, not a 500."""
    import sqlite3

    drop = tmp_path / "inbox" / "clip.wav"
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            aiohttp.ClientSession() as http:
        drop.write_bytes(b"\x01" * 4096)
        url = base_url(service)
        await wait_until(lambda: service.journal.counts().get("done"), 30, "the job done")
        job_id = (await (await http.get(url + "/jobs")).json())["jobs"][0]["id"]
        holder = sqlite3.connect(tmp_path / "state" / "journal.sqlite3", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            resp = await http.post(f"{url}/jobs/{job_id}/retry", json={})
            assert resp.status == 503, await resp.text()
            assert "locked" in (await resp.json())["reason"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (await http.post(f"{url}/jobs/{job_id}/retry", json={})).status == 200
