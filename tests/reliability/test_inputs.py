"""Hostile and awkward inputs against a real daemon process: containers that name other files,
a name too long for its subtitle, two containers of one stem, a file too long, a kill with two
jobs running, and a `.done/` copy that must not be replaced.

Each test drives `python -m daemon run` (or, where only the service is under test, the
in-process service on a scripted pipeline) the way a user's share would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from daemon.journal import FINAL_STATES
from testkit.daemon import DaemonProcess, jobs_of, make_config, run_burst, wait_for
from testkit.media import Speech, encode
from testkit.scripted import ScriptedPipeline
from testkit.speech import long_speech_wav, srt_text, wer

NO_PRELOAD = {"preload": []}  # nothing here needs a model loaded before the first job


def jobs(d: DaemonProcess) -> dict[str, dict[str, Any]]:
    return {j["rel_path"]: j for j in d.get("/jobs?limit=1000")["jobs"]}


def finished(d: DaemonProcess, *names: str) -> dict[str, dict[str, Any]]:
    """Wait until every named input's job is in a final state; its jobs by name."""
    return d.wait_for(lambda: (js := jobs(d)) and all(
        js.get(n, {}).get("state") in FINAL_STATES for n in names) and js,
        what=f"{names} finished")


def error_record(root: Path, name: str) -> dict[str, Any]:
    path = root / "outbox" / name  # written just after the journal records the failure
    wait_for(path.exists, 30, f"{name} written")
    return json.loads(path.read_text())


def outputs(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "outbox").rglob("*") if p.is_file())


def test_concat_list_never_transcribes_a_file_outside_the_inbox(
        daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    """leak.mp4 is an ffconcat list naming s.dat, a symlink (with an extension the watcher
    ignores) to a private recording: the job fails with an error file, nothing is transcribed."""
    secret = tmp_path / "private" / "secret.wav"
    secret.parent.mkdir()
    shutil.copy(short_wav, secret)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "s.dat").symlink_to(secret)
    (inbox / "leak.mp4").write_text("ffconcat version 1.0\nfile s.dat\n")
    d = daemon_factory(models=NO_PRELOAD).start()
    job = finished(d, "leak.mp4")["leak.mp4"]
    assert (job["state"], job["error"], job["attempts"]) == ("failed", "unsafe_container", 1)
    assert outputs(tmp_path) == ["leak.error.json"]
    assert "concat" in error_record(tmp_path, "leak.error.json")["message"]
    assert d.get("/healthz")["status"] == "ok"


def test_self_referencing_concat_list_fails_once(daemon_factory, tmp_path: Path) -> None:
    """A list that names itself used to recurse until the process ran out of descriptors."""
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "loop.mkv").write_text("ffconcat version 1.0\nfile loop.mkv\n")
    d = daemon_factory(models=NO_PRELOAD).start()
    job = finished(d, "loop.mkv")["loop.mkv"]
    assert (job["state"], job["error"], job["attempts"]) == ("failed", "unsafe_container", 1)
    assert error_record(tmp_path, "loop.error.json")["input"] == "loop.mkv"
    assert d.get("/healthz")["status"] == "ok"


def test_overlong_name_gets_a_short_valid_subtitle(daemon_factory, tmp_path: Path,
                                                   short_wav: Path, short_speech: Speech) -> None:
    """A 250-byte input name: its subtitle and a sibling's error file get names within 255
    bytes, at the first attempt (it used to fail three times and leave no error file)."""
    stem = "é" * 100 + "x" * 46  # 246 bytes
    good, bad = f"{stem}.wav", f"{stem[:-1]}y.mp4"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(short_wav, inbox / good)
    (inbox / bad).write_text("not a video\n" * 20)
    d = daemon_factory().start()
    js = finished(d, good, bad)
    assert (js[good]["state"], js[good]["attempts"]) == ("done", 1)
    assert (js[bad]["state"], js[bad]["attempts"]) == ("failed", 1)
    (srt,) = (Path(p) for p in js[good]["outputs"])
    assert len(os.fsencode(srt.name)) <= 255 and srt.name.endswith(".en.srt")
    assert wer(short_speech.text, srt_text(srt)) <= 0.3
    (error,) = (tmp_path / "outbox").glob("*.error.json")
    assert len(os.fsencode(error.name)) <= 255
    assert json.loads(error.read_text())["input"] == bad


