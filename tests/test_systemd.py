"""Running under systemd: the notify protocol on a real datagram socket, reload, the unit file."""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli import EXIT_JOURNAL_CORRUPT
from daemon.notify import Notifier
from testkit.daemon import ROOT, write_toml
from testkit.speech import long_speech_wav


class NotifySocket:
    """What systemd does: a datagram socket that collects the daemon's messages."""

    def __init__(self, path: str) -> None:
        self.address = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + path[1:] if path.startswith("@") else path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def having(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def test_notifier_speaks_to_abstract_sockets_and_is_silent_without_one() -> None:
    sink = NotifySocket(f"@subwatch-test-{os.getpid()}")
    try:
        Notifier({"NOTIFY_SOCKET": sink.address, "WATCHDOG_USEC": "4000000"}).ready("hi")
        deadline = time.monotonic() + 5
        while not sink.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.messages[0][1]["READY"] == "1" and sink.messages[0][1]["STATUS"] == "hi"
    finally:
        sink.close()
    quiet = Notifier({})
    assert not quiet.enabled and quiet.watchdog_seconds is None
    quiet.ready("nobody listens")  # no error, nothing sent
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"})
    assert other.watchdog_seconds is None  # the watchdog is meant for another process


def test_ready_watchdog_status_stopping(daemon_factory, tmp_path: Path) -> None:
    sink = NotifySocket(str(tmp_path / "notify.sock"))
    d = daemon_factory()
    os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"] = sink.address, "2000000"
    try:
        d.start()
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    try:
        wav = long_speech_wav(tmp_path / "long.wav", 8)
        d.wait_for(lambda: sink.having("READY"), 10, "READY=1")
        shutil.copy(wav, tmp_path / "inbox" / "long.wav")
        d.wait_for(lambda: d.status()["queue"]["done"] == 1, what="job done")
        time.sleep(1.5)
        d.signal(signal.SIGTERM)
        assert d.wait_exit(30) == 0
        time.sleep(0.3)
    finally:
        sink.close()
    ready_at = sink.having("READY")[0][0]
    pings = [t for t, _ in sink.having("WATCHDOG")]
    assert len(pings) >= 3 and pings[0] >= ready_at
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) <= 1.5, gaps  # WATCHDOG_USEC 2 s: a ping every second
    statuses = [m["STATUS"] for _, m in sink.having("STATUS")]
    assert any("1 running" in s and "'long.wav'" in s for s in statuses), statuses
    assert any("1 done" in s for s in statuses)
    assert sink.having("STOPPING")


def test_sighup_reloads_level_and_settle(daemon_factory, tmp_path: Path) -> None:
    sink = NotifySocket(str(tmp_path / "notify.sock"))
    d = daemon_factory(watch={"settle_seconds": 0.5})
    os.environ["NOTIFY_SOCKET"] = sink.address
    try:
        d.start()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        assert d.status()["settings"]["settle_seconds"] == 0.5
        assert d.status()["settings"]["log_level"] == "INFO"
        write_toml(d.config_path, {"watch": {"settle_seconds": 2.5, "poll_interval": 1.0},
                                   "http": {"port": d.port}, "logging": {"level": "DEBUG"},
                                   "jobs": {"workers": 2}})
        d.signal(signal.SIGHUP)
        d.wait_for(lambda: d.status()["settings"]["settle_seconds"] == 2.5, 10, "reload")
        settings = d.status()["settings"]
        assert settings["log_level"] == "DEBUG" and settings["workers"] == 1
        log = d.log.read_text()
        assert "needs a restart: jobs.workers" in log
        assert sink.having("RELOADING") and len(sink.having("READY")) >= 2
        d.signal(signal.SIGTERM)
        assert d.wait_exit(30) == 0
    finally:
        sink.close()


