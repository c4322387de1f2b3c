"""Fault injection against a real daemon process (issue 11): files arriving the ways real tools
write them, watcher events lost, a full outbox, a kill -9 at the worst moment, a big drop.

Each scenario ends with the suite's one oracle (testkit/oracle.py): every input has a valid
subtitle or an error file and a failed job, no temp file is left, each identity was finished
once, the daemon is healthy. The model is the real tiny.en; waits are generous timeouts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from daemon import journal as journal_module
from daemon.journal import FINAL_STATES, Identity, Journal, record_written
from testkit import oracle
from testkit.daemon import DaemonProcess, lose_inotify_events
from testkit.disks import fill, small_tmpfs
from testkit.media import copy_slowly

CRASH_HOOK = Path(__file__).parent / "crash_after_rename"  # a sitecustomize: see its docstring
DROP = 60


# ---------------------------------------------------------------------------- helpers

def healthz(d: DaemonProcess) -> dict[str, Any]:
    """/healthz's body, 200 or 503."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/healthz", timeout=5) as r:
            return dict(json.load(r))
    except urllib.error.HTTPError as exc:
        with exc:
            return dict(json.load(exc))


def rows_by_path(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every job in the journal, by input path."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in oracle.journal_rows(root / "state"):
        out.setdefault(row["rel_path"], []).append(row)
    return out


def finished(d: DaemonProcess, names: Iterable[str], timeout: float = 300) -> None:
    """Until every input in `names` has a job in a final state."""
    names = list(names)

    def done() -> bool:
        rows = rows_by_path(d.root)
        return all(rows.get(n) and rows[n][-1]["state"] in FINAL_STATES for n in names)
    d.wait_for(done, timeout, f"{len(names)} input(s) finished")


def each_admitted_once(root: Path, names: Iterable[str]) -> None:
    """One job per input and none for any other name (a temp name, a hidden file)."""
    rows = rows_by_path(root)
    assert sorted(rows) == sorted(names), sorted(rows)
    assert all(len(jobs) == 1 for jobs in rows.values()), rows


def outbox_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root / "outbox")) for p in (root / "outbox").rglob("*")
                  if p.is_file())


def inferences(d: DaemonProcess) -> int:
    """Model runs in this daemon process so far (every model: VAD and Whisper)."""
    stats = d.status()["models"]["stats"]
    return sum(int(s["inference_count"]) for s in stats.values())


# ---------------------------------------------------------------------------- arriving files

