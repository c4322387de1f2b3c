"""The dual stream on this machine, side by side in one run (not a test).

`timing`: a 60 s espeak file through the real pipeline in several modes, with the real tiny.en
Whisper and real-size SenseVoiceSmall and HTDemucs architectures of random weights (their
inference costs what the released weights cost; their text is meaningless): time to the first
draft and to the first final, total time, and ratios against `whisper` mode.
`memory`: peak RSS of decode → VAD → separation (`always`) on a long input, each length in a
process of its own, to show that separation adds a block, not the film.

    .venv/bin/python bench/dual.py timing [--seconds 60]
    .venv/bin/python bench/dual.py memory [--minutes 10 60]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.domain import Cue, Draft  # noqa: E402
from daemon.models import ModelCache  # noqa: E402
from daemon.pipeline import Pipeline  # noqa: E402
from daemon.pipeline.decode import DecodeStage  # noqa: E402
from daemon.pipeline.separate import SeparationStage  # noqa: E402
from daemon.pipeline.vad import VadStage  # noqa: E402
from testkit.daemon import make_config  # noqa: E402
from testkit.media import build_speech, write_wav  # noqa: E402
from testkit.speech import LONG_SENTENCES  # noqa: E402
from testkit.tiny_demucs import make_tiny_demucs  # noqa: E402
from testkit.tiny_sensevoice import make_tiny_sensevoice  # noqa: E402


class Clock:
    """A reporter that notes when the first draft and the first final came."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_draft: float | None = None
        self.first_batch: float | None = None  # the draft engine's first batch done
        self.first_final: float | None = None
        self.details: dict[str, Any] = {}

    def progress(self, phase: str, fraction: float, overall: float | None, message: str = "",
                 details: Mapping[str, Any] | None = None) -> None:
        if details and phase == "separation":
            self.details = dict(details)
        if phase == "draft" and self.first_batch is None:
            self.first_batch = time.perf_counter() - self.started

    def draft(self, draft: Draft) -> None:
        self.first_draft = self.first_draft or time.perf_counter() - self.started

    def final(self, cue: Cue, replaces: tuple[str, ...],
              details: Mapping[str, Any] | None = None) -> None:
        self.first_final = self.first_final or time.perf_counter() - self.started

    def degraded(self, component: str, reason: str) -> None:
        print(f"degraded {component}: {reason}", file=sys.stderr)


def speech_file(folder: Path, seconds: float) -> Path:
    sentences, speech = [], None
    for sentence in LONG_SENTENCES * 4:
        sentences.append(sentence)
        speech = build_speech(sentences, gap=0.8)
        if speech.duration >= seconds:
            break
    assert speech is not None
    cut = speech.samples[:int(seconds * speech.sample_rate)]
    return write_wav(folder / "speech.wav", cut, speech.sample_rate)


def timing(seconds: float, only: list[str]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="subwatch-dual-"))
    path = speech_file(folder, seconds)
    sensevoice = str(make_tiny_sensevoice(folder / "sensevoice", real_size=True))
    demucs = {"model": make_tiny_demucs(folder / "demucs", real_size=True),
              "repo": str(folder / "demucs")}
    runs = {
        "whisper, separation off": {"separation": {"mode": "off"}},
        "whisper, separation auto (clean)": {"separation": {"mode": "auto", **demucs}},
        "dual, separation off": {"pipeline": {"mode": "dual"}, "separation": {"mode": "off"},
                                 "sensevoice": {"model": sensevoice}},
        "sensevoice": {"pipeline": {"mode": "sensevoice"}, "sensevoice": {"model": sensevoice},
                       "models": {"preload": ["vad", "sensevoice"]}},
        "dual, separation always": {"pipeline": {"mode": "dual"},
                                    "separation": {"mode": "always", **demucs},
                                    "sensevoice": {"model": sensevoice}},
    }
    cache = ModelCache(4)
    rows = {}
    for name, tables in runs.items():
        if only and name not in only and name != "whisper, separation off":
            continue
        pipeline = Pipeline(make_config(folder / "cfg", **tables), cache)
        pipeline.prepare()
        for spec in pipeline.model_specs().values():
            cache.model(spec)  # loads are not what is compared
        if "always" not in name:  # warm (first-call allocations); a Demucs pass is too long
            pipeline.run(path)
        clock = Clock()
        transcript = pipeline.run(path, reporter=clock)
        total = time.perf_counter() - clock.started
        rows[name] = {"first_draft_s": round(clock.first_draft or -1, 2),
                      "first_draft_batch_s": round(clock.first_batch or -1, 2),
                      "first_final_s": round(clock.first_final or -1, 2),
                      "total_s": round(total, 2), "cues": len(transcript.cues),
                      "separation": clock.details}
        print(name, json.dumps(rows[name]), flush=True)
    base = rows["whisper, separation off"]["total_s"]
    print(f"\n{seconds:.0f} s of speech; ratios of total time to whisper mode, separation off:")
    for name, row in rows.items():
        print(f"  {name:36s} first draft {row['first_draft_s']:6.2f} s (first draft batch "
              f"{row['first_draft_batch_s']:6.2f} s)  first final "
              f"{row['first_final_s']:6.2f} s  total {row['total_s']:6.2f} s  "
              f"×{row['total_s'] / base:.2f}")


def memory_child(minutes: float, folder: str, sig: str) -> dict[str, Any]:
    wav = Path(folder) / f"long-{minutes:g}.wav"
    speech = build_speech(LONG_SENTENCES[:8], gap=0.8)
    at16k = np.interp(np.arange(0, speech.duration, 1 / 16000),
                      np.arange(len(speech.samples)) / speech.sample_rate, speech.samples)
    clip = (at16k * 32000).astype(np.int16).tobytes()
    with wave.open(str(wav), "wb") as fh:  # speech repeated, written a clip at a time
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(16000)
        for _ in range(int(np.ceil(minutes * 60 / speech.duration))):
            fh.writeframes(clip)
    config = make_config(Path(folder) / "cfg", separation={"mode": "always", "model": sig,
                                                           "repo": folder})
    cache = ModelCache(2)
    stages = [DecodeStage(), VadStage(), SeparationStage(config)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    Pipeline(config, cache, stages=stages).run(wav)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"minutes": minutes, "peak_rss_mib": round(peak, 1),
            "rss_before_mib": round(before, 1), "seconds": round(time.perf_counter() - started)}


def memory(lengths: list[float]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="subwatch-dual-mem-"))
    sig = make_tiny_demucs(folder)
    for minutes in lengths:
        out = subprocess.run([sys.executable, __file__, "memory-child", str(minutes),
                              str(folder), sig], capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--seconds", type=float, default=60.0)
    t.add_argument("--only", nargs="*", default=[], help="run names (whisper off always runs)")
    m = sub.add_parser("memory")
    m.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    c = sub.add_parser("memory-child")
    c.add_argument("minutes", type=float)
    c.add_argument("folder")
    c.add_argument("sig")
    args = parser.parse_args()
    if args.what == "timing":
        timing(args.seconds, args.only)
    elif args.what == "memory":
        memory(args.minutes)
    else:
        print(json.dumps(memory_child(args.minutes, args.folder, args.sig)))


if __name__ == "__main__":
    main()
