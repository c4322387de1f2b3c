"""Subtitle quality, subwatch vs bare faster-whisper, same model, same audio (not a test).

Two corpora, one table each, every engine run on the same files in one run:
- clean (testkit/corpus.py): espeak-ng voices × speeds, a run-on passage, speech over a music
  bed, silence, music alone;
- noisy (testkit/noise.py): the clean speech under pink noise at two levels, babble, a music-like
  bed, and reverb with noise, plus each noise alone (nobody speaks: nothing may be written).

Columns: "bare" is what a user of the library gets by default (`transcribe()` with word
timestamps, no VAD), "bare + VAD" the same with `vad_filter=True` (the library's VAD
defaults), and subwatch. Rows: word error rate (jiwer, one normalisation for all), sentence
onset error (median, worst), share of subtitles inside the style limits (42 × 2, 0.8–7 s,
≤ 20 cps) and phantom subtitles (text where nobody speaks). A last table counts what subwatch's
guards dropped on each corpus, and how many of the dropped words were really said.

    .venv/bin/python bench/quality.py [--quick] [--plot docs/quality_onsets.png] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.models import ModelCache, whisper_spec  # noqa: E402
from daemon.pipeline import Pipeline  # noqa: E402
from testkit.corpus import Item, Shown, corpus, onset_errors, phantoms, within_style  # noqa: E402
from testkit.daemon import make_config  # noqa: E402
from testkit.media import write_wav  # noqa: E402
from testkit.noise import noisy_corpus  # noqa: E402
from testkit.speech import wer  # noqa: E402

ENGINES = ("bare", "bare + VAD", "subwatch")
Run = Callable[[Path], list[Shown]]


def bare(model: Any, vad: bool) -> Run:
    def run(path: Path) -> list[Shown]:
        segments, _ = model.transcribe(str(path), beam_size=5, word_timestamps=True,
                                       vad_filter=vad)
        return [Shown(s.start, s.end, (s.text.strip(),)) for s in segments if s.text.strip()]
    return run


def evaluate(items: list[Item], outputs: dict[str, list[Shown]]) -> dict[str, Any]:
    refs, hyps, onsets, shown_all, phantom = [], [], [], [], 0
    for item in items:
        shown = outputs[item.name]
        shown_all += shown
        phantom += phantoms(shown, item)
        if item.has_speech:
            refs.append(item.speech.text)
            hyps.append(" ".join(s.text for s in shown))
            onsets += onset_errors(shown, item)
    return {
        "wer": round(wer(" ".join(refs), " ".join(hyps)), 4),
        "onset_median_s": round(statistics.median(onsets), 3),
        "onset_worst_s": round(max(onsets), 3),
        "style_ok_percent": round(100 * sum(map(within_style, shown_all)) /
                                  max(len(shown_all), 1), 1),
        "phantom_subtitles": phantom,
        "subtitles": len(shown_all),
        "onsets": onsets,
    }


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def guard_drops(item: Item, dropped: Any) -> dict[str, list[int]]:
    """Per reason: [segments, words, words really said in the sentences under the segment]."""
    out: dict[str, list[int]] = {}
    speech = item.speech
    for drop in dropped:
        said = {w for sentence, a, b in zip(speech.sentences, speech.onsets, speech.ends,
                                            strict=True)
                if a < drop.end + 0.5 and drop.start - 0.5 < b for w in words(sentence)}
        got = words(drop.text)
        row = out.setdefault(drop.reason, [0, 0, 0])
        row[0] += 1
        row[1] += len(got)
        row[2] += sum(1 for w in got if w in said)
    return out


def run_corpus(items: list[Item], folder: Path, engines: dict[str, Run],
               pipeline: Pipeline) -> tuple[dict[str, dict[str, list[Shown]]], dict]:
    outputs: dict[str, dict[str, list[Shown]]] = {name: {} for name in ENGINES}
    drops: dict[str, list[int]] = {}
    for item in items:
        path = write_wav(folder / f"{item.name}.wav", item.speech.samples)
        for name, run in engines.items():
            outputs[name][item.name] = run(path)
        transcript = pipeline.run(path)
        outputs["subwatch"][item.name] = [Shown(c.start, c.end, c.lines)
                                          for c in transcript.cues]
        for reason, row in guard_drops(item, transcript.dropped).items():
            total = drops.setdefault(reason, [0, 0, 0])
            drops[reason] = [a + b for a, b in zip(total, row, strict=True)]
    return outputs, drops


def print_table(title: str, items: list[Item], results: dict[str, dict]) -> None:
    print(f"\n### {title}: {len(items)} files, {sum(i.speech.duration for i in items):.0f} s, "
          f"{sum(len(i.sentence_onsets) for i in items)} sentence onsets\n")
    print("| | " + " | ".join(ENGINES) + " |\n" + "|---" * (len(ENGINES) + 1) + "|")
    for key, label in (("wer", "word error rate"), ("onset_median_s", "onset error, median (s)"),
                       ("onset_worst_s", "onset error, worst (s)"),
                       ("style_ok_percent", "subtitles inside the style limits (%)"),
                       ("phantom_subtitles", "phantom subtitles"), ("subtitles", "subtitles")):
        print(f"| {label} | " + " | ".join(str(results[e][key]) for e in ENGINES) + " |")


def print_silent(items: list[Item], outputs: dict[str, dict[str, list[Shown]]]) -> None:
    print("\nwhere nobody speaks (must be empty):")
    for item in items:
        if not item.has_speech:
            for name in ENGINES:
                text = " ".join(s.text for s in outputs[name][item.name])
                print(f"  {item.name:14s} {name:11s} {text!r}")


def print_drops(drops: dict[str, dict[str, list[int]]]) -> None:
    print("\n### What subwatch's guards dropped\n")
    print("| corpus | reason | segments | words | of them really said |\n|---|---|---|---|---|")
    for corpus_name, rows in drops.items():
        for reason, (segments, count, said) in sorted(rows.items()) or [("(nothing)",
                                                                         (0, 0, 0))]:
            print(f"| {corpus_name} | {reason} | {segments} | {count} | {said} |")


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    top = max(max(r["onsets"]) for r in results.values())
    bins = [i * 0.05 for i in range(int(min(top, 3.0) / 0.05) + 2)]
    for name, color in (("bare", "#c0392b"), ("subwatch", "#2471a3")):
        ax.hist([min(x, bins[-1]) for x in results[name]["onsets"]], bins=bins, alpha=0.6,
                label=f"{name} (median {results[name]['onset_median_s']:.2f} s)", color=color)
    ax.axvline(0.25, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("sentence onset error (s): distance from the true onset to the nearest "
                  "subtitle start")
    ax.set_ylabel("sentences")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the small corpus of the test")
    parser.add_argument("--only", choices=("clean", "noisy"), default=None)
    parser.add_argument("--plot", type=Path, default=None, help="clean onsets histogram")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="subwatch-quality-"))
    config = make_config(folder / "cfg")
    pipeline = Pipeline(config, ModelCache(3))
    model = pipeline.model("whisper")
    engines = {"bare": bare(model, vad=False), "bare + VAD": bare(model, vad=True)}
    clean = corpus(full=not args.quick)
    corpora = {"clean": clean, "noisy": noisy_corpus(clean)}
    if args.only:
        corpora = {args.only: corpora[args.only]}
    print(f"model {config.whisper.model} "
          f"{whisper_spec(config.whisper, config.models, 1).compute_type}, beam 5, "
          f"{os.cpu_count()} cores")
    report: dict[str, Any] = {}
    drops = {}
    for name, items in corpora.items():
        outputs, drops[name] = run_corpus(items, folder, engines, pipeline)
        results = {engine: evaluate(items, out) for engine, out in outputs.items()}
        print_table(name, items, results)
        print_silent(items, outputs)
        report[name] = results
        if args.plot and name == "clean":
            plot(results, args.plot)
    print_drops(drops)
    if args.json:
        args.json.write_text(json.dumps({"results": report, "drops": drops}, indent=1))


if __name__ == "__main__":
    main()
