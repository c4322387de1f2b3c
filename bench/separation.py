"""Demucs separation cost on this machine, with a real-size htdemucs of random weights (not a test).

Random weights separate nothing, but a forward pass costs the same as with the released ones, so
the figures are the real ones: model load time, CPU seconds of separation per minute of audio,
and peak RSS for a short and a three-times-longer input. Each length runs in a process of its
own (ru_maxrss only ever grows), so the two peaks compare: with block-wise separation the longer
input adds its own samples (input and output, 16 kHz float32) and nothing more.
`--unblocked` adds a run of the long input as a single block, the memory blocks save.

    .venv/bin/python bench/separation.py [--seconds 60] [--long 180] [--block 30] [--threads N]
                                         [--unblocked]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.domain import SAMPLE_RATE  # noqa: E402
from daemon.pipeline.demucs_engine import (  # noqa: E402
    demucs_bytes,
    load_demucs,
    separate_vocals,
)
from testkit.tiny_demucs import make_tiny_demucs  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_audio(seconds: float) -> np.ndarray:
    """Tones and noise: the model's cost does not depend on what it hears."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tones = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1300 * t)
    noise = 0.05 * np.random.default_rng(0).standard_normal(len(t))
    return (tones + noise).astype(np.float32)


def child(folder: str, sig: str, seconds: float, block: float, threads: int) -> dict[str, Any]:
    """One measurement in this (fresh) process: import, load, then separate `seconds` of audio."""
    started = time.perf_counter()
    import demucs.pretrained  # noqa: F401  (torch with it; timed apart from the load)
    import torch

    if threads:
        torch.set_num_threads(threads)
    import_s = time.perf_counter() - started
    started = time.perf_counter()
    model = load_demucs(sig, folder, "cpu")
    load_s = time.perf_counter() - started
    after_load = peak_rss_mib()
    audio = bench_audio(seconds)
    started = time.perf_counter()
    vocals = separate_vocals(model, audio, block_seconds=block)
    separate_s = time.perf_counter() - started
    assert vocals.shape == audio.shape and np.isfinite(vocals).all()
    return {"seconds": seconds, "block": block, "import_s": import_s, "load_s": load_s,
            "separate_s": separate_s,
            "rss_after_load_mib": after_load, "peak_rss_mib": peak_rss_mib(),
            "threads": torch.get_num_threads()}


def measure(folder: str, sig: str, seconds: float, block: float, threads: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", folder, sig, str(seconds),
                          str(block), str(threads)], check=True, capture_output=True,
                         text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def report(made_s: float, size: int, runs: list[dict[str, Any]]) -> None:
    short, long = runs[0], runs[1]
    print(f"checkpoint: built and saved in {made_s:.1f} s; demucs_bytes {size / 2**20:.0f} MiB")
    print(f"import torch + demucs: {short['import_s']:.2f} s; "
          f"load (load_demucs, cpu): {short['load_s']:.2f} s; "
          f"RSS after load {short['rss_after_load_mib']:.0f} MiB; torch threads {short['threads']}")
    for run in runs:
        per_minute = run["separate_s"] / run["seconds"] * 60
        print(f"{run['seconds']:>6.0f} s of audio in {run['block']:g} s blocks: "
              f"{run['separate_s']:7.1f} s ({per_minute:.1f} s per audio minute, "
              f"{run['seconds'] / run['separate_s']:.2f}x real time); "
              f"peak RSS {run['peak_rss_mib']:.0f} MiB "
              f"(+{run['peak_rss_mib'] - run['rss_after_load_mib']:.0f} over the loaded model)")
    samples = (long["seconds"] - short["seconds"]) * SAMPLE_RATE * 4 * 2 / 2**20
    print(f"peak growth {short['seconds']:.0f} s -> {long['seconds']:.0f} s: "
          f"{long['peak_rss_mib'] - short['peak_rss_mib']:+.0f} MiB "
          f"(the extra input and output arrays alone: {samples:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--long", type=float, default=180.0)
    parser.add_argument("--block", type=float, default=30.0)
    parser.add_argument("--unblocked", action="store_true",
                        help="also separate the long input as one block")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads (0: torch's default, all cores)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS,
                        metavar=("FOLDER", "SIG", "SECONDS", "BLOCK", "THREADS"))
    args = parser.parse_args()
    if args.child:
        folder, sig, seconds, block, threads = args.child
        print(json.dumps(child(folder, sig, float(seconds), float(block), int(threads))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-demucs-") as tmp:
        started = time.perf_counter()
        sig = make_tiny_demucs(Path(tmp), real_size=True)
        made_s = time.perf_counter() - started
        lengths = [(args.seconds, args.block), (args.long, args.block)]
        if args.unblocked:
            lengths.append((args.long, args.long + 1))
        runs = [measure(tmp, sig, seconds, block, args.threads) for seconds, block in lengths]
        report(made_s, demucs_bytes(sig, tmp), runs)


if __name__ == "__main__":
    main()
