"""The whisper-asr-webservice API (issue 14): Bazarr's provider, replayed call for call with the
library it uses (requests), gets a language and an SRT from the real model; uploads are jobs that
stream to disk, run before folder jobs, end when their client leaves, and refuse what they must
with a clear 4xx. A real daemon (in-process, or a process where memory is measured)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import requests

from daemon.asr import Sink, safe_name, wav_header
from daemon.config import LiveConfig
from daemon.journal import Identity, Journal
from daemon.models import ModelCache
from daemon.pipeline import Pipeline
from daemon.uploads import REQUEST_FILE, UploadAware, uploads_dir
from testkit.daemon import (
    base_url,
    make_config,
    running_service,
    wait_until,
)
from testkit.media import Speech, to_16k, write_wav
from testkit.memory import rss_bytes
from testkit.scripted import ScriptedPipeline
from testkit.speech import wer

BAZARR_TIMEOUT = (5, 600)  # (connect, read) as Bazarr's provider passes them


def s16le(speech: Speech) -> bytes:
    """What Bazarr's ffmpeg call makes: 16 kHz mono s16le, no header."""
    samples = to_16k(speech.samples, speech.sample_rate)
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def srt_words(srt: str) -> str:
    return " ".join(line for line in srt.splitlines()
                    if line and "-->" not in line and not line.isdigit())


def upload_form(data: bytes, name: str = "audio_file") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("audio_file", io.BytesIO(data), filename=name)
    return form


def upload_files(root: Path) -> list[Path]:
    folder = root / "state" / "uploads"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# ---------------------------------------------------------------------------- Bazarr, real model

async def test_bazarr_provider_gets_a_language_and_an_srt_from_raw_pcm(
        tmp_path: Path, short_speech: Speech, cache: ModelCache) -> None:
    """subliminal_patch/providers/whisperai.py: detect_language() then download_subtitle(),
    both with encode=false and the whole track as raw PCM in `files={'audio_file': out}`."""
    out = s16le(short_speech)
    async with running_service(tmp_path, cache) as service:
        endpoint = base_url(service)
        loads_before = whisper_loads(cache)

        def bazarr() -> tuple[requests.Response, requests.Response]:
            with requests.Session() as session:
                session.headers["User-Agent"] = "Subliminal/2.1.0"
                detected = session.post(f"{endpoint}/detect-language",
                                        params={"encode": "false"},
                                        files={"audio_file": out}, timeout=BAZARR_TIMEOUT)
                asr = session.post(f"{endpoint}/asr",
                                   params={"task": "transcribe", "language": "en",
                                           "output": "srt", "encode": "false"},
                                   files={"audio_file": out}, timeout=BAZARR_TIMEOUT)
                return detected, asr

        detected, asr = await asyncio.to_thread(bazarr)
        assert detected.status_code == 200
        assert (detected.json()["language_code"], detected.json()["detected_language"]) == \
            ("en", "english")
        assert asr.status_code == 200
        assert asr.headers["Content-Type"].startswith("text/plain")
        assert asr.headers["Content-Disposition"] == 'attachment; filename="audio_file.srt"'
        text = asr.content.decode("utf-8")
        assert text.startswith("1\n00:00:") and " --> " in text
        assert wer(short_speech.text, srt_words(text)) <= 0.25

        jobs = await service.blocking(service.journal.list_jobs, None, 10)
        assert [(j.kind, j.priority, j.state) for j in jobs] == [("upload", 2, "done")] * 2
        assert whisper_loads(cache) == loads_before  # its own language, the same model
        assert upload_files(tmp_path) == []


def whisper_loads(cache: ModelCache) -> int:
    return sum(s["load_count"] for key, s in cache.snapshot()["stats"].items()
               if key.startswith("whisper"))


async def test_a_webservice_client_posting_a_media_file_gets_each_output(
        tmp_path: Path, short_wav: Path, short_speech: Speech, cache: ModelCache) -> None:
    """encode=true (whisper-asr-webservice's default): a media file as sent, each `output`."""
    data = short_wav.read_bytes()
    async with running_service(tmp_path, cache) as service, aiohttp.ClientSession() as http:
        url = base_url(service)
        got: dict[str, Any] = {}
        for output in ("srt", "vtt", "txt", "json", "tsv"):
            resp = await http.post(url + "/asr", params={"output": output},
                                   data=upload_form(data, "talk.wav"))
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Disposition"] == \
                f'attachment; filename="talk.wav.{output}"'
            got[output] = await resp.text()
        assert got["vtt"].startswith("WEBVTT")
        assert wer(short_speech.text, got["txt"]) <= 0.25
        as_json = json.loads(got["json"])
        assert as_json["language"] == "en" and as_json["segments"] and as_json["text"]
        assert got["tsv"].splitlines()[0] == "start\tend\ttext"
        resp = await http.post(url + "/detect-language", data=upload_form(data, "talk.wav"))
        assert (await resp.json())["language_code"] == "en"


