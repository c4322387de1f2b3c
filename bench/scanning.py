"""Scanning at library scale, measured in one run (not a test).

A library of 100 000 tiny files in about 1 100 folders (5 % media, the rest .nfo, .jpg and .srt),
already known to the journal (a library the daemon has processed: every media file `skipped`),
watched by a real daemon process (`python -m daemon run`, models not preloaded, nothing to
transcribe) with the default `settle_seconds` (5) and `poll_interval` (5):

1. first scan: spawn → ready (/healthz ok, which waits for the first scan), wall seconds and the
   process's CPU seconds to get there;
2. idle CPU: the process's CPU time (utime + stime from /proc) over wall time, in % of one core,
   in events and in poll mode, median of `--windows` windows of `--idle` seconds; the same
   daemon on an empty inbox (events) as a baseline for what is not discovery;
3. admission: a new media file written in one go at a random moment; time from its close to
   its job's `created_at` (the admission; it is skipped at once: its subtitle exists), median
   of `--samples`, against the bound settle_seconds + poll_interval + 1 s.

CPU time of the process is what counts: wall time is noted, but the machine may be shared.
`--code DIR` runs another source tree's daemon (e.g. `git worktree add /tmp/before HEAD`); given
twice, both run on the same library in one run, one after the other, and the ratios are printed.

    .venv/bin/python bench/scanning.py [--files 100000] [--idle 40] [--windows 3] [--samples 5]
                                       [--code DIR [--code DIR]] [--modes events,poll] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This script's folder holds other benchmarks (bench/queue.py): off the path, so that no stdlib
# module of the same name is shadowed, here or in the --populate child.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
SETTLE, POLL = 5.0, 5.0
TICKS = os.sysconf("SC_CLK_TCK")
PER_FOLDER, MEDIA_PER_FOLDER = 100, 5  # 5 % media


# ---------------------------------------------------------------------------- the library

def build_library(inbox: Path, files: int) -> list[str]:
    """`files` tiny files, PER_FOLDER to a season folder, ten seasons to a show; returns the
    media files' inbox-relative paths."""
    media = []
    for n in range(files // PER_FOLDER):
        rel_dir = f"Show {n // 10:03d}/Season {n % 10:02d}"
        folder = inbox / rel_dir
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(PER_FOLDER):
            ext = ("mkv", "mp4")[k % 2] if k < MEDIA_PER_FOLDER else ("nfo", "jpg", "srt")[k % 3]
            (folder / f"E{k:03d}.{ext}").write_bytes(b"x")
            if k < MEDIA_PER_FOLDER:
                media.append(f"{rel_dir}/E{k:03d}.{ext}")
    return media


def populate(config_path: str, plan_path: str) -> None:
    """In a child on the source tree under test: every media file `skipped` in its journal, and
    a subtitle at the target of each file the latency samples will add (so they are admitted
    as skipped, and nothing is transcribed)."""
    from daemon.config import load_config
    from daemon.journal import Identity, Journal
    from daemon.writer import outbox_for

    plan = json.loads(Path(plan_path).read_text())
    config = load_config(config_path)
    config.paths.state_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(config.paths.state_dir / "journal.sqlite3", config.jobs.max_attempts)
    for rel in plan["known"]:
        st = os.stat(config.paths.inbox / rel)
        journal.admit(Identity(rel, st.st_size, st.st_mtime_ns, st.st_ino), state="skipped",
                      message="bench: done before")
    journal.close()
    outbox = outbox_for(config)
    for rel in plan["later"]:
        target = outbox.target(rel, "en", "srt")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("1\n00:00:00,000 --> 00:00:01,000\nalready here\n")


# ---------------------------------------------------------------------------- a daemon

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_toml(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Daemon:
    """`python -m daemon run` from the source tree `code`, on `root`'s inbox."""

    def __init__(self, code: Path, root: Path, inbox: Path, watch: dict[str, Any]) -> None:
        self.code, self.root, self.port = code, root, free_port()
        self.config = write_toml(root / "config.toml", {
            "paths": {"inbox": str(inbox), "outbox": str(root / "outbox"),
                      "state_dir": str(root / "state")},
            "watch": {"settle_seconds": SETTLE, "poll_interval": POLL, **watch},
            "http": {"port": self.port}, "models": {"preload": []}})
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> tuple[float, float]:
        """Spawn and wait for ready: (wall seconds, CPU seconds) to get there."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(self.code))
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(self.config)],
                cwd=self.code, stdout=log, stderr=subprocess.STDOUT, env=env)
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() - started > 600:
                raise RuntimeError("daemon did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.05)
        return time.monotonic() - started, self.cpu()

    def _ready(self) -> bool:
        try:
            return bool(self.get("/healthz")["status"] == "ok")
        except (OSError, ValueError):
            return False

    def get(self, route: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{route}", timeout=10) as r:
            return json.load(r)

    def cpu(self) -> float:
        """CPU seconds the process has used (user + system)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def idle_cpu(daemon: Daemon, seconds: float, windows: int) -> list[float]:
    """% of one core over each window."""
    shares = []
    for _ in range(windows):
        cpu, wall = daemon.cpu(), time.monotonic()
        time.sleep(seconds)
        shares.append(100 * (daemon.cpu() - cpu) / (time.monotonic() - wall))
    return shares


def admission_latency(daemon: Daemon, inbox: Path, names: list[str]) -> list[float]:
    """Seconds from each new file's close to its admission (the job's created_at)."""
    rng = random.Random(12)
    latencies = []
    for rel in names:
        time.sleep(rng.uniform(0, POLL))  # a random moment in the poll cycle
        with open(inbox / rel, "wb") as fh:
            fh.write(os.urandom(4096))
        written = time.time()
        job = wait_for_job(daemon, rel, written + 60)
        latencies.append(float(job.get("created_at") or time.time()) - written)
    return latencies


def wait_for_job(daemon: Daemon, rel: str, deadline: float) -> dict[str, Any]:
    while time.time() < deadline:
        for job in daemon.get("/jobs?limit=20")["jobs"]:
            if job["rel_path"] == rel:
                return dict(job)
        time.sleep(0.1)
    raise RuntimeError(f"{rel} not admitted within 60 s:\n" + daemon.log.read_text()[-3000:])


# ---------------------------------------------------------------------------- the runs

def run_mode(code: Path, state: Path, work: Path, inbox: Path, mode: str, later: list[str],
             args: argparse.Namespace) -> dict[str, Any]:
    """One daemon in `mode` on a copy of `state` (journal and outbox made by its code)."""
    work.mkdir(parents=True)
    shutil.copytree(state / "state", work / "state")
    shutil.copytree(state / "outbox", work / "outbox")
    daemon = Daemon(code, work, inbox, {"mode": mode})
    try:
        ready_s, ready_cpu = daemon.start()
        watcher = daemon.get("/status")["watcher"]
        time.sleep(args.warmup)
        idle = idle_cpu(daemon, args.idle, args.windows)
        latency = admission_latency(daemon, inbox, later) if later else []
        status = daemon.get("/status")["watcher"]
    finally:
        daemon.stop()
    return {"mode": watcher["mode"], "ready_s": ready_s, "ready_cpu_s": ready_cpu,
            "first_scan_s": watcher.get("last_scan_seconds"), "idle_pct": idle,
            "latency_s": latency, "scans": status.get("scans"),
            "folder_scans": status.get("folder_scans")}


def baseline(code: Path, root: Path, args: argparse.Namespace) -> list[float]:
    """The same daemon on an empty inbox: what idling costs without discovery."""
    (root / "empty-inbox").mkdir(parents=True)
    daemon = Daemon(code, root, root / "empty-inbox", {"mode": "events"})
    try:
        daemon.start()
        time.sleep(args.warmup)
        return idle_cpu(daemon, args.idle, 1)
    finally:
        daemon.stop()


def populate_for(code: Path, root: Path, inbox: Path, plan: Path) -> None:
    """A journal and an outbox as `code` writes them, in `root`."""
    root.mkdir(parents=True)
    seed = Daemon(code, root, inbox, {})  # only for its config file
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--populate",
                    str(seed.config), str(plan)], cwd=code, check=True,
                   env=dict(os.environ, PYTHONPATH=str(code)))


