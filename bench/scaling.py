"""Job time and peak memory against audio length: a real daemon against bare faster-whisper.

Not a test: it prints a table of figures and ratios measured side by side in one run, and draws
docs/scaling.png (time and peak RSS against length, ours and bare).

Each length is a film-like soundtrack (AAC in .m4a): espeak-ng sentences in several voices with
pauses from 0.4 s to 5 s between them (about half of it speech), built once per length.
- daemon: `subwatch run` (a real process, default tiny.en model, preloaded); the file is moved
  into the inbox; time is the job's `processing_seconds` (decode to subtitle file); memory is
  the process's peak RSS (VmHWM) after the job, so model, HTTP server and journal are in it.
  Lengths up to 5 minutes run three times (three copies, one job after another; the median).
- bare: `WhisperModel.transcribe(path, ...)` in its own process with the same model, compute
  type, threads, beam size, word timestamps and VAD settings (the wide cut Whisper hears), the
  segments consumed; time from the call to the last segment, memory its peak RSS.

    .venv/bin/python bench/scaling.py [--minutes 1 5 20 60] [--no-plot]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.config import config_from_dict  # noqa: E402
from daemon.models import whisper_spec  # noqa: E402
from daemon.pipeline.vad import SpanRule  # noqa: E402
from testkit.daemon import DaemonProcess  # noqa: E402
from testkit.media import SR, encode, speak  # noqa: E402
from testkit.speech import LONG_SENTENCES, SENTENCES  # noqa: E402

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3")
PAUSES = (0.4, 0.8, 1.5, 3.0, 5.0)

BARE = """
import json, resource, sys, time
from faster_whisper import WhisperModel
a = json.loads(sys.argv[1])
m = WhisperModel(a["model"], device="cpu", compute_type=a["compute"], cpu_threads=a["threads"])
import numpy as np
list(m.transcribe(np.zeros(16000, np.float32), vad_filter=True)[0])  # the VAD loaded, as ours
times = []
for _ in range(a["rounds"]):
    started = time.perf_counter()
    segs, _ = m.transcribe(a["path"], beam_size=a["beam"], word_timestamps=True,
                           condition_on_previous_text=False, vad_filter=True,
                           vad_parameters=a["vad"])
    words = sum(len(s.words or ()) for s in segs)
    times.append(time.perf_counter() - started)
