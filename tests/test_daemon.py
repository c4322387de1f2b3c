"""A real daemon process: crashes, signals, restarts, slow copies, and start-up refusals."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from testkit.daemon import ROOT, DaemonProcess
from testkit.media import copy_slowly, write_wav
from testkit.speech import LONG_SENTENCES, long_speech_wav, srt_text, wer


def jobs(d: DaemonProcess, state: str | None = None) -> list[dict]:
    return d.get("/jobs" + (f"?state={state}" if state else ""))["jobs"]


def temp_files(root: Path) -> list[Path]:
    return [p for p in (root / "outbox").rglob("*") if p.name.startswith(".subwatch-")]


def test_kill_9_mid_batch_then_restart(daemon_factory, tmp_path: Path, speech_wav: Path,
                                       speech) -> None:
    d = daemon_factory().start()
    names = [f"batch/file{n}.wav" for n in range(4)]
    for name in names:
        (tmp_path / "inbox" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(speech_wav, tmp_path / "inbox" / name)
    d.wait_for(lambda: len(jobs(d, "done")) >= 1 and d.status()["running"], what="mid-batch")
    d.kill()  # SIGKILL: no cleanup at all
    d2 = daemon_factory().start()
    d2.wait_for(lambda: len(jobs(d2, "done")) == 4, what="all four done")
    for name in names:
        outputs = list((tmp_path / "outbox" / "batch").glob(Path(name).stem + ".*"))
        assert [p.name for p in outputs] == [Path(name).stem + ".en.srt"]
        assert wer(speech.text, srt_text(outputs[0])) <= 0.25
    assert not temp_files(tmp_path)
    assert len(jobs(d2)) == 4  # one job per file, no duplicates
    d2.signal(signal.SIGTERM)
    assert d2.wait_exit(30) == 0


def transcribing_long_file(daemon_factory, tmp_path: Path, grace: float) -> DaemonProcess:
    """A daemon in the middle of transcribing a 70 s file."""
    long_wav = long_speech_wav(tmp_path / "long.wav", gap=0.8)
    d = daemon_factory(jobs={"grace_seconds": grace}).start()
    shutil.copy(long_wav, tmp_path / "inbox" / "long.wav")
    d.wait_for(lambda: any(r["phase"] == "transcribe" for r in d.status()["running"]),
               what="transcribing")
    return d


def test_sigterm_mid_job_exits_0_and_restart_finishes(daemon_factory, tmp_path: Path) -> None:
    d = transcribing_long_file(daemon_factory, tmp_path, grace=20)
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    assert time.monotonic() - started < 20
    assert "back in the queue" in d.log.read_text()
    assert not list((tmp_path / "outbox").glob("*.srt"))
    d2 = daemon_factory().start()
    (job,) = d2.wait_for(lambda: jobs(d2, "done"), what="job done after restart")
    assert job["attempts"] == 1  # the stop did not cost an attempt
    text = srt_text(tmp_path / "outbox" / "long.en.srt")
    assert wer(" ".join(LONG_SENTENCES), text) <= 0.25
    d2.signal(signal.SIGINT)
    assert d2.wait_exit(30) == 0


def test_slow_copy_is_read_once_complete(daemon_factory, tmp_path: Path, speech_wav: Path,
                                         speech) -> None:
    d = daemon_factory(watch={"settle_seconds": 1.5}).start()
    copy_slowly(speech_wav, tmp_path / "inbox" / "slow.wav", pieces=8, pause=0.5)
    (job,) = d.wait_for(lambda: jobs(d, "done"), what="slow file done")
    assert job["size"] == speech_wav.stat().st_size
    assert len(jobs(d)) == 1
    assert wer(speech.text, srt_text(tmp_path / "outbox" / "slow.en.srt")) <= 0.25


def test_status_health_and_cli(daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    d = daemon_factory().start()
    shutil.copy(short_wav, tmp_path / "inbox" / "a.wav")
    d.wait_for(lambda: jobs(d, "done"), what="done")
    status = d.status()
    assert status["queue"]["done"] == 1 and status["watcher"]["state"] == "watching"
    (job,) = jobs(d)
    assert d.get(f"/jobs/{job['id']}")["outputs"][0].endswith("a.en.srt")
    out = subprocess.run([sys.executable, "-m", "daemon", "status", "--url",
                          f"http://127.0.0.1:{d.port}"], capture_output=True, text=True,
                         cwd=ROOT, timeout=30)
    assert out.returncode == 0 and "done 1" in out.stdout and "watching" in out.stdout
    # the NAS goes away: health says so, the daemon keeps running
    (tmp_path / "inbox").rename(tmp_path / "gone")
    d.wait_for(lambda: _health_code(d) == 503, timeout=90, what="degraded health")
    (tmp_path / "gone").rename(tmp_path / "inbox")
    d.wait_for(lambda: _health_code(d) == 200, timeout=90, what="healthy again")


def _health_code(d: DaemonProcess) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/healthz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_refuses_to_start_without_its_model(daemon_factory, tmp_path: Path) -> None:
    d = daemon_factory(whisper={"model": "no-such-model"})
    d.start(wait=False)
    assert d.wait_exit(60) == 1
    errors = [line for line in d.log.read_text().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "whisper.model" in errors[0] and "no-such-model" in errors[0]


def test_second_instance_on_same_state_is_refused(daemon_factory, tmp_path: Path) -> None:
    d = daemon_factory().start()
    clash = subprocess.run([sys.executable, "-m", "daemon", "run", "--config",
                            str(d.config_path)], capture_output=True, text=True, cwd=ROOT,
                           timeout=60)
    assert clash.returncode == 1 and "already running" in clash.stderr
    assert _health_code(d) == 200


def test_transcribe_command(tmp_path: Path, short_wav: Path, short_speech) -> None:
    silent = write_wav(tmp_path / "quiet.wav", np.zeros(16000 * 3, np.float32))
    out = subprocess.run([sys.executable, "-m", "daemon", "transcribe", str(short_wav),
                          str(silent), "-o", str(tmp_path / "subs")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    srt = tmp_path / "subs" / "short.en.srt"
    assert str(srt) in out.stdout and "no speech" in out.stdout
    assert wer(short_speech.text, srt_text(srt)) <= 0.25
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    failed = subprocess.run([sys.executable, "-m", "daemon", "transcribe", str(bad)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert failed.returncode == 1 and "not a readable media file" in failed.stderr


def test_transcribe_gives_two_files_of_one_stem_two_subtitles(tmp_path: Path,
                                                               short_wav: Path) -> None:
    """`transcribe a.wav a.flac`: the daemon's naming rule, so neither overwrites the other."""
    for name in ("a.wav", "a.flac"):
        shutil.copy(short_wav, tmp_path / name)
    out = subprocess.run([sys.executable, "-m", "daemon", "transcribe", str(tmp_path / "a.wav"),
                          str(tmp_path / "a.flac")],
                         capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a.wav.en.srt").is_file() and (tmp_path / "a.flac.en.srt").is_file()
    assert not (tmp_path / "a.en.srt").exists()


def test_stop_past_the_grace_period_leaves_anyway(daemon_factory, tmp_path: Path) -> None:
    """A grace of 0 s: the inference still running is abandoned, the job stays queued."""
    d = transcribing_long_file(daemon_factory, tmp_path, grace=0)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    d2 = daemon_factory().start()
    (job,) = d2.wait_for(lambda: jobs(d2, "done"), what="done after restart")
    assert job["attempts"] == 1
