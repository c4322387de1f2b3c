"""Batched inference against one window after another, on this machine, in one run.

Not a test: it prints a table. The same file (espeak-ng sentences with pauses, a few minutes),
the same loaded model, the pipeline run with `whisper.batch_size` = 1 (off), 4 and 8; rounds
alternate and medians are shown, with the WER of each against the script, so a speed-up that
costs words shows.

    .venv/bin/python -P bench/batch.py [--seconds 180] [--rounds 3] [--sizes 1 4 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.models import ModelCache, whisper_spec  # noqa: E402
from daemon.pipeline import Pipeline  # noqa: E402
from testkit.daemon import make_config  # noqa: E402
from testkit.media import build_speech, write_wav  # noqa: E402
from testkit.speech import LONG_SENTENCES, SENTENCES, wer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="subwatch-batch-"))
    pool, sentences = LONG_SENTENCES + SENTENCES, []
    speech = build_speech(pool[:1])
    while speech.duration < args.seconds:
        sentences.append(pool[len(sentences) % len(pool)])
        speech = build_speech(sentences, gap=1.5)
    path = write_wav(folder / "batch.wav", speech.samples)
    config = make_config(folder / "cfg")
    cache = ModelCache(3)
    pipelines = {n: Pipeline(dataclasses.replace(
        config, whisper=dataclasses.replace(config.whisper, batch_size=n)), cache)
        for n in args.sizes}
    pipelines[args.sizes[0]].run(path)  # warm: model, VAD session, first allocations
    times: dict[int, list[float]] = {n: [] for n in args.sizes}
    errors: dict[int, float] = {}
    for _ in range(args.rounds):
        for n, pipeline in pipelines.items():
            started = time.perf_counter()
            transcript = pipeline.run(path)
            times[n].append(time.perf_counter() - started)
            errors[n] = wer(speech.text, " ".join(c.text for c in transcript.cues))
    spec = whisper_spec(config.whisper, config.models, 1)
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"{config.whisper.model} {spec.compute_type}, {spec.cpu_threads} threads, "
          f"{speech.duration:.0f} s of audio, {args.rounds} rounds")
    base = statistics.median(times[args.sizes[0]])
    print("| batch_size | median time | ratio to the first | WER |")
    print("|---|---|---|---|")
    for n in args.sizes:
        med = statistics.median(times[n])
        print(f"| {n} | {med:.1f} s | {med / base:.3f} | {errors[n]:.3f} |")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
