"""`subwatch jobs | retry | cancel | status --watch` as a user runs them: the CLI in its own
process against a real daemon process, through the HTTP API, address and token read from the
same config file.

One daemon (with a token) serves the whole module: each start loads the model. Its jobs are made
once (one transcribed file, one bad file) by module-scoped fixtures; tests that change a job
leave it as they found it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.client import DaemonClient
from testkit.daemon import ROOT, DaemonProcess, as_at_a_terminal, free_port, write_toml

TOKEN = "s3cret"
CLEAR_SCREEN = "\x1b[H\x1b[2J"
# As a user's shell runs it: stdout buffered when it is a pipe (this session may set it off).
CLI_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def cli(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args, "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=CLI_ENV)


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    """The failure as the user sees it: exit 1, nothing on stdout, one line, no traceback."""
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("subwatch: ")
    return result.stderr.strip()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path_factory.mktemp("cli-jobs"), http={"token": TOKEN})
    try:
        yield d.start()
    finally:
        d.kill()


@pytest.fixture(scope="module")
def api(daemon: DaemonProcess) -> DaemonClient:
    """For the tests' own waits (DaemonProcess.get sends no token)."""
    return DaemonClient(f"http://127.0.0.1:{daemon.port}", TOKEN)


def job_named(api: DaemonClient, name: str, state: str) -> dict[str, Any] | None:
    return next((j for j in api.jobs(state, 100)["jobs"] if j["rel_path"] == name), None)


@pytest.fixture(scope="module")
def done_job(daemon: DaemonProcess, api: DaemonClient, short_wav: Path) -> dict[str, Any]:
    shutil.copy(short_wav, daemon.root / "inbox" / "short.wav")
    job: dict[str, Any] = daemon.wait_for(lambda: job_named(api, "short.wav", "done"),
                                          what="short.wav done")
    return job


@pytest.fixture(scope="module")
def failed_job(daemon: DaemonProcess, api: DaemonClient) -> dict[str, Any]:
    (daemon.root / "inbox" / "bad.mp4").write_text("this is not a video\n")
    job: dict[str, Any] = daemon.wait_for(lambda: job_named(api, "bad.mp4", "failed"),
                                          what="bad.mp4 failed")
    return job


# ---------------------------------------------------------------------------- jobs

def test_jobs_table_shows_the_transcribed_file(daemon: DaemonProcess,
                                               done_job: dict[str, Any]) -> None:
    result = cli(daemon.config_path, "jobs")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "TRIES", "INPUT", "DETAIL"]
    (row,) = [r for r in rows if r.startswith(done_job["id"])]
    assert row.split()[1:4] == ["done", "1", "short.wav"]
    assert row.rstrip().endswith(".srt")  # the outputs' names


def test_jobs_json_is_the_api_document(daemon: DaemonProcess, done_job: dict[str, Any]) -> None:
    result = cli(daemon.config_path, "jobs", "--json", "--limit", "5")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["count"] == len(data["jobs"]) <= 5
    (job,) = [j for j in data["jobs"] if j["id"] == done_job["id"]]
    assert job["state"] == "done" and job["outputs"] == done_job["outputs"]


def test_jobs_state_failed_lists_only_failures(daemon: DaemonProcess, done_job: dict[str, Any],
                                               failed_job: dict[str, Any]) -> None:
    result = cli(daemon.config_path, "jobs", "--state", "failed")
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == [failed_job["id"]]
    assert "bad.mp4" in rows[0] and f"{failed_job['error']}:" in rows[0]
    assert cli(daemon.config_path, "jobs", "--state", "nonsense").returncode == 2  # usage


# ---------------------------------------------------------------------------- retry, cancel

