"""Many short files dropped at once: the daemon against a per-file CLI loop (not a test).

Three ways to subtitle the same clips (espeak-ng speech, a few seconds each), run one after the
other in one run, each on fresh folders:

- daemon: a real `subwatch run` process, started and ready before the clock starts (a daemon
  is long-running: its model is loaded once for its life); the clock runs from the drop (all
  clips copied into the inbox at once) to the last SRT in the outbox. Every setting is the
  default (settle time, workers, threads) except the folders, the port and `language = "en"`.
- cli loop: `whisper-ctranslate2` (PyPI) once per file, the way people script it
  (`for f in *.wav; do whisper-ctranslate2 ... "$f"; done`): a process, imports and a model
  load per file. It runs from its own venv (bench/.venv-cli, made on first use: its pins must
  not fight the project's) on the same local model folder, with the same options: language en,
  word timestamps, its VAD filter with our threshold and minimum silence, beam 5, no
  conditioning on previous text, int8, and all the cores the daemon's workers use together.
- transcribe: `subwatch transcribe` with every clip in one call (one process, one model load).

The daemon's own account of where its time went (drop → first admission, summed job times,
gaps between jobs) comes from its /jobs records. Medians over `--rounds`; ratios against the
CLI loop. The acceptance line: daemon total ≤ 0.5 × the CLI loop.

    .venv/bin/python bench/many_files.py [--clips 50] [--rounds 1] [--workers 2] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.config import JobsConfig, WatchConfig, config_from_dict  # noqa: E402
from daemon.models import whisper_spec  # noqa: E402
from testkit.corpus import STORIES, VOICES, compose  # noqa: E402
from testkit.daemon import DaemonProcess, free_port, write_toml  # noqa: E402
from testkit.media import write_wav  # noqa: E402
from testkit.speech import LONG_SENTENCES, SENTENCES  # noqa: E402

CLI_VENV = ROOT / "bench" / ".venv-cli"
CLI_PINS = ("whisper-ctranslate2==0.5.8", "faster-whisper==1.2.1", "ctranslate2==4.8.5")
SPEEDS = (150, 175, 200)


def ensure_cli_venv() -> Path:
    """bench/.venv-cli with whisper-ctranslate2, made once (about 30 s from the local index);
    faster-whisper and CTranslate2 pinned to the project's versions, so both sides run the
    same inference code and the comparison is about everything around it."""
    exe = CLI_VENV / "bin" / "whisper-ctranslate2"
    if exe.exists():
        return exe
    print(f"making {CLI_VENV} (whisper-ctranslate2 for the CLI loop) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(CLI_VENV)], check=True)
    (CLI_VENV / ".gitignore").write_text("*\n")  # a venv is never committed
    subprocess.run([str(CLI_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    *CLI_PINS], check=True)
    return exe


def make_clips(folder: Path, count: int) -> list[Path]:
    """`count` clips of one or two sentences (about 2–8 s), voices and speeds varied."""
    pool = [s for story in STORIES for s in story] + LONG_SENTENCES + SENTENCES
    clips = []
    for i in range(count):
        sentences = [pool[i % len(pool)]] + ([pool[(i + 7) % len(pool)]] if i % 2 else [])
        speech = compose(sentences, VOICES[i % len(VOICES)], SPEEDS[i % len(SPEEDS)], [0.8],
                         lead=0.5, tail=0.5)
        clips.append(write_wav(folder / f"clip_{i:03d}.wav", speech.samples))
    return clips


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    return {"cpu": model, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def config_tables(port: int) -> dict[str, dict[str, Any]]:
    """The config: defaults but for the port and the language (as the CLI's); the folders are
    the default ones beside the config file."""
    return {"watch": {"settle_seconds": WatchConfig.settle_seconds,
                      "poll_interval": WatchConfig.poll_interval},
            "jobs": {"retry_backoff_seconds": JobsConfig.retry_backoff_seconds},
            "whisper": {"language": "en"},
            "http": {"port": port}}


def cli_loop(exe: Path, clips: list[Path], out: Path, model: str, threads: int) -> float:
    out.mkdir(parents=True)
    options = ["--model_directory", model, "--local_files_only", "True", "--device", "cpu",
               "--compute_type", "int8", "--threads", str(threads), "--language", "en",
               "--word_timestamps", "True", "--vad_filter", "True", "--vad_threshold", "0.5",
               "--vad_min_silence_duration_ms", "500", "--beam_size", "5",
               "--condition_on_previous_text", "False", "--output_format", "srt",
               "--output_dir", str(out), "--verbose", "False"]
    started = time.perf_counter()
    for clip in clips:
        subprocess.run([str(exe), *options, str(clip)], check=True, capture_output=True)
    total = time.perf_counter() - started
    assert len(list(out.glob("*.srt"))) == len(clips), "the CLI loop missed a subtitle"
    return total


def one_call(clips: list[Path], root: Path) -> float:
    root.mkdir(parents=True)
    config = write_toml(root / "config.toml", config_tables(0))
    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "subwatch"), "transcribe", *map(str, clips),
                    "--config", str(config), "-o", str(root / "out")],
                   check=True, capture_output=True, cwd=ROOT)
    total = time.perf_counter() - started
    assert len(list((root / "out").rglob("*.srt"))) == len(clips), "transcribe missed one"
    return total


def through_daemon(clips: list[Path], root: Path,
                   workers: int | None) -> tuple[float, dict[str, Any]]:
    """Drop every clip at once into a ready daemon; seconds until the last SRT is there."""
    root.mkdir(parents=True)
    tables = config_tables(free_port())
    if workers is not None:  # its threads per worker follow, as the daemon picks them
        tables["jobs"]["workers"] = workers
    daemon = DaemonProcess(root, **tables).start()
    try:
        outbox = root / "outbox"
        dropped = time.time()
        for clip in clips:
            shutil.copy(clip, root / "inbox" / clip.name)
        daemon.wait_for(lambda: len(list(outbox.glob("*.srt"))) >= len(clips),
                        timeout=60 + 30 * len(clips), what="every SRT")
        total = time.time() - dropped
        jobs = daemon.get(f"/jobs?limit={len(clips)}")["jobs"]
        status = daemon.status()
    finally:
        daemon.signal(15)
        daemon.wait_exit(60)
    return total, account(jobs, dropped, status)


def account(jobs: list[dict[str, Any]], dropped: float, status: dict[str, Any]) -> dict[str, Any]:
    """Where the daemon's time went, from its own records."""
    created = sorted(j["created_at"] for j in jobs)
    started = sorted(j["started_at"] for j in jobs)
    finished = sorted(j["finished_at"] for j in jobs)
    busy = sum(j["processing_seconds"] for j in jobs)
    stats = status["models"]["stats"]
    return {
        "drop_to_first_admission_s": round(created[0] - dropped, 2),
        "drop_to_last_admission_s": round(created[-1] - dropped, 2),
        "drop_to_first_start_s": round(started[0] - dropped, 2),
        "sum_of_job_seconds": round(busy, 2),
        "median_job_s": round(statistics.median(j["processing_seconds"] for j in jobs), 3),
        "first_start_to_last_finish_s": round(finished[-1] - started[0], 2),
        "workers": status["settings"]["workers"],
        "model_loads": {k: v["load_count"] for k, v in stats.items()},
    }


def settings() -> tuple[str, int, int]:
    """The model folder, the daemon's worker count and its threads per worker (as it would
    resolve them itself)."""
    config = config_from_dict({}, base=ROOT)
    spec = whisper_spec(config.whisper, config.models, config.jobs.workers)
    return spec.path, config.jobs.workers, spec.cpu_threads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="*", default=[],
                        help="also run the daemon with these worker counts")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    exe = ensure_cli_venv()
    model, workers, threads = settings()
    folder = Path(tempfile.mkdtemp(prefix="subwatch-many-"))
    clips = make_clips(folder / "clips", args.clips)
    audio = sum(c.stat().st_size - 44 for c in clips) / 2 / 22050
    before = machine()
    daemons: dict[str, int | None] = {"daemon": None}
    daemons.update({f"daemon, {w} workers": w for w in args.workers})
    times: dict[str, list[float]] = {"cli_loop": [], "transcribe": [], **{k: [] for k in daemons}}
    accounts: dict[str, Any] = {}
    try:
        for n in range(args.rounds):
            times["cli_loop"].append(cli_loop(exe, clips, folder / f"cli{n}", model,
                                              workers * threads))
            times["transcribe"].append(one_call(clips, folder / f"tr{n}"))
            for i, (key, count) in enumerate(daemons.items()):
                total, accounts[key] = through_daemon(clips, folder / f"daemon{n}-{i}", count)
                times[key].append(total)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(args, times, accounts, before, audio, workers, threads)