def latency_names(codes: list[Path], samples: int) -> dict[tuple[int, str], list[str]]:
    """The files each run adds, distinct per source tree and mode."""
    return {(n, mode): [f"Show 000/Season 00/new-{n}-{mode}-{k}.mkv" for k in range(samples)]
            for n in range(len(codes)) for mode in ("events", "poll")}


def measure(codes: list[Path], root: Path, args: argparse.Namespace) -> None:
    inbox = root / "inbox"
    started = time.monotonic()
    media = build_library(inbox, args.files)
    print(f"library: {args.files} files, {len(media)} media, {args.files // PER_FOLDER} season "
          f"folders, built in {time.monotonic() - started:.0f} s", flush=True)
    later = latency_names(codes, args.samples)
    plan = root / "plan.json"  # every run's new files have a subtitle: admitted as skipped
    plan.write_text(json.dumps({"known": media, "later": sorted(sum(later.values(), []))}))
    results = []
    for n, code in enumerate(codes):
        populate_for(code, root / f"code{n}", inbox, plan)
        base = baseline(code, root / f"code{n}" / "empty", args)
        runs = {mode: run_mode(code, root / f"code{n}", root / f"code{n}" / mode, inbox, mode,
                               later[(n, mode)], args) for mode in args.modes.split(",")}
        results.append((code, base, runs))
        report(code, runs, base)
    if len(results) == 2:
        ratios(results)


