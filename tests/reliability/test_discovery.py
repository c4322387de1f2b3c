"""Discovery against hostile inboxes: one bad entry (a symlink loop, a name that is not UTF-8, a
folder nobody may list) never stops a real daemon from finding, transcribing and reporting the
rest, and is warned about once, not at every rescan."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_watcher import nest, symlink_loop, unnest

from daemon.journal import Identity, Journal
from daemon.writer import Outbox
from testkit.daemon import DaemonProcess
from testkit.speech import srt_text, wer

LATIN1 = os.fsdecode(b"caf\xe9.wav")  # "café.wav" as Latin-1 archives and old SMB clients name it
RESCAN = {"rescan_seconds": 0.5}
TOO_DEEP = (20, "b" * 250, "lost.wav")  # 5 000 bytes of path: over PATH_MAX


@pytest.fixture
def unlistable(tmp_path: Path) -> Iterator[Path]:
    """An inbox holding a folder that cannot be listed. A path over PATH_MAX fails with
    ENAMETOOLONG even for root (these tests run as root, which reads any 0700 folder): it
    stands for another user's 0700 folder, lost+found or "System Volume Information"."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    nest(inbox, *TOO_DEEP)
    yield inbox
    unnest(inbox, *TOO_DEEP)  # pytest's own clean-up cannot go that deep


def done_jobs(d: DaemonProcess) -> list[dict[str, Any]]:
    return d.get("/jobs?state=done")["jobs"]


def wait_for_rescans(d: DaemonProcess, count: int) -> None:
    first = d.status()["watcher"]["scans"]
    d.wait_for(lambda: d.status()["watcher"]["scans"] >= first + count, 60, f"{count} rescans")


def is_utf8(name: str) -> bool:
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------------- a real daemon

