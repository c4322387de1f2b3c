"""The job queue's cost, Redis Streams against the SQLite journal, and what extra worker
processes on one Redis buy on this machine. Not a test: it prints figures and ratios.

1. Per-job queue overhead (default): the calls one job makes through the queue seam in the
   daemon (known, admit, claim, the written note, finish, a heartbeat), on the SQLite journal
   and on a redis-server started here (localhost TCP, appendfsync always as the README
   advises, and everysec), interleaved in rounds; medians of the per-job time.
2. Throughput (`--throughput`): real daemon processes (the tiny model) on one Redis and one
   shared inbox: an intake node plus 1, 2 and 3 worker nodes, each run dropping the same
   clips; files a minute and audio seconds per wall second, and a lone SQLite daemon on the
   same clips for reference. Transcription is CPU-bound: on a machine with few cores, more
   processes share the same cores, so the figure says what the cores give, not what more
   machines would.

    .venv/bin/python bench/queue_backends.py [--jobs 300] [--rounds 3]
    .venv/bin/python bench/queue_backends.py --throughput [--files 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.cluster.link import Link  # noqa: E402
from daemon.cluster.queue import RedisQueue  # noqa: E402
from daemon.journal import Identity, Journal  # noqa: E402
from daemon.queue import JobQueue  # noqa: E402
from testkit.daemon import DaemonProcess, wait_for  # noqa: E402
from testkit.media import build_speech, write_wav  # noqa: E402
from testkit.redis_server import RedisServer  # noqa: E402
from testkit.speech import SENTENCES  # noqa: E402


def one_job(q: JobQueue, n: int) -> None:
    """What the daemon asks of the queue for one file, in order."""
    ident = Identity(f"bench/clip {n:05d}.wav", 1000 + n, 10**18 + n, n)
    q.known(ident)
    q.admit(ident)
    job = q.claim()
    assert job is not None
    q.heartbeat(job.id)
    q.record_written(job.id, {"outputs": {f"/out/clip {n:05d}.en.srt": "0" * 64},
                              "language": "en", "audio_seconds": 7.7,
                              "processing_seconds": 3.1, "cues": 3})
    q.finish(job.id, [f"/out/clip {n:05d}.en.srt"], "en", "ok", 7.7, 3.1)


def per_job_ms(q: JobQueue, jobs: int, offset: int) -> float:
    started = time.perf_counter()
    for n in range(jobs):
        one_job(q, offset + n)
    return (time.perf_counter() - started) * 1000 / jobs


def overhead(jobs: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        servers = {fsync: RedisServer(folder / f"redis-{fsync}", appendfsync=fsync).start()
                   for fsync in ("always", "everysec")}
        try:
            makers: dict[str, Callable[[int], JobQueue]] = {
                "sqlite": lambda r: Journal(folder / f"sqlite{r}" / "journal.sqlite3", 3),
                **{f"redis ({fsync})": _redis_maker(server)
                   for fsync, server in servers.items()}}
            times: dict[str, list[float]] = {name: [] for name in makers}
            for r in range(rounds):
                for name, make in makers.items():
                    q = make(r)
                    times[name].append(per_job_ms(q, jobs, r * jobs))
                    q.close()
        finally:
            for server in servers.values():
                server.kill()
    base = statistics.median(times["sqlite"])
    print(f"per-job queue overhead, {jobs} jobs x {rounds} rounds, medians "
          f"(load average {os.getloadavg()[0]:.1f}):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:18s} {median:7.3f} ms/job  ({median / base:4.2f}x sqlite)  "
              f"rounds: {', '.join(f'{v:.3f}' for v in values)}")


def _redis_maker(server: RedisServer) -> Callable[[int], JobQueue]:
    def make(r: int) -> JobQueue:
        link = Link(server.url)
        link.connect(wait=False)
        return RedisQueue(link, f"bench{r}", "bench-node", 3, 60.0)
    return make


# ---------------------------------------------------------------------------- throughput

def throughput(files: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = write_wav(folder / "clip.wav", build_speech(SENTENCES[:2], gap=1.0).samples)
        audio = build_speech(SENTENCES[:2], gap=1.0).duration * files
        rows = [("sqlite, 1 daemon", _run(folder / "sqlite", clip, files, None, 0))]
        server = RedisServer(folder / "redis").start()
        try:
            for workers in (1, 2, 3):
                rows.append((f"redis, {workers} worker process(es)",
                             _run(folder / f"redis{workers}", clip, files, server, workers)))
        finally:
            server.kill()
    print(f"throughput, {files} clips of {audio / files:.1f} s, tiny.en, {os.cpu_count()} "
          f"cores (load average {os.getloadavg()[0]:.1f}):")
    base = rows[1][1]
    for name, seconds in rows:
        print(f"  {name:32s} {seconds:6.1f} s  {files * 60 / seconds:5.1f} files/min  "
              f"{audio / seconds:5.2f} audio s/s  ({base / seconds:4.2f}x one redis worker)")


def _run(root: Path, clip: Path, files: int, server: RedisServer | None,
         workers: int) -> float:
    """Seconds from the drop to the last file done (model loads excluded: nodes are ready)."""
    inbox, outbox = root / "inbox", root / "outbox"
    inbox.mkdir(parents=True)
    shared = {"paths": {"inbox": str(inbox), "outbox": str(outbox)}}
    nodes = []
    if server is None:
        nodes.append(DaemonProcess(_mkdir(root / "node"), **shared))
    else:
        cluster = {"backend": "redis", "url": server.url, "name": root.name}
        nodes.append(DaemonProcess(_mkdir(root / "intake"), **shared,
                                   cluster={**cluster, "role": "intake"}))
        nodes += [DaemonProcess(_mkdir(root / f"worker{n}"), **shared,
                                cluster={**cluster, "role": "worker"}) for n in range(workers)]
    try:
        for d in nodes:
            d.start(wait=False)
        for d in nodes:
            d.wait_ready(180)
        started = time.perf_counter()
        for n in range(files):
            shutil.copy(clip, inbox / f"clip{n:03d}.wav")
        wait_for(lambda: len(list(outbox.glob("*.srt"))) == files, 1800, "all clips done")
        return time.perf_counter() - started
    finally:
        for d in nodes:
            d.kill()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--files", type=int, default=12)
    args = parser.parse_args()
    if args.throughput:
        throughput(args.files)
    else:
        overhead(args.jobs, args.rounds)


if __name__ == "__main__":
    main()
