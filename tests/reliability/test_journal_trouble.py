"""Journal trouble against a real daemon process: a journal another process holds locked, a
corrupt journal file, a journal whose disk fills up mid-job, and a job that crash recovery fails
for good. Each ends with the reliability suite's oracle (testkit/oracle.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daemon.cli import EXIT_JOURNAL_CORRUPT
from daemon.journal import FINAL_STATES
from testkit import oracle
from testkit.daemon import DaemonProcess
from testkit.disks import fill, small_tmpfs
from testkit.speech import long_speech_wav

NO_PRELOAD = {"preload": []}  # nothing here needs a model before the first job

# Another process holding the journal's write lock, as `sqlite3 journal.sqlite3` with
# `BEGIN EXCLUSIVE;` typed and left open would: it says "locked" once it has the lock.
LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def journal_locked(state_dir: Path) -> Iterator[None]:
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER,
                               str(state_dir / "journal.sqlite3")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()  # the holder leaves: its transaction and lock end
        holder.wait(10)
        holder.stdout.close()


def jobs(d: DaemonProcess) -> dict[str, dict[str, Any]]:
    return {j["rel_path"]: j for j in d.get("/jobs?limit=1000")["jobs"]}


def finished(d: DaemonProcess, name: str) -> dict[str, Any]:
    return dict(d.wait_for(lambda: (j := jobs(d).get(name)) and j["state"] in FINAL_STATES
                           and j, what=f"{name} finished"))


def journal_degraded(d: DaemonProcess) -> dict[str, Any]:
    return dict(d.wait_for(lambda: (h := d.healthz())["status"] == "degraded" and h, 60,
                           "/healthz to report the journal"))


def test_locked_journal_keeps_status_answering_and_healthz_degraded(
        daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    """Another process holds the journal's write lock: /status still answers (each request
    within the client's 5 s timeout; it used to hang 20-30 s behind a waiting write),
    /healthz says the journal is degraded, and once the lock goes the file is transcribed."""
    d = daemon_factory(models=NO_PRELOAD).start()
    with journal_locked(tmp_path / "state"):
        shutil.copy(short_wav, tmp_path / "inbox" / "a.wav")  # its admission must wait
        for _ in range(8):  # spread over the daemon's tries to write
            assert d.status()["ready"]
            time.sleep(1)
        assert journal_degraded(d)["reasons"] == ["journal degraded"]
        status = d.status()
        assert status["journal"]["state"] == "degraded", status["journal"]
        assert "locked" in status["journal"]["reason"] and "queue" in status
    d.wait_for(lambda: d.healthz()["status"] == "ok", 60, "the journal back")
    assert finished(d, "a.wav")["state"] == "done"
    assert d.status()["journal"] == {"state": "ok"}
    oracle.check(tmp_path, ["a.wav"], d.healthz(), speech=["a.wav"])
    log = d.log.read_text()
    assert "Traceback" not in log and log.count("database is locked") == 1, log


def test_stop_while_the_journal_is_locked_exits_cleanly(daemon_factory, tmp_path: Path) -> None:
    """SIGTERM while another process holds the journal: the last writes of the stop wait
    their bounded time, are given up with a warning, and the daemon exits 0 (it used to end
    in a traceback); the next start finds the journal as it was."""
    d = daemon_factory(models=NO_PRELOAD).start()
    with journal_locked(tmp_path / "state"):
        d.signal(signal.SIGTERM)
        assert d.wait_exit(60) == 0
    log = d.log.read_text()
    assert "Traceback" not in log and "stopping without writing to the journal" in log, log
    d.start()
    assert d.status()["journal"] == {"state": "ok"}


def test_corrupt_journal_stops_with_one_line_and_its_own_exit_code(
        daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    """Garbage over the journal's header: no traceback and no restart loop, but one line that
    names the file and the way out, and exit code 3 (the unit's RestartPreventExitStatus).
    Doing what the line says starts a fresh journal that admits the inbox again."""
    d = daemon_factory(models=NO_PRELOAD).start()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    journal = tmp_path / "state" / "journal.sqlite3"
    with open(journal, "r+b") as f:
        f.write(b"not a database, just garbage " * 8)  # over the 100-byte header and more
    shutil.copy(short_wav, tmp_path / "inbox" / "a.wav")
    logged = d.log.stat().st_size
    d.start(wait=False)
    assert d.wait_exit(60) == EXIT_JOURNAL_CORRUPT
    log = d.log.read_text()[logged:]
    assert "Traceback" not in log, log
    (line,) = [ln for ln in log.splitlines() if str(journal) in ln]
    assert "corrupt" in line and "fresh journal" in line, line
    move = line[line.index("mv "):].split(";")[0]
    assert shlex.split(move) == ["mv", str(journal), f"{journal}.broken"], line
    subprocess.run(move, shell=True, check=True, timeout=10)  # the recovery, as the line says
    d.start()
    assert finished(d, "a.wav")["state"] == "done"
    assert (tmp_path / "state" / "journal.sqlite3.broken").exists()
    oracle.check(tmp_path, ["a.wav"], d.healthz(), speech=["a.wav"])


def test_full_disk_under_the_journal_records_the_job_when_space_returns(
        daemon_factory, tmp_path: Path) -> None:
    """The state folder fills up while a file is transcribed (SQLite says "database or disk
    is full", which is no OSError): the job is not left `running` for good; /healthz says the
    journal is degraded meanwhile, and the outcome is recorded once there is room again."""
    wav = long_speech_wav(tmp_path / "long.wav", 6)
    with small_tmpfs(tmp_path / "state") as state:
        d = daemon_factory(models=NO_PRELOAD).start()
        shutil.copy(wav, tmp_path / "inbox" / "long.wav")
        d.wait_for(lambda: d.status()["running"], what="the job running")
        filler = fill(state)
        assert journal_degraded(d)["reasons"] == ["journal degraded"]
        assert "full" in d.status()["journal"]["reason"]
        assert jobs(d)["long.wav"]["state"] == "running"  # waiting to be recorded, not lost
        filler.unlink()
        assert finished(d, "long.wav")["state"] == "done"
        d.wait_for(lambda: d.healthz()["status"] == "ok", 60, "the journal back")
        oracle.check(tmp_path, ["long.wav"], d.healthz(), speech=["long.wav"])
        d.signal(signal.SIGTERM)
        assert d.wait_exit(30) == 0
    log = d.log.read_text()
    assert "Traceback" not in log and "waits for the journal" in log, log


def test_job_failed_for_good_by_crash_recovery_gets_an_error_file(
        daemon_factory, tmp_path: Path) -> None:
    """A file that was running when the process died, with no attempts left: recovery at the
    next start fails it, and it gets an error file like any other failure."""
    wav = long_speech_wav(tmp_path / "long.wav", 6)
    (tmp_path / "inbox").mkdir()
    shutil.copy(wav, tmp_path / "inbox" / "poison.wav")
    d = daemon_factory(jobs={"max_attempts": 1}).start()
    d.wait_for(lambda: d.status()["running"], what="the job running")
    d.kill()  # as the OOM killer would
    d2 = daemon_factory(jobs={"max_attempts": 1}, models=NO_PRELOAD).start()
    job = finished(d2, "poison.wav")
    assert (job["state"], job["error"], job["attempts"]) == ("failed", "crashed", 1)
    record = json.loads((tmp_path / "outbox" / "poison.error.json").read_text())
    assert (record["input"], record["error"]) == ("poison.wav", "crashed")
    oracle.check(tmp_path, ["poison.wav"], d2.healthz())
    assert not os.path.exists(tmp_path / "outbox" / "poison.en.srt")