print(json.dumps({"seconds": times, "words": words,
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def film(folder: Path, minutes: float) -> Path:
    """A soundtrack of `minutes`: sentences in turn, in four voices, with varied pauses."""
    clips = {(i, v): speak(s, v) for i, s in enumerate(LONG_SENTENCES + SENTENCES)
             for v in VOICES[:2]}
    keys = list(clips)
    rng = np.random.default_rng(int(minutes * 10))
    parts, total, n = [], 0, int(minutes * 60 * SR)
    while total < n:
        clip = clips[keys[len(parts) % len(keys)]]
        pause = np.zeros(int(rng.choice(PAUSES) * SR), np.float32)
        parts += [clip, pause]
        total += len(clip) + len(pause)
    samples = np.concatenate(parts)[:n]
    return encode(folder / f"film-{minutes:g}min.m4a", samples)


def daemon_run(folder: Path, path: Path, rounds: int) -> dict[str, float]:
    """`rounds` copies of the file dropped at once (one job after another): the median job."""
    root = folder / f"daemon-{path.stem}"
    root.mkdir()
    daemon = DaemonProcess(root, watch={"settle_seconds": 1.0}).start()
    assert daemon.proc is not None
    try:
        for n in range(rounds):
            staged = root / f"{n}-{path.name}"  # beside the inbox, then moved in whole
            shutil.copy(path, staged)
            os.rename(staged, root / "inbox" / staged.name)

        def finished() -> list[dict[str, object]] | None:
            jobs = [j for j in daemon.get("/jobs")["jobs"] if j["state"] in ("done", "failed")]
            return jobs if len(jobs) == rounds else None

        jobs = daemon.wait_for(finished, timeout=6 * 3600, what="the jobs")
        assert all(j["state"] == "done" for j in jobs), jobs
        peak = _vm_hwm(daemon.proc.pid)
    finally:
        daemon.signal(15)
        daemon.wait_exit(120)
    times = [float(str(j["processing_seconds"])) for j in jobs]
    return {"seconds": statistics.median(times), "peak_mib": peak / 1024}


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def bare_run(path: Path, rounds: int) -> dict[str, float]:
    config = config_from_dict({}, base=ROOT)
    spec = whisper_spec(config.whisper, config.models, 1)
    rule = SpanRule.hearing(config.vad)
    args = {"model": spec.path, "compute": spec.compute_type, "threads": spec.cpu_threads,
            "beam": config.whisper.beam_size, "path": str(path), "rounds": rounds,
            "vad": {"threshold": rule.threshold, "min_silence_duration_ms": rule.min_silence_ms,
                    "speech_pad_ms": rule.pad_ms, "max_speech_duration_s": rule.max_seconds}}
    out = subprocess.run([sys.executable, "-c", BARE, json.dumps(args)], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return {"seconds": statistics.median(data["seconds"]), "peak_mib": data["peak_kib"] / 1024}


def r_squared(x: list[float], y: list[float]) -> float:
    slope, intercept = np.polyfit(x, y, 1)
    fitted = np.polyval([slope, intercept], x)
    residual = float(np.sum((np.array(y) - fitted) ** 2))
    total = float(np.sum((np.array(y) - np.mean(y)) ** 2))
    return 1.0 - residual / total if total else 1.0


def plot(rows: list[dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minutes"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("daemon", "subwatch daemon"), ("bare", "bare faster-whisper")):
        left.plot(minutes, [r[f"{key}_s"] for r in rows], marker="o", label=label)
        right.plot(minutes, [r[f"{key}_peak_mib"] for r in rows], marker="o", label=label)
    left.set(xlabel="audio length (min)", ylabel="job time (s)", title="Time")
    right.set(xlabel="audio length (min)", ylabel="peak RSS (MiB)", title="Peak memory")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"tiny.en int8 on {os.cpu_count()} CPU cores ({platform.processor() or 'cpu'})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 20, 60])
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="subwatch-scaling-"))
    rows = []
    try:
        for minutes in args.minutes:
            path = film(folder, minutes)
            started = time.monotonic()
            rounds = 3 if minutes <= 5 else 1  # short runs are noisy: the median of three
            ours = daemon_run(folder, path, rounds)
            bare = bare_run(path, rounds)
            rows.append({"minutes": minutes, "daemon_s": round(ours["seconds"], 1),
                         "bare_s": round(bare["seconds"], 1),
                         "time_ratio": round(ours["seconds"] / bare["seconds"], 3),
                         "daemon_peak_mib": round(ours["peak_mib"]),
                         "bare_peak_mib": round(bare["peak_mib"]),
                         "wall_s": round(time.monotonic() - started)})
            print(json.dumps(rows[-1]), flush=True)
            path.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(rows)
    if not args.no_plot and len(rows) > 1:
        plot(rows, ROOT / "docs" / "scaling.png")


def report(rows: list[dict[str, float]]) -> None:
    print(f"\nmachine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}")
    print("| audio | daemon job | bare | ratio | daemon peak RSS | bare peak RSS |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']:g} min | {r['daemon_s']} s | {r['bare_s']} s | "
              f"{r['time_ratio']} | {r['daemon_peak_mib']} MiB | {r['bare_peak_mib']} MiB |")
    if len(rows) > 2:
        x = [r["minutes"] for r in rows]
        print(f"R² of daemon time against length: {r_squared(x, [r['daemon_s'] for r in rows]):.4f}"
              f" (bare: {r_squared(x, [r['bare_s'] for r in rows]):.4f})")
    peaks = {r["minutes"]: r["daemon_peak_mib"] for r in rows}
    if 5 in peaks and 60 in peaks:
        print(f"daemon peak RSS, 60 min over 5 min: {peaks[60] / peaks[5]:.2f}")


if __name__ == "__main__":
    main()
