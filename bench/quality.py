"""Subtitle quality, subwatch vs bare faster-whisper, same model, same audio (not a test).

Builds the corpus of tests/corpus.py (espeak-ng voices × speeds, a run-on passage, speech over a
music bed, silence, music alone), runs both on every file and prints, side by side: word error
rate (jiwer, the same normalisation for both), sentence onset error (median, worst), share of
subtitles inside the style limits (42 × 2, 0.8–7 s, ≤ 20 cps) and phantom subtitles (text where
nobody speaks). "Bare" is what a user of the library gets by default: `transcribe()` with word
timestamps, its segments written as subtitles.

    .venv/bin/python bench/quality.py [--quick] [--plot docs/quality_onsets.png] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.models import ModelCache, whisper_spec  # noqa: E402
from daemon.pipeline import Pipeline  # noqa: E402
from testkit.corpus import Item, Shown, corpus, onset_errors, phantoms, within_style  # noqa: E402
from testkit.daemon import make_config  # noqa: E402
from testkit.media import write_wav  # noqa: E402
from testkit.speech import wer  # noqa: E402


def run_subwatch(pipeline: Pipeline, path: Path) -> list[Shown]:
    return [Shown(c.start, c.end, c.lines) for c in pipeline.run(path).cues]


def run_bare(model, path: Path) -> list[Shown]:
    segments, _ = model.transcribe(str(path), beam_size=5, word_timestamps=True)
    return [Shown(s.start, s.end, (s.text.strip(),)) for s in segments if s.text.strip()]


def evaluate(items: list[Item], outputs: dict[str, list[Shown]]) -> dict[str, float]:
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
        "style_ok_percent": round(100 * sum(map(within_style, shown_all)) / len(shown_all), 1),
        "phantom_subtitles": phantom,
        "subtitles": len(shown_all),
        "onsets": onsets,
    }


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    top = max(max(r["onsets"]) for r in results.values())
    bins = [i * 0.05 for i in range(int(min(top, 3.0) / 0.05) + 2)]
    for name, color in (("bare faster-whisper", "#c0392b"), ("subwatch", "#2471a3")):
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
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="subwatch-quality-"))
    config = make_config(folder / "cfg")
    pipeline = Pipeline(config, ModelCache(3))
    model = pipeline.model("whisper")
    items = corpus(full=not args.quick)
    outputs: dict[str, dict[str, list[Shown]]] = {"subwatch": {}, "bare faster-whisper": {}}
    for item in items:
        path = write_wav(folder / f"{item.name}.wav", item.speech.samples)
        outputs["subwatch"][item.name] = run_subwatch(pipeline, path)
        outputs["bare faster-whisper"][item.name] = run_bare(model, path)
    results = {name: evaluate(items, out) for name, out in outputs.items()}
    print(f"corpus: {len(items)} files, {sum(i.speech.duration for i in items):.0f} s, "
          f"{sum(len(i.sentence_onsets) for i in items)} sentence onsets; "
          f"model {config.whisper.model}"
          f" {whisper_spec(config.whisper, config.models, 1).compute_type}, beam 5\n")
    print("| | bare faster-whisper | subwatch |\n|---|---|---|")
    for key, label in (("wer", "word error rate"), ("onset_median_s", "onset error, median (s)"),
                       ("onset_worst_s", "onset error, worst (s)"),
                       ("style_ok_percent", "subtitles inside the style limits (%)"),
                       ("phantom_subtitles", "phantom subtitles"), ("subtitles", "subtitles")):
        print(f"| {label} | {results['bare faster-whisper'][key]} | {results['subwatch'][key]} |")
    print("\nper file (subwatch text on silence/music: must be empty):")
    for item in items:
        if not item.has_speech:
            for name in outputs:
                text = " ".join(s.text for s in outputs[name][item.name])
                print(f"  {item.name:12s} {name:20s} {text!r}")
    if args.plot:
        plot(results, args.plot)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
