"""The HTTP findings of issue 11 against a real daemon process: what a client on the network
(or a web page the user opens) can do to a daemon with no token, reproduced as they were found."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp

from daemon.config import HttpConfig
from testkit.daemon import DaemonProcess

DESCRIPTORS = 120  # the soft limit the finding was reproduced with
STREAMS = 150  # more readers than descriptors


def start_with_descriptor_limit(daemon: DaemonProcess, limit: int) -> DaemonProcess:
    """Start the daemon with RLIMIT_NOFILE lowered (it inherits the limit at fork)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        daemon.start(wait=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    daemon.wait_ready()
    return daemon


def post(daemon: DaemonProcess, route: str, body: bytes, ctype: str,
         headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}{route}", data=body,
                                     method="POST",
                                     headers={"Content-Type": ctype, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


async def open_streams(port: int, count: int) -> tuple[list[aiohttp.ClientResponse], list[int],
                                                         aiohttp.ClientSession]:
    """Open `count` SSE readers one after another (as a browser tab reconnecting would); stop
    at the first the daemon does not answer at all."""
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    held: list[aiohttp.ClientResponse] = []
    refused: list[int] = []
    for _ in range(count):
        try:
            resp = await http.get(f"http://127.0.0.1:{port}/events",
                                  timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=20,
                                                                total=None))
        except (TimeoutError, aiohttp.ClientError):
            break
        if resp.status == 200:
            held.append(resp)
        else:
            refused.append(resp.status)
            assert resp.headers.get("Retry-After"), resp.headers
            resp.release()
    return held, refused, http


async def test_event_readers_past_the_descriptor_limit_leave_jobs_and_discovery_alone(
        tmp_path: Path, short_wav: Path) -> None:
    daemon = start_with_descriptor_limit(DaemonProcess(tmp_path), DESCRIPTORS)
    http = None
    try:
        held, refused, http = await asyncio.wait_for(open_streams(daemon.port, STREAMS), 300)
        assert len(held) + len(refused) == STREAMS, "the daemon stopped answering"
        assert len(held) == 64 and set(refused) == {503}  # http.max_event_streams' default
        shutil.copy(short_wav, tmp_path / "inbox" / "a.wav")
        jobs = await asyncio.to_thread(
            daemon.wait_for, lambda: [j for j in daemon.get("/jobs")["jobs"]
                                      if j["state"] in ("done", "failed")], 180, "the job")
        assert jobs[0]["state"] == "done" and jobs[0]["attempts"] == 1, jobs
        assert daemon.get("/healthz") == {"status": "ok"}
        for resp in held:
            resp.close()
    finally:
        if http is not None:
            await http.close()
        daemon.kill()
    log = daemon.log.read_text()
    assert "Traceback" not in log and "Too many open files" not in log, log[-3000:]


def test_posts_a_web_page_could_send_are_refused_and_floods_bounded(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path).start()
    try:
        # text/plain needs no CORS preflight: any page could send these
        assert post(daemon, "/logging", b'{"level": "DEBUG"}', "text/plain") == 415
        assert post(daemon, "/reload", b"{}", "text/plain") == 415
        assert post(daemon, "/logging", b'{"level": "DEBUG"}', "application/json",
                    {"Origin": "http://evil.example"}) == 403
        # 4 000 new logger names blocked the loop 2.65 s; a 1 MiB body past WatchdogSec
        flood = json.dumps({"levels": {f"x.{n}": "DEBUG" for n in range(4000)}}).encode()
        assert post(daemon, "/logging", flood, "application/json") == 413
        names = json.dumps({"levels": {f"x.{n}": "DEBUG" for n in range(60)}}).encode()
        assert post(daemon, "/logging", names, "application/json") == 400
        huge = json.dumps({"levels": {"x": "D" * (1 << 20)}}).encode()
        assert post(daemon, "/logging", huge, "application/json") == 413
        assert daemon.status()["settings"]["log_level"] == "INFO"
        assert post(daemon, "/logging", b'{"level": "DEBUG"}', "application/json",
                    {"Origin": f"http://127.0.0.1:{daemon.port}"}) == 200
        assert daemon.status()["settings"]["log_level"] == "DEBUG"
        assert daemon.get("/healthz") == {"status": "ok"}
    finally:
        daemon.kill()
    assert "Traceback" not in daemon.log.read_text()


def test_the_unit_sets_a_descriptor_limit_above_the_stream_cap() -> None:
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "subwatch.service").read_text()
    found = re.search(r"^LimitNOFILE=(\d+)$", unit, re.MULTILINE)
    assert found, "LimitNOFILE= missing from systemd/subwatch.service"
    assert int(found.group(1)) >= 4 * HttpConfig().max_event_streams