def report(args: argparse.Namespace, times: dict[str, list[float]], accounts: dict[str, Any],
           before: dict[str, Any], audio: float, workers: int, threads: int) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    after = machine()
    print(f"machine: {before['cpu']}, {before['cores']} cores ({before['usable_cores']} usable);"
          f" load average {before['load_average']} before, {after['load_average']} after")
    print(f"{args.clips} clips, {audio:.0f} s of speech in all ({audio / args.clips:.1f} s each);"
          f" tiny.en int8, beam 5, word timestamps, VAD; daemon {workers} worker(s) x "
          f"{threads} thread(s) (the defaults); CLI --threads {workers * threads};"
          f" rounds {args.rounds}")
    print(f"\n{'way':<40}{'total s':>9}{'s/file':>8}{'× cli loop':>12}")
    names = {"cli_loop": "whisper-ctranslate2, one per file",
             "transcribe": "subwatch transcribe, one call",
             "daemon": "subwatch run (drop → last SRT)"}
    for key in times:
        name = names.get(key) or f"subwatch run, {accounts[key]['workers']} workers"
        print(f"{name:<40}{med[key]:>9.1f}{med[key] / args.clips:>8.2f}"
              f"{med[key] / med['cli_loop']:>12.2f}")
    verdict = "meets" if med["daemon"] <= 0.5 * med["cli_loop"] else "MISSES"
    print(f"\ndaemon / cli loop = {med['daemon'] / med['cli_loop']:.2f} ({verdict} ≤ 0.5)")
    for key, account_ in accounts.items():
        print(f"{key}'s account (last round):", json.dumps(account_))
    if args.json:
        args.json.write_text(json.dumps({"machine": before, "machine_after": after,
                                         "clips": args.clips, "audio_seconds": audio,
                                         "times": times, "medians": med,
                                         "daemon_accounts": accounts}, indent=2))


if __name__ == "__main__":
    main()
