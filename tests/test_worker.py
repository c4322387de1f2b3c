"""The daemon's job paths on a scripted pipeline: retries with backoff, attempts running out,
cancel between two segments, concurrent workers, the retry/cancel routes and access control.

Real service, journal, watcher, writer and HTTP server; only the recognition is scripted, so
each path is reached on purpose and quickly.
"""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import aiohttp
import pytest

from daemon.errors import InputError, TransientError, classify_os_error
from daemon.events import EventType
from daemon.service import Service
from testkit.daemon import base_url, jobs_of, make_config, run_burst, running_service, wait_until
from testkit.scripted import LINES, ScriptedPipeline


def drop(root: Path, name: str = "clip.wav") -> Path:
    """Any non-empty file will do: the scripted pipeline does not decode it."""
    path = root / "inbox" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x01" * 4096)
    return path


def signals(service: Service, job_id: str) -> list[tuple[str, dict]]:
    return [(e.type, e.payload) for e in service.bus.history(job_id, types=["signal.*"])]


async def test_transient_failure_backs_off_then_succeeds(tmp_path: Path) -> None:
    pipeline = ScriptedPipeline(failures=[TransientError("io_error", "the share went away")])
    drop(tmp_path)
    service = await run_burst(make_config(tmp_path), transcribe=pipeline)
    (job,) = jobs_of(tmp_path)
    assert (job["state"], job["attempts"], pipeline.calls) == ("done", 2, 2)
    assert (tmp_path / "outbox" / "clip.en.srt").is_file()
    seen = signals(service, job["id"])
    assert [t for t, _ in seen] == [EventType.JOB_QUEUED, EventType.JOB_STARTED,
                                    EventType.JOB_RETRYING, EventType.JOB_STARTED,
                                    EventType.JOB_DONE]
    retrying = seen[2][1]
    assert retrying["error"] == "io_error" and retrying["retry_in_seconds"] == 0.2
    events = service.bus.history(job["id"], types=["signal.job_retrying", "signal.job_started"])
    assert events[2].timestamp - events[1].timestamp >= 0.19  # the backoff was waited out


async def test_running_out_of_descriptors_never_charges_the_job(tmp_path: Path) -> None:
    """EMFILE is the daemon's shortage (too many readers, a leak), not the file's: three in a
    row, with three attempts allowed, and the job still ends done on its first attempt."""
    emfile = OSError(errno.EMFILE, "Too many open files")
    pipeline = ScriptedPipeline(failures=[classify_os_error(emfile, "cannot read the file"),
                                          emfile, classify_os_error(emfile, "cannot write")])
    drop(tmp_path)
    await run_burst(make_config(tmp_path, jobs={"max_attempts": 3}), transcribe=pipeline)
    (job,) = jobs_of(tmp_path)
    assert (job["state"], job["attempts"], pipeline.calls) == ("done", 1, 4)


@pytest.mark.parametrize("failure, code", [
    (TransientError("io_error", "the share went away"), "io_error"),
    (RuntimeError("a bug in a stage"), "internal"),
])
async def test_attempts_exhausted_fail_with_an_error_file(tmp_path: Path, failure: Exception,
                                                          code: str) -> None:
    pipeline = ScriptedPipeline(failures=[failure] * 3)
    inbox_file = drop(tmp_path)
    service = await run_burst(make_config(tmp_path, jobs={"max_attempts": 3}),
                              transcribe=pipeline)
    (job,) = jobs_of(tmp_path)
    assert (job["state"], job["attempts"], job["error"]) == ("failed", 3, code)
    record = json.loads((tmp_path / "outbox" / "clip.error.json").read_text())
    assert record["error"] == code and record["attempts"] == 3 and record["message"]
    delays = [p["retry_in_seconds"] for t, p in signals(service, job["id"])
              if t == EventType.JOB_RETRYING]
    assert delays == [0.2, 0.4]  # exponential backoff
    assert inbox_file.is_file() and not list((tmp_path / "outbox").glob("*.srt"))


async def test_permanent_input_error_fails_at_once(tmp_path: Path) -> None:
    pipeline = ScriptedPipeline(failures=[InputError("corrupt", "the media cannot be decoded")])
    drop(tmp_path)
    await run_burst(make_config(tmp_path), transcribe=pipeline)
    (job,) = jobs_of(tmp_path)
    assert (job["state"], job["attempts"], job["error"]) == ("failed", 1, "corrupt")