def test_same_stem_in_two_containers_gets_two_subtitles(daemon_factory, tmp_path: Path,
                                                        short_speech: Speech) -> None:
    """a.mp4 and a.mkv used to write one a.en.srt, the second over the first."""
    inbox = tmp_path / "inbox"
    for name in ("a.mp4", "a.mkv"):  # encode makes the folder
        encode(inbox / name, short_speech.samples)
    d = daemon_factory().start()
    js = finished(d, "a.mp4", "a.mkv")
    assert [js[n]["state"] for n in ("a.mp4", "a.mkv")] == ["done", "done"]
    assert outputs(tmp_path) == ["a.mkv.en.srt", "a.mp4.en.srt"]
    for name in outputs(tmp_path):
        assert wer(short_speech.text, srt_text(tmp_path / "outbox" / name)) <= 0.3


def test_input_longer_than_max_duration_fails_at_once(daemon_factory, tmp_path: Path,
                                                      short_wav: Path) -> None:
    (tmp_path / "inbox").mkdir()
    shutil.copy(short_wav, tmp_path / "inbox" / "long.wav")
    d = daemon_factory(jobs={"max_duration": 2}, models=NO_PRELOAD).start()
    job = finished(d, "long.wav")["long.wav"]
    assert (job["state"], job["error"], job["attempts"]) == ("failed", "too_long", 1)
    assert "jobs.max_duration" in error_record(tmp_path, "long.error.json")["message"]


def test_kill_with_two_jobs_running_charges_neither(daemon_factory, tmp_path: Path) -> None:
    """SIGKILL (as the OOM killer sends) while two files run: neither is charged an attempt,
    and after the restart they run one at a time, so a second kill would be one file's."""
    wav = long_speech_wav(tmp_path / "long.wav")
    (tmp_path / "inbox").mkdir()
    for name in ("one.wav", "two.wav"):
        shutil.copy(wav, tmp_path / "inbox" / name)
    d = daemon_factory(jobs={"workers": 2}).start()
    d.wait_for(lambda: len(d.status()["running"]) == 2, what="both running")
    d.kill()
    d2 = daemon_factory(jobs={"workers": 2}).start()
    d2.wait_for(lambda: d2.status()["running"], what="one running again")
    js = jobs(d2)
    (running,) = [j for j in js.values() if j["state"] == "running"]
    (waiting,) = [j for j in js.values() if j is not running]
    assert running["attempts"] == 1  # 2 when the kill was charged to it
    assert (waiting["state"], waiting["attempts"], waiting["error"]) == \
        ("queued", 0, "crash_suspect")


async def test_move_on_success_keeps_an_older_done_copy(tmp_path: Path) -> None:
    """on_success = "move" twice for one name (a re-encoded file): the older copy in .done/
    stays, the newer one gets the next free name."""
    config = make_config(tmp_path, jobs={"on_success": "move"})
    (tmp_path / "inbox" / "clip.wav").write_bytes(b"\x01" * 4096)
    await run_burst(config, transcribe=ScriptedPipeline())
    (tmp_path / "inbox" / "clip.wav").write_bytes(b"\x02" * 8192)
    await run_burst(config, transcribe=ScriptedPipeline())
    done = tmp_path / "inbox" / ".done"
    assert sorted(p.name for p in done.iterdir()) == ["clip (2).wav", "clip.wav"]
    assert (done / "clip.wav").read_bytes() == b"\x01" * 4096
    assert (done / "clip (2).wav").read_bytes() == b"\x02" * 8192
    assert [j["state"] for j in jobs_of(tmp_path)] == ["done", "done"]
