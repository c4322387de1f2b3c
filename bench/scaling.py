"""Job time and peak memory against audio length: a real daemon against bare faster-whisper.

Not a test: it prints a table of figures and ratios measured side by side in one run, and draws
docs/scaling.png (time and peak RSS against length, ours and bare).

Each length is a film-like soundtrack (AAC in .m4a): espeak-ng sentences in several voices with
pauses from 0.4 s to 5 s between them (about half of it speech), built once per length.
- daemon: `subwatch run` (a real process, default tiny.en model, preloaded); a copy of the file
  is moved into the inbox; time is the job's `processing_seconds` (decode to subtitle file),
  CPU the process's own over the job; memory is its peak RSS (VmHWM) after the runs, so
  model, HTTP server and journal are in it.
- bare: `WhisperModel.transcribe(path, ...)` in its own process with the same model, compute
  type, threads, beam size, word timestamps and VAD settings (the wide cut Whisper hears), the
  segments consumed; time from the call to the last segment, memory its peak RSS.
Both processes live for the whole length and take turns (pairs, in ABBA order), so a drift
in the speed of a shared machine falls on both; the ratio is the median of the pairs' ratios.

    .venv/bin/python -P bench/scaling.py [--minutes 1 5 20 60] [--rounds N] [--no-plot]
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
from typing import Any

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
import json, os, resource, sys, time
from faster_whisper import WhisperModel
a = json.loads(sys.argv[1])
m = WhisperModel(a["model"], device="cpu", compute_type=a["compute"], cpu_threads=a["threads"])
import numpy as np
list(m.transcribe(np.zeros(16000, np.float32), vad_filter=True)[0])  # the VAD loaded, as ours
print("ready", flush=True)
for path in sys.stdin:  # one run per line, while the daemon's jobs alternate with them
    cpu, started = os.times(), time.perf_counter()
    segs, _ = m.transcribe(path.strip(), beam_size=a["beam"], word_timestamps=True,
                           condition_on_previous_text=False, vad_filter=True,
                           vad_parameters=a["vad"])
    words = sum(len(s.words or ()) for s in segs)
    seconds, end = time.perf_counter() - started, os.times()
    print(json.dumps({"seconds": seconds, "words": words,
                      "cpu": end.user + end.system - cpu.user - cpu.system,
                      "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
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


class DaemonSide:
    """A real `subwatch run` for one length: each run moves a copy of the file into its inbox
    and waits for the subtitle file (a cheap look at the outbox, not a poll of the API)."""

    def __init__(self, folder: Path, path: Path) -> None:
        self.root, self.path, self.runs = folder / f"daemon-{path.stem}", path, 0
        self.root.mkdir()
        self.daemon = DaemonProcess(self.root, watch={"settle_seconds": 1.0}).start()
        assert self.daemon.proc is not None
        self.pid = self.daemon.proc.pid

    def run(self) -> dict[str, float]:
        self.runs += 1
        name = f"{self.runs}-{self.path.name}"
        staged = self.root / name  # beside the inbox, then moved in whole
        shutil.copy(self.path, staged)
        cpu = _process_cpu(self.pid)
        os.rename(staged, self.root / "inbox" / name)
        outbox, stem = self.root / "outbox", Path(name).stem
        self.daemon.wait_for(lambda: any(outbox.glob(f"{stem}.*srt")), timeout=6 * 3600,
                             what=f"the subtitles of {name}")
        cpu = _process_cpu(self.pid) - cpu
        job = self.daemon.wait_for(lambda: self._done(name), what="the job record")
        return {"seconds": float(job["processing_seconds"]), "cpu": cpu}

    def _done(self, name: str) -> dict[str, object] | None:
        jobs = [j for j in self.daemon.get("/jobs")["jobs"] if j["rel_path"] == name]
        assert not jobs or jobs[0]["state"] != "failed", jobs
        return jobs[0] if jobs and jobs[0]["state"] == "done" else None

    def close(self) -> float:
        """The peak RSS (MiB) over every run, then the daemon stopped."""
        peak = _vm_hwm(self.pid) / 1024
        self.daemon.signal(15)
        self.daemon.wait_exit(120)
        return peak


class BareSide:
    """`WhisperModel.transcribe(path, ...)` in a process of its own, the model loaded once."""

    def __init__(self, path: Path) -> None:
        config = config_from_dict({}, base=ROOT)
        spec = whisper_spec(config.whisper, config.models, 1)
        rule = SpanRule.hearing(config.vad)
        args = {"model": spec.path, "compute": spec.compute_type, "threads": spec.cpu_threads,
                "beam": config.whisper.beam_size,
                "vad": {"threshold": rule.threshold, "min_silence_duration_ms": rule.min_silence_ms,
                        "speech_pad_ms": rule.pad_ms, "max_speech_duration_s": rule.max_seconds}}
        self.path, self.peak_kib = path, 0
        self.proc = subprocess.Popen([sys.executable, "-c", BARE, json.dumps(args)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout and self.proc.stdout.readline().strip() == "ready"

    def run(self) -> dict[str, float]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{self.path}\n")
        self.proc.stdin.flush()
        data = json.loads(self.proc.stdout.readline())
        self.peak_kib = data["peak_kib"]
        return {"seconds": data["seconds"], "cpu": data["cpu"]}

    def close(self) -> float:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(60)
        return self.peak_kib / 1024


def measure(folder: Path, path: Path, rounds: int) -> dict[str, Any]:
    """`rounds` pairs of runs, daemon and bare taking turns to go first (ABBA), so a drift of
    the machine's speed (a shared VM) falls on both sides alike; medians and the median of
    the pairs' ratios."""
    ours, bare = DaemonSide(folder, path), BareSide(path)
    runs: dict[str, list[dict[str, float]]] = {"daemon": [], "bare": []}
    try:
        for n in range(rounds):
            sides = (("daemon", ours), ("bare", bare))
            for key, side in sides if n % 2 == 0 else reversed(sides):
                runs[key].append(side.run())
    finally:
        peaks = {"daemon": ours.close(), "bare": bare.close()}
    ratios = [d["seconds"] / b["seconds"] for d, b in
              zip(runs["daemon"], runs["bare"], strict=True)]
    row: dict[str, Any] = {"time_ratio": round(statistics.median(ratios), 3),
                           "pair_ratios": [round(r, 3) for r in ratios]}
    for key, done in runs.items():
        row[f"{key}_s"] = round(statistics.median(r["seconds"] for r in done), 1)
        row[f"{key}_cpu_s"] = round(statistics.median(r["cpu"] for r in done), 1)
        row[f"{key}_peak_mib"] = round(peaks[key])
    return row


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


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


