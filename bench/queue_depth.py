"""A deep queue: 10 000 queued identities, in the journal and in a running daemon (not a test).

(Named queue_depth.py, not queue.py: a script's folder comes first on the import path, and a
bench/queue.py would stand in for the standard library's `queue` in every script here.)

Two parts, one run:

- journal: the Journal alone on a fresh file. `admit` for every identity, then `claim` and
  `finish` for `--claims` of them while the rest wait (each claim looks for the most urgent job
  among all that wait), `known` (what every scan asks per file), `counts` and
  `list_jobs(limit=100)`. Per operation, in µs: median and p99.
- daemon: a real daemon process (this script with --serve: the Service as `subwatch run` builds
  it, with a scripted pipeline that holds its first job forever, so what comes after stays
  queued). One file is dropped and held; the daemon's RSS is read; then `--jobs` files appear in
  the inbox (100 folders) and the watcher admits them all; RSS again (growth = after - before,
  and the peak). Then `/status` and `/jobs?limit=100` are asked `--requests` times each,
  alternately, on one keep-alive connection: latency p50, p99 and max in ms.

Acceptance (issue 12): RSS growth < 50 MB, /status p99 < 50 ms, /jobs?limit=100 p99 < 50 ms.

    .venv/bin/python bench/queue_depth.py [--jobs 10000] [--claims 1000] [--requests 300] [--json F]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.journal import Identity, Journal  # noqa: E402
from testkit.daemon import free_port, wait_for, write_toml  # noqa: E402

FOLDERS = 100
MTIME = 1_700_000_000_000_000_000


def percentiles(samples: list[float], scale: float) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"p50": round(statistics.median(ordered) * scale, 1), "p99": round(p99 * scale, 1),
            "max": round(ordered[-1] * scale, 1)}


def timed(op: Callable[[int], Any], count: int) -> list[float]:
    times = []
    for i in range(count):
        started = time.perf_counter()
        op(i)
        times.append(time.perf_counter() - started)
    return times


def identity(i: int) -> Identity:
    return Identity(f"show {i % FOLDERS:03d}/episode {i:05d}.mkv", 1_000_000 + i, MTIME + i, i)


# ---------------------------------------------------------------------------- journal alone

def journal_ops(folder: Path, jobs: int, claims: int) -> dict[str, dict[str, float]]:
    journal = Journal(folder / "journal.sqlite3", max_attempts=3)
    try:
        result = {"admit": timed(lambda i: journal.admit(identity(i)), jobs),
                  "known": timed(lambda i: journal.known(identity(i * 7 % jobs)), 1000),
                  "counts": timed(lambda i: journal.counts(), 200),
                  "list_jobs(100)": timed(lambda i: journal.list_jobs(None, 100), 200)}
        claim, finish = [], []
        for _ in range(claims):
            started = time.perf_counter()
            job = journal.claim()
            claimed = time.perf_counter()
            assert job is not None
            journal.finish(job.id, [], "en", "ok", 1.0, 1.0)
            claim.append(claimed - started)
            finish.append(time.perf_counter() - claimed)
        result.update(claim=claim, finish=finish)
    finally:
        journal.close()
    return {name: percentiles(times, 1e6) for name, times in result.items()}


# ---------------------------------------------------------------------------- a daemon

def serve(config_path: str) -> None:
    """The daemon as `subwatch run` builds it, but for a pipeline that never ends a job."""
    import asyncio

    from daemon.config import load_config
    from daemon.logs import setup_logging
    from daemon.service import Service
    from testkit.scripted import ScriptedPipeline

    config = load_config(config_path)
    setup_logging(config.logging)
    asyncio.run(Service(config, pipeline=ScriptedPipeline(hold_after=1)).run())


def rss_kib(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


class Client:
    """One keep-alive HTTP connection to the daemon."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, route: str) -> Any:
        self.conn.request("GET", route)
        resp = self.conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (route, resp.status, body[:200])
        return json.loads(body)

    def close(self) -> None:
        self.conn.close()


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        for n in range(FOLDERS):  # the library's folders exist before the daemon starts
            (root / "inbox" / f"show {n:03d}").mkdir(parents=True)
        # A full rescan every minute (the default is slower): inotify may miss a few of 10 000
        # files written at once, and this benchmark is about the queue, not discovery.
        config = write_toml(root / "config.toml", {
            "watch": {"settle_seconds": 0.5, "poll_interval": 1.0, "rescan_seconds": 60.0},
            "http": {"port": self.port}})
        self.log = open(root / "daemon.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(config)],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 60, "the daemon to start", alive=self._alive)
        self.client = Client(self.port)

    def _alive(self) -> None:
        assert self.proc.poll() is None, (self.root / "daemon.log").read_text()[-3000:]

    def _ready(self) -> bool:
        try:
            return bool(Client(self.port).get("/healthz")["status"] == "ok")
        except (OSError, AssertionError):
            return False

    def status(self) -> dict[str, Any]:
        return dict(self.client.get("/status"))

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def fill(inbox: Path, jobs: int) -> None:
    for i in range(jobs):
        ident = identity(i)
        (inbox / ident.rel_path).write_bytes(b"\0" * 1024)


def daemon_part(folder: Path, jobs: int, requests: int) -> dict[str, Any]:
    daemon = Daemon(folder / "daemon")
    try:
        (daemon.root / "inbox" / "held.wav").write_bytes(b"\0" * 1024)
        wait_for(lambda: daemon.status()["running"], 60, "the held job", daemon._alive)
        for _ in range(50):  # warm the routes (first-use allocations) before the baseline
            daemon.client.get("/status")
            daemon.client.get("/jobs?limit=100")
        time.sleep(2)
        before = rss_kib(daemon.proc.pid)
        started = time.monotonic()
        fill(daemon.root / "inbox", jobs)
        wait_for(lambda: daemon.status()["queue"]["queued"] >= jobs, 900,
                 f"{jobs} jobs queued", daemon._alive)
        admitted = time.monotonic() - started
        time.sleep(2)
        after = rss_kib(daemon.proc.pid)
        latency = {"/status": [], "/jobs?limit=100": []}
        for _ in range(requests):
            for route, times in latency.items():
                t0 = time.perf_counter()
                daemon.client.get(route)
                times.append(time.perf_counter() - t0)
        end = rss_kib(daemon.proc.pid)
        status = daemon.status()
    finally:
        daemon.stop()
    return {"queue": status["queue"], "admission_seconds": round(admitted, 1),
            "event_history_mib": round(status["events"]["history_bytes"] / 2**20, 1),
            "rss_before_mib": round(before["VmRSS"] / 1024, 1),
            "rss_queued_mib": round(after["VmRSS"] / 1024, 1),
            "rss_after_requests_mib": round(end["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(end["VmHWM"] / 1024, 1),
            "rss_growth_mib": round((max(after["VmRSS"], end["VmRSS"]) - before["VmRSS"])
                                    / 1024, 1),
            "latency_ms": {route: percentiles(t, 1e3) for route, t in latency.items()}}


# ---------------------------------------------------------------------------- report

def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average {load}"


def report(args: argparse.Namespace, ops: dict[str, Any], served: dict[str, Any],
           before: str) -> None:
    print(f"machine: {before} (before); {machine()} (after)")
    print(f"\njournal alone, {args.jobs} identities ({args.claims} claims):")
    print(f"{'operation':<18}{'p50 µs':>10}{'p99 µs':>10}{'max µs':>10}")
    for name, p in ops.items():
        print(f"{name:<18}{p['p50']:>10.0f}{p['p99']:>10.0f}{p['max']:>10.0f}")
    print(f"\ndaemon process, {args.jobs} queued (admitted by the watcher in "
          f"{served['admission_seconds']} s): queue {served['queue']}")
    print(f"RSS {served['rss_before_mib']} MiB with one job held → {served['rss_queued_mib']}"
          f" MiB with {args.jobs} queued → {served['rss_after_requests_mib']} MiB after the"
          f" requests (peak {served['peak_rss_mib']}); growth {served['rss_growth_mib']} MiB"
          f" ({'meets' if served['rss_growth_mib'] * 1.048576 < 50 else 'MISSES'} < 50 MB);"
          f" of it, the event history (bounded by http.history_bytes):"
          f" {served['event_history_mib']} MiB")
    print(f"\n{'route':<18}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}   ({args.requests} each)")
    for route, p in served["latency_ms"].items():
        verdict = "meets" if p["p99"] < 50 else "MISSES"
        print(f"{route:<18}{p['p50']:>10.1f}{p['p99']:>10.1f}{p['max']:>10.1f}   "
              f"{verdict} p99 < 50 ms")
    if args.json:
        args.json.write_text(json.dumps({"machine": before, "journal_us": ops,
                                         "daemon": served}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    before = machine()
    with tempfile.TemporaryDirectory(prefix="subwatch-queue-") as tmp:
        ops = journal_ops(Path(tmp), args.jobs, min(args.claims, args.jobs))
        served = daemon_part(Path(tmp), args.jobs, args.requests)
    report(args, ops, served, before)


if __name__ == "__main__":
    main()
