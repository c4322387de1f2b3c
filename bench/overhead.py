"""Overhead of subwatch over bare faster-whisper, measured side by side in one run.

Not a test: it prints figures and ratios. The same file, model, compute type, threads, beam size,
VAD settings and word timestamps on both sides; model loads are excluded from the timings (both
sides load once). Runs alternate (bare, pipeline, daemon job) to even out noise; medians shown.

    .venv/bin/python bench/overhead.py [--seconds 90] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.models import ModelCache, load_whisper, whisper_spec  # noqa: E402
from daemon.pipeline import Pipeline  # noqa: E402
from daemon.pipeline.vad import SpanRule  # noqa: E402
from daemon.service import Service  # noqa: E402
from testkit.daemon import make_config  # noqa: E402
from testkit.media import build_speech, write_wav  # noqa: E402
from testkit.speech import LONG_SENTENCES, SENTENCES  # noqa: E402


def make_audio(folder: Path, seconds: float) -> Path:
    sentences: list[str] = []
    pool = LONG_SENTENCES + SENTENCES
    speech = build_speech(pool[:1])
    while speech.duration < seconds and len(sentences) < len(pool):
        sentences.append(pool[len(sentences)])
        speech = build_speech(sentences, gap=0.9)
    return write_wav(folder / "bench.wav", speech.samples)


def bare(model, path: Path, config) -> float:
    started = time.perf_counter()
    segments, _ = model.transcribe(
        str(path), beam_size=config.whisper.beam_size, word_timestamps=True,
        condition_on_previous_text=False, vad_filter=True,
        vad_parameters=SpanRule.hearing(config.vad).options())
    list(segments)
    return time.perf_counter() - started


def through_pipeline(pipeline: Pipeline, path: Path) -> float:
    started = time.perf_counter()
    pipeline.run(path)
    return time.perf_counter() - started


def through_daemon(folder: Path, path: Path, cache: ModelCache) -> float:
    """One daemon job (burst mode): the journal's processing_seconds for it."""
    root = Path(tempfile.mkdtemp(dir=folder))
    config = make_config(root, watch={"settle_seconds": 0.0})
    shutil.copy(path, root / "inbox" / path.name)
    service = Service(config, burst=True, cache=cache)
    asyncio.run(service.run(install_signals=False))
    import sqlite3

    db = sqlite3.connect(root / "state" / "journal.sqlite3")
    (seconds,) = db.execute("SELECT processing_seconds FROM jobs").fetchone()
    return float(seconds)


PEAK_BARE = """
import resource, sys
from faster_whisper import WhisperModel
m = WhisperModel(sys.argv[1], device="cpu", compute_type=sys.argv[3], cpu_threads=int(sys.argv[4]))
segs, _ = m.transcribe(sys.argv[2], beam_size=5, word_timestamps=True,
                       condition_on_previous_text=False, vad_filter=True)
list(segs)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

PEAK_SUBWATCH = """
import resource, sys
from daemon.cli import main
main(["transcribe", sys.argv[1], "-o", sys.argv[2]])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(code: str, *args: str) -> int:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="subwatch-bench-"))
    path = make_audio(folder, args.seconds)
    config = make_config(folder / "cfg")
    spec = whisper_spec(config.whisper, config.models, 1)
    cache = ModelCache(3)
    pipeline = Pipeline(config, cache)
    model = pipeline.model("whisper")
    bare_model = load_whisper(spec)
    bare(bare_model, path, config)  # warm both (first-run allocations, VAD session)
    through_pipeline(pipeline, path)
    times: dict[str, list[float]] = {"bare": [], "pipeline": [], "daemon": []}
    for _ in range(args.rounds):
        times["bare"].append(bare(bare_model, path, config))
        times["pipeline"].append(through_pipeline(pipeline, path))
        times["daemon"].append(through_daemon(folder, path, cache))
    assert model is not None
    med = {k: statistics.median(v) for k, v in times.items()}
    audio = build_seconds(path)
    result = {
        "audio_seconds": round(audio, 1),
        "model": f"{config.whisper.model} {spec.compute_type} on {spec.device}, "
                 f"{spec.cpu_threads} threads, beam {config.whisper.beam_size}",
        "bare_faster_whisper_s": round(med["bare"], 2),
        "subwatch_pipeline_s": round(med["pipeline"], 2),
        "subwatch_daemon_job_s": round(med["daemon"], 2),
        "ratio_pipeline_over_bare": round(med["pipeline"] / med["bare"], 3),
        "ratio_daemon_over_bare": round(med["daemon"] / med["bare"], 3),
        "peak_rss_bare_mib": round(peak_kib(PEAK_BARE, spec.path, str(path), spec.compute_type,
                                            str(spec.cpu_threads)) / 1024),
        "peak_rss_subwatch_transcribe_mib": round(
            peak_kib(PEAK_SUBWATCH, str(path), str(folder / "out")) / 1024),
        "all_runs": {k: [round(x, 2) for x in v] for k, v in times.items()},
    }
    print(json.dumps(result, indent=2))
    shutil.rmtree(folder, ignore_errors=True)


def build_seconds(path: Path) -> float:
    import wave

    with wave.open(str(path)) as fh:
        return fh.getnframes() / fh.getframerate()


if __name__ == "__main__":
    main()