def default_rounds(minutes: float) -> int:
    """Pairs for a length: a run here varies by ±5 % (a shared VM; at one minute single pairs
    spread from 0.90 to 1.13), so the short lengths, cheap to repeat, get the most pairs for
    their median; an hour gets two."""
    return 21 if minutes <= 1 else 11 if minutes <= 5 else 5 if minutes <= 20 else 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 20, 60])
    parser.add_argument("--rounds", type=int, default=0,
                        help="pairs per length (default: default_rounds)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="subwatch-scaling-"))
    rows = []
    try:
        for minutes in args.minutes:
            path = film(folder, minutes)
            started = time.monotonic()
            rounds = args.rounds or default_rounds(minutes)
            row = {"minutes": minutes, "rounds": rounds, **measure(folder, path, rounds)}
            rows.append({**row, "wall_s": round(time.monotonic() - started)})
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
    print("| audio | pairs | daemon job | bare | ratio | daemon CPU | bare CPU "
          "| daemon peak RSS | bare peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['minutes']:g} min | {r['rounds']} | {r['daemon_s']} s | {r['bare_s']} s | "
              f"{r['time_ratio']} | {r['daemon_cpu_s']} s | {r['bare_cpu_s']} s | "
              f"{r['daemon_peak_mib']} MiB | {r['bare_peak_mib']} MiB |")
    if len(rows) > 2:
        x = [r["minutes"] for r in rows]
        print(f"R² of daemon time against length: {r_squared(x, [r['daemon_s'] for r in rows]):.4f}"
              f" (bare: {r_squared(x, [r['bare_s'] for r in rows]):.4f})")
    peaks = {r["minutes"]: r["daemon_peak_mib"] for r in rows}
    if 5 in peaks and 60 in peaks:
        print(f"daemon peak RSS, 60 min over 5 min: {peaks[60] / peaks[5]:.2f}")


if __name__ == "__main__":
    main()