def test_a_symlink_loop_does_not_stop_discovery(daemon_factory, tmp_path: Path,
                                                short_wav: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    symlink_loop(inbox)  # there at start: the first scan meets it
    d = daemon_factory(watch=RESCAN).start()
    symlink_loop(inbox, "later1.mp4", "later2.mp4")  # made while watching: inotify reports it
    shutil.copy(short_wav, inbox / "good.wav")
    (job,) = d.wait_for(lambda: done_jobs(d), what="the good file done")
    assert job["rel_path"] == "good.wav"
    assert (tmp_path / "outbox" / "good.en.srt").stat().st_size > 0
    wait_for_rescans(d, 4)
    log = d.log.read_text()
    for name in ("loop1.wav", "loop2.wav", "later1.mp4", "later2.mp4"):
        assert log.count(f"skipping {name!r} in the inbox: a symlink loop") == 1, log
    assert "Traceback" not in log and "unexpected error" not in log
    assert d.healthz() == {"status": "ok"}


def test_a_name_that_is_not_utf8_is_transcribed(daemon_factory, tmp_path: Path,
                                                short_wav: Path, short_speech) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    shutil.copy(short_wav, inbox / LATIN1)
    broken = os.fsdecode(b"r\xe9sum\xe9.mp3")
    (inbox / broken).write_bytes(b"\x00not audio at all" * 64)
    d = daemon_factory().start()
    d.wait_for(lambda: done_jobs(d) and d.get("/jobs?state=failed")["jobs"],
               what="one file done, one failed")
    (job,) = done_jobs(d)
    assert job["rel_path"] == LATIN1  # the same name, byte for byte
    outputs = sorted(p for p in outbox.rglob("*") if p.is_file())
    assert all(is_utf8(p.name) for p in outputs), outputs
    (srt,) = (p for p in outputs if p.name.endswith(".en.srt"))
    assert srt.name.startswith("caf\ufffd")
    assert [str(srt)] == job["outputs"]
    assert wer(short_speech.text, srt_text(srt)) <= 0.25
    (error,) = (p for p in outputs if p.name.endswith(".error.json"))
    assert error.name.startswith("r\ufffdsum\ufffd")
    assert json.loads(error.read_text(encoding="utf-8"))["input"].startswith("r\ufffdsum\ufffd")

    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    d2 = daemon_factory(watch=RESCAN).start()  # the journal knows both names: nothing redone
    wait_for_rescans(d2, 2)
    assert len(d2.get("/jobs")["jobs"]) == 2 and len(done_jobs(d2)) == 1
    assert "Traceback" not in d.log.read_text()


def test_an_unreadable_folder_does_not_stop_discovery(daemon_factory, unlistable: Path,
                                                      short_wav: Path) -> None:
    inbox = unlistable
    d = daemon_factory(watch=RESCAN).start()
    shutil.copy(short_wav, inbox / "good.wav")
    d.wait_for(lambda: done_jobs(d), what="the good file done")
    wait_for_rescans(d, 5)
    log = d.log.read_text()
    assert log.count("a folder that cannot be listed") == 1, log[-3000:]
    assert "unavailable" not in log and "available again" not in log
    assert d.status()["watcher"]["state"] == "watching"
    assert d.healthz() == {"status": "ok"}


def test_repeated_scan_failures_show_in_healthz(daemon_factory, tmp_path: Path) -> None:
    d = daemon_factory(watch=RESCAN).start()
    inbox = tmp_path / "inbox"
    inbox.rename(tmp_path / "elsewhere")
    inbox.write_bytes(b"a file where the inbox was: its stat works, listing it does not")
    d.wait_for(lambda: "inbox scans are failing" in d.healthz().get("reasons", ()), 60,
               "scan failures in /healthz")
    assert d.healthz()["status"] == "degraded"
    watcher = d.status()["watcher"]
    assert watcher["scan_failures"] >= 2 and watcher["next_scan_in"] > 0
    inbox.unlink()
    (tmp_path / "elsewhere").rename(inbox)
    d.wait_for(lambda: d.healthz() == {"status": "ok"}, 90, "healthy again")
    assert d.log.read_text().count("is unavailable") == 1


# ---------------------------------------------------------------------------- the parts

def test_the_journal_keeps_a_name_that_is_not_utf8_byte_for_byte(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3", max_attempts=3)
    identity = Identity(LATIN1, 10, 20, 30)
    job = journal.admit(identity)
    assert job is not None and job.rel_path == LATIN1
    assert journal.known(identity) and journal.admit(identity) is None
    assert not journal.known(Identity(os.fsdecode(b"caf\xe8.wav"), 10, 20))
    assert not journal.known(Identity("café.wav", 10, 20))  # the UTF-8 name is another file
    claimed = journal.claim()
    assert claimed is not None and claimed.id == job.id
    journal.finish(job.id, ["out.srt"], "en", "ok", 1.0, 1.0)
    assert journal.outputs_of(LATIN1) == {"out.srt"}
    journal.close()
    again = Journal(tmp_path / "journal.sqlite3", max_attempts=3)
    stored = again.get(job.id)
    assert stored is not None and stored.rel_path == LATIN1 and stored.state == "done"
    assert [j.rel_path for j in again.list_jobs()] == [LATIN1]
    again.close()


def test_outputs_of_names_that_are_not_utf8_are_utf8_and_distinct(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox", "{stem}.{lang}.{ext}", ("srt", "vtt"))
    names = [LATIN1, os.fsdecode(b"caf\xe8.wav"), "café.wav",
             os.fsdecode(b"d\xe9j\xe0/vu.wav"), os.fsdecode(b"d\xe9j\xe8/vu.wav")]
    targets = [outbox.target(name, "en", fmt) for name in names for fmt in outbox.formats]
    assert all(is_utf8(str(path)) for path in targets), targets
    assert len(set(targets)) == len(targets)
    assert outbox.target(LATIN1, "en", "srt") == targets[0]  # the same every time
    assert outbox.target("café.wav", "en", "srt").name == "café.en.srt"  # UTF-8 names unchanged
    path = outbox.write_error(LATIN1, "bad_input", "cannot decode", 3)
    assert is_utf8(str(path))
    assert json.loads(path.read_text(encoding="utf-8"))["input"].startswith("caf\ufffd")