def test_a_preallocated_file_filled_in_place_is_read_once_complete(
        daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    """A downloader that reserves the whole file first (fallocate), then fills it: the size is
    final from the start and only the mtime moves. Settling must wait for the mtime too."""
    d = daemon_factory(watch={"settle_seconds": 3.0}).start()
    data = short_wav.read_bytes()
    path = tmp_path / "inbox" / "prealloc.wav"
    with open(path, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, len(data))
        assert path.stat().st_size == len(data)  # full size, all zeros: not media yet
        step = -(-len(data) // 10)
        for start in range(0, len(data), step):  # pauses well under settle_seconds
            fh.write(data[start:start + step])
            fh.flush()
            time.sleep(0.3)
    assert path.read_bytes() == data
    finished(d, ["prealloc.wav"])
    each_admitted_once(tmp_path, ["prealloc.wav"])
    oracle.check(tmp_path, ["prealloc.wav"], healthz(d), speech=["prealloc.wav"])


def test_temp_names_renamed_into_place_and_moves_from_outside_are_each_admitted_once(
        daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    """The ways tools put files in place: a download's temp name renamed when complete, rsync's
    hidden `.name.XXXXXX` renamed when complete, `mv` from another folder of the same
    filesystem (inotify says only "moved to"), and a whole folder moved in (no event for the
    files inside it). The temp names sit well past the settle time before their rename."""
    d = daemon_factory().start()
    inbox, outside = tmp_path / "inbox", tmp_path / "elsewhere"
    (inbox / "show").mkdir()
    (outside / "season").mkdir(parents=True)
    copy_slowly(short_wav, inbox / "download.wav.part", pieces=4, pause=0.2)
    copy_slowly(short_wav, inbox / "show" / ".ep1.wav.Xy12Ab", pieces=4, pause=0.2)
    shutil.copy(short_wav, outside / "moved.wav")
    shutil.copy(short_wav, outside / "season" / "e1.wav")
    time.sleep(2.0)  # settle_seconds is 0.5: a temp name taken for an input would be in by now
    os.rename(inbox / "download.wav.part", inbox / "download.wav")
    os.rename(inbox / "show" / ".ep1.wav.Xy12Ab", inbox / "show" / "ep1.wav")
    os.rename(outside / "moved.wav", inbox / "moved.wav")
    os.rename(outside / "season", inbox / "season")
    names = ["download.wav", "moved.wav", "season/e1.wav", "show/ep1.wav"]
    finished(d, names)
    each_admitted_once(tmp_path, names)
    oracle.check(tmp_path, names, healthz(d), speech=names)


# ---------------------------------------------------------------------------- lost events

def test_events_lost_while_the_watcher_was_stopped_are_found_by_the_rescan(
        daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    """The watcher stopped for a while and its events lost, from outside the process: the daemon
    is stopped (SIGSTOP), and more changes than the kernel queues for one inotify instance
    (fs.inotify.max_queued_events) are made meanwhile, so the kernel drops everything after
    them, the new media files included, and says only "overflow". No event ever names them;
    the periodic rescan (rescan_seconds) must find them."""
    inbox = tmp_path / "inbox"
    d = daemon_factory(watch={"mode": "events", "rescan_seconds": 3.0}).start()
    names = ["lost1.wav", "later/lost2.wav"]

    def make() -> None:
        shutil.copy(short_wav, inbox / names[0])
        (inbox / "later").mkdir()
        shutil.copy(short_wav, inbox / names[1])

    lose_inotify_events(d, inbox, make)
    d.wait_for(lambda: "Inotify queue overflowed" in d.log.read_text(), 60,
               "the kernel to report lost events")
    finished(d, names)
    each_admitted_once(tmp_path, names)
    oracle.check(tmp_path, names, healthz(d), speech=names)


# ---------------------------------------------------------------------------- a full outbox

def test_a_full_outbox_keeps_the_job_and_reports_degraded_until_space_returns(
        daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    """The outbox's disk is full: no partial subtitle and no temp file is left, the inputs stay,
    /healthz says degraded ("outbox full") while it lasts, no job fails or is charged for it,
    and once the filesystem grows each job is done, once."""
    names = ["a.wav", "b.wav"]
    with small_tmpfs(tmp_path / "outbox", "200k") as outbox:
        fill(outbox, "filler.bin")
        d = daemon_factory().start()
        for name in names:
            shutil.copy(short_wav, tmp_path / "inbox" / name)
        d.wait_for(lambda: healthz(d)["status"] == "degraded", 180, "/healthz degraded")
        assert healthz(d)["reasons"] == ["outbox full"], healthz(d)
        assert "outbox full" in d.status()["degraded"].get("outbox", ""), d.status()
        time.sleep(3)  # a few tries to write meanwhile
        assert outbox_files(tmp_path) == ["filler.bin"]  # no partial subtitle, no temp file
        rows = rows_by_path(tmp_path)
        assert all(r["state"] in ("queued", "running") for jobs in rows.values() for r in jobs)
        assert all((tmp_path / "inbox" / n).exists() for n in names)
        subprocess.run(["mount", "-o", "remount,size=2m", str(outbox)], check=True, timeout=30)
        finished(d, names)
        d.wait_for(lambda: healthz(d) == {"status": "ok"}, 60, "/healthz ok again")
        oracle.check(tmp_path, names, healthz(d), speech=names)
        assert {r[-1]["attempts"] for r in rows_by_path(tmp_path).values()} == {1}
        assert all((tmp_path / "inbox" / n).exists() for n in names)
        d.signal(signal.SIGTERM)
        assert d.wait_exit(30) == 0
    assert "Traceback" not in d.log.read_text()


# ---------------------------------------------------------------------------- kill -9

def test_kill_9_between_the_subtitle_rename_and_the_journal_commit_finishes_without_inference(
        daemon_factory, tmp_path: Path, short_wav: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL right after the last output's rename, before the journal records the job done:
    after the restart there is exactly one subtitle per format, untouched, and the job is
    finished from it with no model run, rather than transcribed again. It was its last
    attempt (max_attempts = 1): crash recovery must not fail it as "crashed" either."""
    formats = {"output": {"formats": ["srt", "vtt"]}, "jobs": {"max_attempts": 1}}
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(CRASH_HOOK), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SUBWATCH_TEST_KILL_AFTER_RENAME", "a.en.vtt")
    d = daemon_factory(**formats).start()
    shutil.copy(short_wav, tmp_path / "inbox" / "a.wav")
    assert d.wait_exit(180) == -signal.SIGKILL, d.log.read_text()[-3000:]
    srt, vtt = tmp_path / "outbox" / "a.en.srt", tmp_path / "outbox" / "a.en.vtt"
    written = {p: (p.read_bytes(), p.stat().st_ino) for p in (srt, vtt)}
    (row,) = oracle.journal_rows(tmp_path / "state")
    assert row["state"] == "running"  # the commit never happened
    monkeypatch.undo()

    d2 = daemon_factory(**formats).start()
    finished(d2, ["a.wav"], timeout=120)
    assert inferences(d2) == 0  # finished from the outputs, not transcribed again
    assert {p: (p.read_bytes(), p.stat().st_ino) for p in (srt, vtt)} == written
    assert outbox_files(tmp_path) == ["a.en.srt", "a.en.vtt"]
    (row,) = oracle.journal_rows(tmp_path / "state")
    assert row["state"] == "done" and sorted(json.loads(row["outputs"])) == sorted(
        str(p) for p in written)
    oracle.check(tmp_path, ["a.wav"], healthz(d2), speech=["a.wav"])


def test_a_journal_from_before_the_written_note_opens_and_takes_it(tmp_path: Path) -> None:
    """A journal made before jobs noted their outputs (no `written` column) opens, keeps its
    jobs, and notes outputs like a new one."""
    path = tmp_path / "journal.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(journal_module.SCHEMA.replace("    written         TEXT,\n", ""))
    db.close()
    old = Journal(path, max_attempts=3)
    job = old.admit(Identity("a.wav", 10, 20))
    assert job is not None and old.claim() is not None
    record_written(old, job.id, {"outputs": {"x.srt": "0" * 64}})
    old.close()
    again = Journal(path, max_attempts=3)
    claimed = again.get(job.id)
    assert claimed is not None and claimed.written == {"outputs": {"x.srt": "0" * 64}}
    assert "written" not in claimed.as_dict()  # the API's job stays as it was
    again.finish(job.id, ["x.srt"], "en", "ok", 1.0, 1.0)
    done = again.get(job.id)
    assert done is not None and done.written is None and done.state == "done"
    again.close()


# ---------------------------------------------------------------------------- a big drop

def test_a_sixty_file_drop_is_done_once_each(daemon_factory, tmp_path: Path,
                                             short_wav: Path) -> None:
    """60 files copied in at once, in three folders: each is admitted once and done once."""
    d = daemon_factory().start()
    names = [f"drop{n % 3}/clip {n:02d}.wav" for n in range(DROP)]
    for name in names:
        (tmp_path / "inbox" / name).parent.mkdir(exist_ok=True)
        shutil.copy(short_wav, tmp_path / "inbox" / name)
    finished(d, names, timeout=900)
    each_admitted_once(tmp_path, names)
    assert d.status()["queue"]["done"] == DROP
    oracle.check(tmp_path, names, healthz(d), speech=names)
