"""Model management figures, measured in one run (not a test).

1. memory: process RSS before loading Whisper, after loading it, and after the cache evicts it
   (gc + malloc_trim), so an eviction is seen to give memory back;
2. start-up: a real daemon process from spawn to healthy, with and without preload, and the time
   from dropping a file to its subtitle being done (first-job latency) in both cases.

    .venv/bin/python bench/models.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.daemon import DaemonProcess, make_config  # noqa: E402
from testkit.media import build_speech, write_wav  # noqa: E402
from testkit.speech import SENTENCES  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory_figures() -> dict[str, float]:
    from daemon.models import ModelCache, load_whisper, model_bytes, whisper_spec

    config = make_config(Path(tempfile.mkdtemp()))
    spec = whisper_spec(config.whisper, config.models, 1)
    cache = ModelCache(1)
    before = rss_mib()
    cache.get(spec.key, lambda: load_whisper(spec), size=model_bytes(spec.path))
    loaded = rss_mib()
    cache.get(("other", "blob"), lambda: bytearray(1))  # cache_size 1: Whisper is evicted
    after = rss_mib()
    return {"rss_before_load_mib": round(before, 1), "rss_after_load_mib": round(loaded, 1),
            "rss_after_eviction_mib": round(after, 1),
            "returned_mib": round(loaded - after, 1),
            "returned_share": round((loaded - after) / max(loaded - before, 1e-9), 2)}


def start_and_first_job(preload: list[str], wav: Path) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(prefix="subwatch-bench-"))
    d = DaemonProcess(root, models={"preload": preload}, watch={"settle_seconds": 0.0})
    started = time.monotonic()
    d.start()
    ready = time.monotonic() - started
    dropped = time.monotonic()
    shutil.copy(wav, root / "inbox" / "first.wav")
    d.wait_for(lambda: d.status()["queue"]["done"] == 1, what="first job")
    first_job = time.monotonic() - dropped
    d.kill()
    shutil.rmtree(root, ignore_errors=True)
    return ready, first_job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    wav = write_wav(Path(tempfile.mkdtemp()) / "first.wav", build_speech(SENTENCES[:2]).samples)
    runs: dict[str, list[tuple[float, float]]] = {"preload": [], "no_preload": []}
    for _ in range(args.rounds):
        runs["preload"].append(start_and_first_job(["vad", "whisper"], wav))
        runs["no_preload"].append(start_and_first_job([], wav))
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for k, v in runs.items()}
    report = {
        "memory": memory_figures(),
        "ready_seconds_with_preload": round(med["preload"][0], 2),
        "ready_seconds_without_preload": round(med["no_preload"][0], 2),
        "first_job_seconds_with_preload": round(med["preload"][1], 2),
        "first_job_seconds_without_preload": round(med["no_preload"][1], 2),
        "first_job_extra_without_preload": round(med["no_preload"][1] - med["preload"][1], 2),
        "runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