async def test_a_non_media_upload_is_a_422_with_the_decoders_reason(
        tmp_path: Path, cache: ModelCache) -> None:
    async with running_service(tmp_path, cache) as service, aiohttp.ClientSession() as http:
        url = base_url(service)
        junk = b"\0" * (1 << 20)
        for route in ("/asr", "/detect-language"):
            resp = await http.post(url + route, data=upload_form(junk))
            body = await resp.json()
            assert resp.status == 422 and body["error"] == "not_media", (route, body)
        assert upload_files(tmp_path) == []


# ---------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("params, make, why", [
    ({}, lambda: None, "no body"),
    ({}, lambda: {"data": b"x", "headers": {"Content-Type": "application/octet-stream"}},
     "not multipart"),
    ({}, lambda: {"data": _other_field()}, "no audio_file field"),
    ({"output": "docx"}, lambda: {"data": upload_form(b"\0" * 64)}, "bad output"),
    ({"task": "summarise"}, lambda: {"data": upload_form(b"\0" * 64)}, "bad task"),
    ({"language": "english"}, lambda: {"data": upload_form(b"\0" * 64)}, "bad language"),
    ({"encode": "maybe"}, lambda: {"data": upload_form(b"\0" * 64)}, "bad encode"),
])
async def test_a_bad_request_is_a_422_and_leaves_nothing(tmp_path: Path, params: dict[str, str],
                                                        make: Any, why: str) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            aiohttp.ClientSession() as http:
        resp = await http.post(base_url(service) + "/asr", params=params, **(make() or {}))
        assert resp.status == 422, why
        assert "detail" in await resp.json()
        assert await service.blocking(service.journal.list_jobs, None, 10) == []
        assert upload_files(tmp_path) == []


def _other_field() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", b"\0" * 64, filename="a.wav")
    return form


async def multipart_stream(boundary: str, size: int, chunk: int = 1 << 20
                           ) -> AsyncIterator[bytes]:
    """A multipart body whose audio is `size` zero bytes, made as it is sent (never held)."""
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="audio_file"; '
           f'filename="zeros"\r\n\r\n').encode()
    zeros = bytes(chunk)
    for start in range(0, size, chunk):
        yield zeros[:min(chunk, size - start)]
    yield f"\r\n--{boundary}--\r\n".encode()