def machine() -> str:
    load = os.getloadavg()
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def report(code: Path, runs: dict[str, dict[str, Any]], base: list[float]) -> None:
    print(f"\ncode: {code}   machine: {machine()}")
    print(f"baseline (empty inbox, events): idle CPU {statistics.median(base):.2f} % of a core")
    print(f"{'mode':7} {'ready s':>8} {'ready CPU s':>11} {'walk s':>7} {'idle % (median)':>16} "
          f"{'admission s (median, max)':>26} {'bound s':>8}")
    for mode, r in runs.items():
        lat = r["latency_s"]
        lat_text = f"{statistics.median(lat):.2f}, {max(lat):.2f}" if lat else "-"
        bound = SETTLE + POLL + 1.0  # the acceptance bound, for both modes
        walk = "-" if r["first_scan_s"] is None else f"{r['first_scan_s']:.2f}"
        print(f"{mode:7} {r['ready_s']:8.2f} {r['ready_cpu_s']:11.2f} {walk:>7} "
              f"{statistics.median(r['idle_pct']):16.2f} {lat_text:>26} {bound:8.1f}")
        print(f"        idle windows {[round(x, 2) for x in r['idle_pct']]}, latencies "
              f"{[round(x, 2) for x in lat]}, walks {r['scans']}, "
              f"folder scans {r['folder_scans']}", flush=True)


def ratios(results: list[tuple[Path, list[float], dict[str, dict[str, Any]]]]) -> None:
    (before, _, old), (after, _, new) = results
    print(f"\nsecond / first ({after.name} / {before.name}):")
    for mode in new:
        idle = (statistics.median(new[mode]["idle_pct"])
                / max(statistics.median(old[mode]["idle_pct"]), 1e-9))
        ready = new[mode]["ready_cpu_s"] / old[mode]["ready_cpu_s"]
        lat = (statistics.median(new[mode]["latency_s"])
               / statistics.median(old[mode]["latency_s"])) if new[mode]["latency_s"] else 0.0
        print(f"  {mode:7} idle CPU x{idle:.3f}   CPU to ready x{ready:.2f}   "
              f"admission (median) x{lat:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--idle", type=float, default=40.0, help="seconds per idle window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--code", type=Path, action="append",
                        help="a source tree to run (repeat for a side-by-side table)")
    parser.add_argument("--modes", default="events,poll", help="which modes to measure")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--populate", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate:
        return populate(*args.populate)
    codes = [c.resolve() for c in (args.code or [ROOT])]
    root = Path(tempfile.mkdtemp(prefix="subwatch-scanning-"))
    try:
        measure(codes, root, args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