def verify_tool() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        raise AssertionError("systemd-analyze missing: make test installs Debian's systemd")
    return tool


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "subwatch.service").read_text()
    for directive in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "Restart=on-failure",
                      "TimeoutStopSec=", "KillMode=mixed", "ExecReload=", "StateDirectory=",
                      "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=",
                      "ProtectHome=", "PrivateTmp=yes", "ProtectKernelTunables=",
                      "ProtectControlGroups=", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                      "LockPersonality=yes", "MemoryMax=", "RequiresMountsFor=", "User=",
                      "StateDirectoryMode=0750", "DevicePolicy=closed", "IPAddressDeny=any",
                      "IPAddressAllow=localhost"):
        assert directive in unit, directive
    stop = int(re.search(r"TimeoutStopSec=(\d+)", unit).group(1))
    assert stop > 20  # longer than the default jobs.grace_seconds
    # a corrupt journal is not restarted in a loop: the daemon's exit code for it
    assert f"RestartPreventExitStatus={EXIT_JOURNAL_CORRUPT}\n" in unit
    # verify the unit as installed here: ExecStart must name an executable that exists
    local = tmp_path / "subwatch.service"
    local.write_text(unit.replace("/opt/subwatch/.venv/bin/subwatch",
                                  str(ROOT / ".venv" / "bin" / "subwatch")))
    out = subprocess.run([verify_tool(), "verify", str(local)], capture_output=True, text=True,
                         timeout=120)
    problems = [line for line in (out.stdout + out.stderr).splitlines() if "subwatch" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr
    security = subprocess.run([verify_tool(), "security", "--offline=yes", str(local)],
                              capture_output=True, text=True, timeout=120)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert exposure and float(exposure.group(1)) < 4.0, security.stdout[-500:]


@pytest.mark.timeout(900)
def test_install_service_stages_under_destdir(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    out = subprocess.run(["make", "-s", "install-service", f"DESTDIR={stage}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    unit = (stage / "etc/systemd/system/subwatch.service").read_text()
    assert "ExecStart=/opt/subwatch/.venv/bin/subwatch run --config /etc/subwatch/config.toml" \
        in unit
    config = (stage / "etc/subwatch/config.toml").read_text()
    assert 'state_dir = "/var/lib/subwatch"' in config
    script = (stage / "opt/subwatch/.venv/bin/subwatch").read_text()
    assert script.startswith("#!/opt/subwatch/.venv/bin/python") and str(stage) not in script
    version = subprocess.run([str(stage / "opt/subwatch/.venv/bin/python"), "-m", "daemon",
                              "--version"], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
    assert version.returncode == 0 and "subwatch" in version.stdout
    modes = {rel: stat.S_IMODE((stage / rel).stat().st_mode) for rel in STAGED_MODES}
    assert modes == STAGED_MODES  # staged: the modes, no owners (the package makes those)


# What install-service leaves: the token and the journal are the service group's only.
STAGED_MODES = {"etc/subwatch": 0o750, "etc/subwatch/config.toml": 0o640,
                "var/lib/subwatch": 0o750, "srv/subwatch": 0o750, "srv/subwatch/inbox": 0o750,
                "srv/subwatch/outbox": 0o750, "etc/systemd/system/subwatch.service": 0o644}


def test_unit_with_the_example_drop_ins_passes_verify(tmp_path: Path) -> None:
    """gpu.conf.example and network.conf.example as drop-ins: systemd reads every line."""
    unit = (ROOT / "systemd" / "subwatch.service").read_text()
    (tmp_path / "subwatch.service").write_text(unit.replace(
        "/opt/subwatch/.venv/bin/subwatch", str(ROOT / ".venv" / "bin" / "subwatch")))
    drop_ins = tmp_path / "subwatch.service.d"
    drop_ins.mkdir()
    for name in ("gpu", "network", "nas-mounts"):
        shutil.copy(ROOT / "systemd" / f"{name}.conf.example", drop_ins / f"{name}.conf")
    assert "DeviceAllow=char-nvidia* rw\n" in (drop_ins / "gpu.conf").read_text()
    out = subprocess.run([verify_tool(), "verify", "subwatch.service"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path,
                         env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{tmp_path}:"))
    problems = [line for line in (out.stdout + out.stderr).splitlines() if "subwatch" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


@pytest.fixture
def service_user() -> Iterator[str]:
    """A name for the service account that does not exist yet; removed afterwards."""
    name = f"swtest{secrets.token_hex(4)}"
    yield name
    subprocess.run(["userdel", name], capture_output=True, timeout=60)
    subprocess.run(["groupdel", name], capture_output=True, timeout=60)


def test_install_service_files_locks_down_the_token_and_the_journal(
        tmp_path: Path, service_user: str) -> None:
    """A real install (no DESTDIR; these tests run as root), moved under tmp_path: it creates
    the service account, keeps an existing config with a token but makes it 0640 for the
    service group (it was world-readable), and gives the state and data folders to it, 0750."""
    root = tmp_path / "root"
    etc = root / "etc" / "subwatch"
    etc.mkdir(parents=True)
    (etc / "config.toml").write_text('[http]\ntoken = "secret"\n')
    (etc / "config.toml").chmod(0o644)
    dirs = {"PREFIX": "opt/subwatch", "SYSCONFDIR": "etc", "UNITDIR": "etc/systemd/system",
            "DATADIR": "srv/subwatch", "STATEDIR": "var/lib/subwatch"}
    out = subprocess.run(["make", "-s", "install-service-files", f"SERVICE_USER={service_user}",
                          *(f"{k}={root / v}" for k, v in dirs.items())],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    uid, gid = pwd.getpwnam(service_user).pw_uid, grp.getgrnam(service_user).gr_gid
    assert pwd.getpwnam(service_user).pw_shell == "/usr/sbin/nologin"
    assert (etc / "config.toml").read_text() == '[http]\ntoken = "secret"\n'  # kept
    owners = {rel: ((root / rel).stat().st_uid, (root / rel).stat().st_gid,
                    stat.S_IMODE((root / rel).stat().st_mode)) for rel in STAGED_MODES}
    assert owners == {
        "etc/subwatch": (0, gid, 0o750), "etc/subwatch/config.toml": (0, gid, 0o640),
        "var/lib/subwatch": (uid, gid, 0o750), "srv/subwatch": (uid, gid, 0o750),
        "srv/subwatch/inbox": (uid, gid, 0o750), "srv/subwatch/outbox": (uid, gid, 0o750),
        "etc/systemd/system/subwatch.service": (0, 0, 0o644)}
    unit = (root / "etc/systemd/system/subwatch.service").read_text()
    assert f"User={service_user}\nGroup={service_user}\n" in unit
    assert f"--config {etc / 'config.toml'}" in unit
    assert (root / "opt/subwatch/systemd/gpu.conf.example").exists()