def test_retry_of_a_failed_job_queues_it_and_it_fails_again(
        daemon: DaemonProcess, api: DaemonClient, failed_job: dict[str, Any]) -> None:
    before = job_named(api, "bad.mp4", "failed")
    assert before is not None
    result = cli(daemon.config_path, "retry", failed_job["id"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "queued\n", "")
    again = daemon.wait_for(
        lambda: (j := job_named(api, "bad.mp4", "failed")) and j["finished_at"] >
        before["finished_at"] and j, what="bad.mp4 failed again")
    assert again["attempts"] == 1  # a retry starts with fresh attempts


def test_cancel_of_a_done_job_is_refused_in_one_line(daemon: DaemonProcess,
                                                     done_job: dict[str, Any]) -> None:
    line = one_line_failure(cli(daemon.config_path, "cancel", done_job["id"]))
    assert line == "subwatch: a done job cannot be canceled"


@pytest.mark.parametrize("verb,job_id", [("retry", "0123456789abcdef"), ("cancel", "nope")])
def test_unknown_job_id_is_one_line(daemon: DaemonProcess, verb: str, job_id: str) -> None:
    line = one_line_failure(cli(daemon.config_path, verb, job_id))
    assert line == f"subwatch: no such job: {job_id}"


# ---------------------------------------------------------------------------- access

@pytest.mark.parametrize("token,message", [
    ("wrong", "the daemon refused the token: check http.token in the config"),
    (None, "the daemon wants a token: set http.token in the config"),
])
def test_a_wrong_or_missing_token_says_so(daemon: DaemonProcess, tmp_path: Path,
                                          token: str | None, message: str) -> None:
    http: dict[str, Any] = {"port": daemon.port, **({"token": token} if token else {})}
    config = write_toml(tmp_path / "other.toml", {"http": http})
    for args in (["jobs"], ["status"], ["retry", "0123456789abcdef"]):
        assert one_line_failure(cli(config, *args)) == f"subwatch: {message}"


def test_url_overrides_the_config(daemon: DaemonProcess, tmp_path: Path) -> None:
    """The token still comes from the config; only the address is overridden."""
    config = write_toml(tmp_path / "elsewhere.toml",
                        {"http": {"port": free_port(), "token": TOKEN}})
    result = cli(config, "jobs", "--url", f"http://127.0.0.1:{daemon.port}/")
    assert result.returncode == 0, result.stderr


def test_no_daemon_running_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    config = write_toml(tmp_path / "config.toml", {"http": {"port": port}})
    for args in (["jobs"], ["status"], ["status", "--watch"], ["cancel", "0123456789abcdef"]):
        line = one_line_failure(cli(config, *args))
        assert line.startswith(f"subwatch: cannot reach the daemon at http://127.0.0.1:{port}: ")


# ---------------------------------------------------------------------------- status

def test_status_and_status_json_are_unchanged(daemon: DaemonProcess) -> None:
    result = cli(daemon.config_path, "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("subwatch ") and "\nwatcher: " in result.stdout
    result = cli(daemon.config_path, "status", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["ready"] is True


def test_status_watch_without_a_tty_prints_a_block_per_interval(daemon: DaemonProcess) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "status", "--watch", "--interval",
                             "0.5", "--config", str(daemon.config_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CLI_ENV,
                            preexec_fn=as_at_a_terminal)
    assert proc.stdout is not None
    try:
        # Read while it runs: each block must reach the pipe when drawn, not at exit (nor
        # when 8 KiB of blocks have filled the buffer: ten blocks at most are far below).
        shown = read_until(proc.stdout.fileno(), lambda t: "\n\nsubwatch " in t, timeout=5)
        assert "\n\nsubwatch " in shown, shown  # a second block, while still running
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    out = shown + rest.decode()
    assert CLEAR_SCREEN not in out  # no escape codes for a pipe or a log
    blocks = out.strip("\n").split("\n\n")
    assert len(blocks) >= 2, out
    assert all(b.startswith("subwatch ") and "\nwatcher: " in b for b in blocks), out


def read_until(fd: int, done: Any, timeout: float) -> str:
    """What a terminal shows, read from the pty's master side until `done(text)` or timeout."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not done(seen.decode(errors="replace")) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # EIO: the child closed its side
                break
    return seen.decode(errors="replace")


def test_status_watch_on_a_tty_redraws_in_place_until_ctrl_c(daemon: DaemonProcess) -> None:
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "status", "--watch",
                                 "--interval", "0.3", "--config", str(daemon.config_path)],
                                cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=CLI_ENV,
                                    preexec_fn=as_at_a_terminal)
        try:
            shown = read_until(master, lambda t: t.count(CLEAR_SCREEN) >= 2, timeout=15)
            assert shown.count(CLEAR_SCREEN) >= 2, shown
            assert shown.split(CLEAR_SCREEN)[1].count("subwatch ") == 1  # one view a redraw
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Traceback" not in read_until(master, lambda t: False, timeout=0.3)
    finally:
        os.close(slave)
        os.close(master)
