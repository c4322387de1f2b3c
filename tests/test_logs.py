"""Logging on a real daemon: JSON files with job context, rotation, journald, no mixing."""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

from testkit.daemon import DaemonProcess


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stop(d: DaemonProcess) -> None:
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0


def test_json_files_with_job_context_and_error_log(daemon_factory, tmp_path: Path,
                                                   short_wav: Path) -> None:
    logs = tmp_path / "logs"
    d = daemon_factory(logging={"format": "json", "dir": str(logs)}).start()
    shutil.copy(short_wav, tmp_path / "inbox" / "good.wav")
    (tmp_path / "inbox" / "broken.mp4").write_text("not a video")
    d.wait_for(lambda: d.status()["queue"]["done"] == 1 and d.status()["queue"]["failed"] == 1,
               what="one done, one failed")
    stop(d)
    records = json_lines(logs / "app.log")
    keys = {"timestamp", "level", "logger", "message", "module", "function", "line", "job_id",
            "chunk_id", "stage"}
    assert all(keys <= set(r) for r in records)
    jobs: dict[str, str] = {}
    started = [r for r in records if r["message"].startswith("started ")]
    assert len(started) == 2 and all(r["job_id"] for r in started)
    for r in started:
        jobs[re.search(r"'(.+?)'", r["message"]).group(1)] = r["job_id"]
    in_job = [r for r in records if r["job_id"] == jobs["good.wav"]]
    assert any(r["stage"] == "transcribe" for r in in_job)
    assert any(r["message"].startswith("done 'good.wav'") for r in in_job)
    errors = json_lines(logs / "error.log")
    assert errors and all(r["level"] in ("ERROR", "CRITICAL") for r in errors)
    failure = next(r for r in errors if "broken.mp4" in r["message"])
    assert failure["job_id"] == jobs["broken.mp4"] and "not_media" in failure["message"]


def test_rotation_at_max_bytes(daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    logs = tmp_path / "logs"
    d = daemon_factory(logging={"dir": str(logs), "max_bytes": 1000, "backup_count": 1,
                                "level": "DEBUG"}).start()
    for n in range(3):
        shutil.copy(short_wav, tmp_path / "inbox" / f"r{n}.wav")
    d.wait_for(lambda: d.status()["queue"]["done"] == 3, what="three done")
    stop(d)
    assert (logs / "app.log.1").is_file()  # rotated…
    assert not (logs / "app.log.2").exists()  # …and bounded by backup_count
    assert all(p.stat().st_size <= 1000 + 1024 for p in logs.glob("app.log*"))


def test_journald_stream_gets_priorities_and_no_timestamps(daemon_factory,
                                                           tmp_path: Path) -> None:
    d = daemon_factory().start(journald=True)
    (tmp_path / "inbox" / "bad.mp4").write_text("nope")
    d.wait_for(lambda: d.status()["queue"]["failed"] == 1, what="failure logged")
    stop(d)
    lines = [line for line in d.log.read_text().splitlines() if line.strip()]
    assert lines and all(re.match(r"<[0-7]>", line) for line in lines), lines[:5]
    assert not any(re.search(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d", line) for line in lines)
    assert any(line.startswith("<6>") for line in lines)
    assert any(line.startswith("<3>") and "bad.mp4" in line for line in lines)


def test_two_workers_never_mix_job_ids(daemon_factory, tmp_path: Path, short_wav: Path,
                                       speech_wav: Path) -> None:
    logs = tmp_path / "logs"
    d = daemon_factory(jobs={"workers": 2}, logging={"format": "json", "dir": str(logs)})
    d.start()
    for n in range(6):
        shutil.copy(speech_wav if n % 2 else short_wav, tmp_path / "inbox" / f"w{n}.wav")
    d.wait_for(lambda: d.status()["queue"]["done"] == 6, what="six done")
    owner = {j["id"]: j["rel_path"] for j in d.get("/jobs")["jobs"]}
    stop(d)
    records = json_lines(logs / "app.log")
    overlapping = 0
    for r in records:
        named = re.findall(r"'(w\d\.wav)'", r["message"])
        if r["job_id"] and named and not r["message"].startswith("queued"):
            assert named == [owner[r["job_id"]]], r
            overlapping += 1
    assert overlapping >= 12  # started + done for each job, at least
    # the two workers really ran at the same time
    starts = [r for r in records if r["message"].startswith("started ")]
    assert len({r["job_id"] for r in starts}) == 6