async def test_an_upload_over_the_limit_is_413_with_or_without_a_length(tmp_path: Path) -> None:
    limit = 4 << 20
    async with running_service(tmp_path, transcribe=ScriptedPipeline(),
                               http={"max_upload_bytes": limit}) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service) + "/asr"
        resp = await http.post(url, data=upload_form(b"\0" * (limit + (1 << 20))))  # a length
        assert resp.status == 413
        headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
        try:  # chunked: refused once the limit is crossed, the rest unread
            resp = await http.post(url, data=multipart_stream("b0undary", 64 << 20),
                                   headers=headers)
            assert resp.status == 413
        except aiohttp.ClientError:
            pass  # the server closed while the client was still sending: also refused
        resp = await http.post(url, params={"encode": "false"},
                               data=upload_form(b"\0" * (limit // 2)))
        assert resp.status == 200  # under the limit: a job (silence)
        assert [j.kind for j in await service.blocking(service.journal.list_jobs, None, 9)] \
            == ["upload"]
        await wait_until(lambda: upload_files(tmp_path) == [], 10, "files removed")


async def test_a_client_that_breaks_off_mid_upload_leaves_no_job_and_no_file(
        tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
        head = (b'--b\r\nContent-Disposition: form-data; name="audio_file"; filename="a"\r\n'
                b'\r\n')
        writer.write(b"POST /asr?encode=false HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 10000000\r\n\r\n" + head + bytes(2_000_000))
        await writer.drain()
        await wait_until(lambda: upload_files(tmp_path), 10, "the upload begins on disk")
        writer.close()
        await wait_until(lambda: upload_files(tmp_path) == [], 10, "its file removed")
        assert await service.blocking(service.journal.list_jobs, None, 10) == []


RAW_HEAD = (b'--b\r\nContent-Disposition: form-data; name="audio_file"; filename="a"\r\n'
            b'\r\n')
RAW_TAIL = b"\r\n--b--\r\n"


async def raw_asr(port: int, audio_bytes: int, body: bytes = b""
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An /asr request (raw PCM) whose Content-Length says `audio_bytes` of audio; only the
    headers and `body` are sent for now."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    length = len(RAW_HEAD) + audio_bytes + len(RAW_TAIL)
    writer.write(b"POST /asr?encode=false HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: multipart/form-data; boundary=b\r\n"
                 + f"Content-Length: {length}\r\n\r\n".encode() + body)
    await writer.drain()
    return reader, writer


async def raw_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)).decode()
    lines = head.split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers


def upload_folders(root: Path) -> list[str]:
    folder = root / "state" / "uploads" / "in"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_uploads_past_the_total_room_get_503_before_their_body_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each upload fits http.max_upload_bytes, two together do not fit
    http.max_upload_total_bytes: the second is refused at once, with nothing of its body sent
    or written; once the first is answered (its file removed), the next is taken."""
    caplog.set_level(logging.INFO, logger="daemon.uploads")
    first_size, second_size = 900 << 10, 700 << 10
    async with running_service(tmp_path, transcribe=ScriptedPipeline(),
                               http={"max_upload_bytes": 1 << 20,
                                     "max_upload_total_bytes": 1536 << 10}) as service, \
            aiohttp.ClientSession() as http:
        first_reader, first = await raw_asr(service.http_port, first_size,
                                            RAW_HEAD + bytes(first_size // 2))
        await wait_until(lambda: upload_files(tmp_path), 10, "the first arrives on disk")
        holding = upload_folders(tmp_path)
        for _ in range(2):  # a burst: refused each time, logged once
            reader, writer = await raw_asr(service.http_port, second_size)  # no body sent
            status, headers = await raw_answer(reader)
            writer.close()
            assert (status, headers.get("Retry-After")) == (503, "30")
            assert upload_folders(tmp_path) == holding  # nothing of it in state_dir
        refusals = [r for r in caplog.records if "refusing new uploads" in r.getMessage()]
        assert len(refusals) == 1
        first.write(bytes(first_size - first_size // 2) + RAW_TAIL)
        await first.drain()
        assert (await raw_answer(first_reader))[0] == 200
        first.close()
        await wait_until(lambda: upload_files(tmp_path) == [], 10, "the first's files removed")
        resp = await http.post(base_url(service) + "/asr", params={"encode": "false"},
                               data=upload_form(bytes(second_size)))
        assert resp.status == 200, await resp.text()
        assert any("taken again after 2 refused" in r.getMessage() for r in caplog.records)
        jobs = await service.blocking(service.journal.list_jobs, None, 10)
        assert [j.kind for j in jobs] == ["upload", "upload"]


def test_the_total_upload_room_defaults_to_four_uploads_and_fits_one(tmp_path: Path) -> None:
    from daemon.errors import ConfigError
    from daemon.uploads import total_upload_limit

    assert total_upload_limit(make_config(tmp_path, http={"max_upload_bytes": 1000})) == 4000
    assert total_upload_limit(make_config(
        tmp_path, http={"max_upload_bytes": 1000, "max_upload_total_bytes": 1500})) == 1500
    with pytest.raises(ConfigError, match="http.max_upload_total_bytes"):
        make_config(tmp_path, http={"max_upload_bytes": 1000, "max_upload_total_bytes": 999})


async def test_a_client_that_leaves_while_waiting_cancels_its_job(tmp_path: Path) -> None:
    pipeline = ScriptedPipeline(hold_after=1)  # the job stays running until released
    async with running_service(tmp_path, transcribe=pipeline) as service, \
            aiohttp.ClientSession() as http:
        request = asyncio.create_task(http.post(base_url(service) + "/asr",
                                                params={"encode": "false"},
                                                data=upload_form(bytes(64000))))
        assert await asyncio.to_thread(pipeline.held.wait, 30)
        request.cancel()  # the client hangs up
        job = (await service.blocking(service.journal.list_jobs, None, 10))[0]
        await wait_until(lambda: service.journal.get(job.id).state == "canceled", 30,
                         "the job canceled")
        await wait_until(lambda: upload_files(tmp_path) == [], 10, "its files removed")


async def test_the_token_is_required_when_set(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline(),
                               http={"token": "t0k"}) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service) + "/asr"
        assert (await http.post(url, data=upload_form(bytes(64)))).status == 401
        resp = await http.post(url, params={"encode": "false"}, data=upload_form(bytes(3200)),
                               headers={"Authorization": "Bearer t0k"})
        assert resp.status == 200
        # Bazarr sends no header: its endpoint setting carries the token as a path
        base = base_url(service)
        wrong = await http.post(base + "/token/nope/asr", data=upload_form(bytes(64)))
        assert wrong.status == 401
        assert (await http.post(base + "/token/t0k/jobs")).status == 401  # only these routes
        resp = await http.post(base + "/token/t0k/detect-language", params={"encode": "false"},
                               data=upload_form(bytes(3200)))
        assert resp.status == 200 and (await resp.json())["language_code"] == "en"


async def test_a_post_from_another_site_is_refused(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            aiohttp.ClientSession() as http:
        resp = await http.post(base_url(service) + "/asr", data=upload_form(bytes(64)),
                               headers={"Origin": "https://evil.example"})
        assert resp.status == 403


# ---------------------------------------------------------------------------- priority

async def test_an_upload_runs_next_not_after_the_queued_folder_jobs(tmp_path: Path,
                                                                    short_wav: Path) -> None:
    """One worker, held on a first folder file; three more wait in the queue; an upload
    admitted after them is done before any of them."""
    pipeline = ScriptedPipeline(hold_after=1)
    async with running_service(tmp_path, transcribe=pipeline) as service, \
            aiohttp.ClientSession() as http:
        for i in range(4):
            write_wav(tmp_path / "inbox" / f"folder{i}.wav", np.zeros(1600, np.float32))
            await wait_until(lambda n=i: service.journal.counts()["queued"]
                             + service.journal.counts()["running"] == n + 1, 30, "admitted")
        assert await asyncio.to_thread(pipeline.held.wait, 30)
        request = asyncio.create_task(http.post(base_url(service) + "/asr",
                                                params={"encode": "false"},
                                                data=upload_form(bytes(3200))))
        await wait_until(lambda: service.journal.counts()["queued"] == 4, 30, "upload queued")
        pipeline.release.set()
        resp = await request
        assert resp.status == 200
        await wait_until(lambda: service.journal.counts()["done"] == 5, 60, "all done")
        jobs = await service.blocking(service.journal.list_jobs, "done", 10)
        order = [j.kind for j in sorted(jobs, key=lambda j: (j.finished_at, j.id))]
        assert order == ["file", "upload", "file", "file", "file"], order


# ---------------------------------------------------------------------------- restarts

async def test_uploads_left_by_a_stopped_daemon_are_canceled_at_start(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    folder = uploads_dir(config) / "in" / "0123456789abcdef"
    folder.mkdir(parents=True)
    (folder / "audio_file.wav").write_bytes(wav_header(0))
    journal = Journal(config.paths.state_dir / "journal.sqlite3", 3)
    left = journal.admit(Identity("0123456789abcdef/audio_file.wav", 44, 1), kind="upload",
                         priority=2)
    journal.close()
    assert left is not None
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service:
        job = service.journal.get(left.id)
        assert (job.state, job.error) == ("canceled", "orphaned")
        assert upload_files(tmp_path) == []


# ---------------------------------------------------------------------------- parts

def test_raw_pcm_is_stored_as_a_wav_of_the_same_samples(tmp_path: Path) -> None:
    import wave

    samples = np.arange(-500, 500, dtype="<i2")
    sink = Sink(tmp_path / "a.wav", pcm=True, keep=None)
    for piece in (samples.tobytes()[:777], samples.tobytes()[777:], b"\x01"):  # odd: a half
        sink.write(piece)
    sink.finish()
    with wave.open(str(tmp_path / "a.wav")) as fh:
        assert (fh.getframerate(), fh.getnchannels(), fh.getsampwidth()) == (16000, 1, 2)
        assert np.array_equal(np.frombuffer(fh.readframes(fh.getnframes()), "<i2"), samples)
    kept = Sink(tmp_path / "b.wav", pcm=True, keep=100)  # detection keeps the start only
    kept.write(bytes(1000))
    kept.finish()
    assert (tmp_path / "b.wav").stat().st_size == 44 + 100


def test_client_file_names_are_made_harmless() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\films\\Le Film (2020).mkv") == "Le_Film_2020_.mkv"
    assert safe_name(".request.json") == "request.json"  # never a dot-file of ours
    assert safe_name(None) == safe_name("") == safe_name("..") == "audio_file"


def test_an_uploads_own_language_gets_a_pipeline_over_the_same_models(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    live, cache = LiveConfig(config), ModelCache(3)
    daemon = Pipeline(config, cache)
    aware = UploadAware(live, daemon, cache)
    folder = uploads_dir(config) / "in" / "0123456789abcdef"
    folder.mkdir(parents=True)
    (folder / REQUEST_FILE).write_text(json.dumps({"language": "de", "task": "translate"}))
    own = aware.pipeline_for(folder / "audio_file.wav")
    assert (own.config.whisper.language, own.config.whisper.task) == ("de", "translate")
    assert own.model_specs()["whisper"].key == daemon.model_specs()["whisper"].key
    assert aware.pipeline_for(tmp_path / "inbox" / "film.mkv") is daemon
    (folder / REQUEST_FILE).write_text(json.dumps({"task": config.whisper.task}))
    assert aware.pipeline_for(folder / "audio_file.wav") is daemon  # nothing of its own


@pytest.mark.parametrize("route, params, asked", [
    ("/asr", {"language": "de", "task": "translate"}, {"language": "de", "task": "translate"}),
    ("/asr", {}, {"task": "transcribe"}),  # whisper-asr-webservice's default task
    ("/detect-language", {"language": "de"}, {"language": "auto", "task": "transcribe"}),
])
async def test_each_upload_carries_what_its_request_asked_for(
        tmp_path: Path, route: str, params: dict[str, str], asked: dict[str, str]) -> None:
    """What the job's pipeline is built from (UploadAware); detection always listens."""
    pipeline = ScriptedPipeline(hold_after=1)
    async with running_service(tmp_path, transcribe=pipeline,
                               whisper={"language": "fr"}) as service, \
            aiohttp.ClientSession() as http:
        request = asyncio.create_task(http.post(base_url(service) + route,
                                                params={"encode": "false", **params},
                                                data=upload_form(bytes(3200))))
        assert await asyncio.to_thread(pipeline.held.wait, 30)
        [found] = (tmp_path / "state" / "uploads" / "in").glob(f"*/{REQUEST_FILE}")
        assert json.loads(found.read_text()) == asked
        pipeline.release.set()
        assert (await request).status == 200


# ---------------------------------------------------------------------------- memory

def post_zeros(port: int, size: int, params: dict[str, str]) -> int:
    """A streamed upload of `size` zero bytes (chunked, never whole in this process)."""
    async def send() -> int:
        async with aiohttp.ClientSession() as http:
            try:
                resp = await http.post(
                    f"http://127.0.0.1:{port}/asr", params=params,
                    data=multipart_stream("z3ros", size),
                    headers={"Content-Type": "multipart/form-data; boundary=z3ros"},
                    timeout=aiohttp.ClientTimeout(total=600))
                return resp.status
            except aiohttp.ClientError:
                return 413  # closed while sending: the refusal came before the end
    return asyncio.run(send())


def peak_rss_while(pid: int, work: Any) -> tuple[Any, int]:
    """Run `work()`, sampling the daemon's RSS meanwhile; (its result, the peak)."""
    peak, done = [rss_bytes(pid)], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_bytes(pid))
            done.wait(0.02)
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return work(), max(peak)
    finally:
        done.set()
        sampler.join()


def test_a_large_upload_streams_to_disk_with_flat_memory(daemon_factory: Any) -> None:
    """A real daemon: 192 MiB of zeros is streamed to disk and refused as not media (422); 320
    MiB against a 256 MiB limit is refused once the limit is crossed (413). The daemon's RSS
    grows by far less than either (README: the 2 GB figure, measured the same way)."""
    limit = 256 << 20
    daemon = daemon_factory(http={"max_upload_bytes": limit}).start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    baseline = rss_bytes(pid)
    status, peak = peak_rss_while(pid, lambda: post_zeros(daemon.port, 192 << 20, {}))
    assert status == 422, daemon.log.read_text()[-2000:]
    assert peak - baseline < 64 << 20, (baseline, peak)
    status, peak = peak_rss_while(pid, lambda: post_zeros(daemon.port, 320 << 20, {}))
    assert status == 413
    assert peak - baseline < 64 << 20, (baseline, peak)
    uploads = daemon.root / "state" / "uploads"
    daemon.wait_for(lambda: not [p for p in uploads.rglob("*") if p.is_file()], 30,
                    "upload files removed")
    assert os.path.isdir(uploads)