async def test_a_failure_is_recorded_only_once_its_error_file_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever sees `failed` in the journal (/jobs, a monitoring script) finds the error file:
    it is written before the journal records the failure, not just after."""
    from daemon.journal import Journal

    seen: list[bool] = []
    record = Journal.fail

    def watched(journal: Journal, job_id: str, code: str, message: str) -> None:
        seen.append(any((tmp_path / "outbox").rglob("*.error.json")))
        record(journal, job_id, code, message)

    monkeypatch.setattr(Journal, "fail", watched)
    pipeline = ScriptedPipeline(failures=[InputError("corrupt", "the media cannot be decoded")])
    drop(tmp_path)
    await run_burst(make_config(tmp_path), transcribe=pipeline)
    assert seen == [True]


async def test_cancel_between_two_segments_over_http(tmp_path: Path) -> None:
    pipeline = ScriptedPipeline(hold_after=2)
    async with running_service(tmp_path, transcribe=pipeline) as service, \
            aiohttp.ClientSession() as http:
        drop(tmp_path)
        await wait_until(pipeline.held.is_set, 30, "two segments out")
        (job_id,) = list(service.running)
        resp = await http.post(f"{base_url(service)}/jobs/{job_id}/cancel", json={})
        assert (await resp.json())["state"] == "canceling"
        await wait_until(lambda: service.journal.get(job_id).state == "canceled", 30, "cancel")
        job = await (await http.get(f"{base_url(service)}/jobs/{job_id}")).json()
    assert job["message"] == "canceled by request" and job["attempts"] == 1
    assert pipeline.emitted == 2 < len(LINES)
    drafts = service.bus.history(job_id, types=["subtitle.draft"])
    assert len(drafts) == 2
    assert not list((tmp_path / "outbox").glob("*.srt"))


async def test_cancel_a_queued_job_and_retry_routes(tmp_path: Path) -> None:
    pipeline = ScriptedPipeline(hold_after=1)
    async with running_service(tmp_path, transcribe=pipeline) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service)
        drop(tmp_path, "first.wav")
        await wait_until(pipeline.held.is_set, 30, "first job running")
        drop(tmp_path, "second.wav")
        await wait_until(lambda: service.journal.counts()["queued"] == 1, 30, "second queued")
        (queued,) = service.journal.list_jobs("queued")
        resp = await http.post(f"{url}/jobs/{queued.id}/cancel", json={})
        assert resp.status == 200 and (await resp.json())["state"] == "canceled"
        pipeline.release.set()
        await wait_until(lambda: service.journal.counts()["done"] == 1, 30, "first done")
        (done,) = service.journal.list_jobs("done")
        assert (await http.post(f"{url}/jobs/{done.id}/cancel", json={})).status == 409
        retried = await http.post(f"{url}/jobs/{queued.id}/retry", json={})
        assert retried.status == 200 and (await retried.json())["state"] == "queued"
        await wait_until(lambda: service.journal.counts()["done"] == 2, 30, "retried job done")
        assert (await http.post(f"{url}/jobs/ffffffffffffffff/retry", json={})).status == 404
    assert sorted(p.name for p in (tmp_path / "outbox").glob("*.srt")) == \
        ["first.en.srt", "second.en.srt"]


async def test_two_workers_run_two_jobs_at_the_same_time(tmp_path: Path) -> None:
    # each call waits for a second one to be inside the pipeline too: one worker cannot pass
    pipeline = ScriptedPipeline(partner=threading.Barrier(2, timeout=20))
    drop(tmp_path, "a.wav")
    drop(tmp_path, "b.wav")
    await run_burst(make_config(tmp_path, jobs={"workers": 2, "max_attempts": 1}),
                    transcribe=pipeline)
    assert [(j["rel_path"], j["state"]) for j in jobs_of(tmp_path)] == \
        [("a.wav", "done"), ("b.wav", "done")]


async def test_token_and_host_checks(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline(),
                               http={"token": "s3cret"}) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service)
        assert (await http.get(url + "/healthz")).status == 200
        assert (await http.get(url + "/status")).status == 401
        assert (await http.get(url + "/status",
                               headers={"Authorization": "Bearer nope"})).status == 401
        ok = await http.get(url + "/status", headers={"Authorization": "Bearer s3cret"})
        assert ok.status == 200
        assert (await http.post(url + "/jobs/ffffffffffffffff/cancel", json={})).status == 401
        async with http.get(url + "/events?token=s3cret",
                            timeout=aiohttp.ClientTimeout(sock_read=None)) as stream:
            assert stream.status == 200
        foreign = await http.get(url + "/healthz", headers={"Host": "evil.example:8750"})
        assert foreign.status == 421
        assert (await http.get(url + "/healthz",
                               headers={"Host": f"localhost:{service.http_port}"})).status == 200
    assert service.cache.snapshot()["loaded"] == []  # no model was needed for any of it


async def test_a_run_whose_job_was_taken_from_it_announces_nothing_and_moves_nothing(
        tmp_path: Path) -> None:
    """A cluster node that lost its job (its lease expired and another node took it over, or
    it was canceled there) finishes late: its finish is refused by the queue, so it sends no
    second job_done and does not apply on_success (moving the input away from the node that
    now owns the job)."""
    pipeline = ScriptedPipeline(hold_after=1)
    inbox_file = drop(tmp_path)
    async with running_service(tmp_path, transcribe=pipeline,
                               jobs={"on_success": "move"}) as service:
        await wait_until(pipeline.held.is_set, 30, "the job running")
        (job_id,) = list(service.running)
        assert service.journal.cancel(job_id, "taken over by another node", "taken_over")
        pipeline.release.set()
        await wait_until(lambda: not service.running, 30, "the late finish")
        assert "signal.job_done" not in [t for t, _ in signals(service, job_id)]
        assert inbox_file.is_file()
        assert service.journal.get(job_id).state == "canceled"
