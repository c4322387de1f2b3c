"""Soak under crashes (`make test-soak`; not part of `make test`): 200 short files dropped in
batches into a real daemon that is killed with SIGKILL every 20-60 s and started again.

At the end the suite's oracle holds (each input done once, no temp file, healthy), and the
daemon's resident memory and open descriptors, read from /proc just before each kill and at the
end, stay flat across restarts: nothing that piles up in the journal or the outbox makes each
new process bigger. The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.journal import FINAL_STATES
from testkit import oracle
from testkit.daemon import DaemonProcess
from testkit.memory import rss_bytes

FILES = int(os.environ.get("SOAK_FILES", "200"))
SEED = int(os.environ.get("SOAK_SEED", "11"))
KILL_EVERY = (20.0, 60.0)  # seconds between kills, drawn at random
BATCH, BATCH_EVERY = 10, 4.0  # files dropped at a time, seconds between drops


def proc_figures(pid: int) -> dict[str, int]:
    """Resident memory (KiB) and open descriptors of a process."""
    return {"rss_kib": rss_bytes(pid) // 1024, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def finished_count(root: Path) -> int:
    """Inputs whose last job is in a final state (read beside the running daemon)."""
    last: dict[str, str] = {}
    for row in oracle.journal_rows(root / "state"):
        last[row["rel_path"]] = row["state"]
    return sum(state in FINAL_STATES for state in last.values())


def sample(d: DaemonProcess, restart: int, root: Path) -> dict[str, Any]:
    assert d.proc is not None
    return {"restart": restart, "finished": finished_count(root), **proc_figures(d.proc.pid)}


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_two_hundred_jobs_under_random_kill_9_are_done_once_with_flat_memory(
        daemon_factory, tmp_path: Path, short_wav: Path) -> None:
    rng = random.Random(SEED)
    names = [f"soak{n % 5}/clip {n:03d}.wav" for n in range(FILES)]
    for n in range(5):
        (tmp_path / "inbox" / f"soak{n}").mkdir(parents=True)
    d = daemon_factory().start()
    samples: list[dict[str, Any]] = []
    dropped, restarts = 0, 0
    next_drop, next_kill = time.monotonic(), time.monotonic() + rng.uniform(*KILL_EVERY)
    deadline = time.monotonic() + 3000
    while dropped < FILES or finished_count(tmp_path) < FILES:
        assert time.monotonic() < deadline, f"soak unfinished: {samples}"
        now = time.monotonic()
        if dropped < FILES and now >= next_drop:
            for name in names[dropped:dropped + BATCH]:
                shutil.copy(short_wav, tmp_path / "inbox" / name)
            dropped, next_drop = min(FILES, dropped + BATCH), now + BATCH_EVERY
        if now >= next_kill:
            samples.append(sample(d, restarts, tmp_path))
            d.kill()  # SIGKILL, wherever it is
            restarts += 1
            d = daemon_factory().start()
            next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
        time.sleep(0.5)
    final = sample(d, restarts, tmp_path)
    samples.append(final)
    print("\nsoak figures:", json.dumps({"files": FILES, "seed": SEED, "kills": restarts,
                                          "samples": samples}, indent=1))
    oracle.check(tmp_path, names, d.get("/healthz"), speech=names)
    assert d.status()["queue"]["done"] == FILES
    assert restarts >= 3, "too few kills to say anything about restarts"
    first = samples[0]
    assert max(s["rss_kib"] for s in samples) < 1.5 * first["rss_kib"], samples
    assert max(s["fds"] for s in samples) <= first["fds"] + 16, samples
