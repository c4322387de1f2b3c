"""SenseVoice-Small through funasr: a fast draft of each speech span, with its rich tags.

SenseVoice is a CTC model: one encoder pass per clip, no autoregressive decoding, so it drafts
many times faster than Whisper. Its output starts with tags (`<|en|><|NEUTRAL|><|Speech|>
<|withitn|>`); `parse_rich` turns them into fields. funasr reports only text, so the confidence
comes from the CTC posteriors, read with forward hooks while funasr's own `generate` runs
(see `ctc_confidence`).

funasr and torch are imported inside the functions: `import funasr` takes many seconds and most
configurations never draft with SenseVoice.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelUnavailable

log = logging.getLogger(__name__)

LANGUAGES = frozenset({"zh", "en", "yue", "ja", "ko"})
EMOTIONS = frozenset({"HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED"})
# Tags that say "none recognised": they fill a slot with None rather than a value.
NO_VALUE = frozenset({"nospeech", "EMO_UNKNOWN", "Event_UNK"})
TEXT_NORM = {"withitn": True, "woitn": False}
TAG = re.compile(r"<\|([^<>|]*)\|>")
# Han, kana and CJK punctuation: scripts written without spaces, so a space between two such
# characters (left where a tag was) is dropped. Hangul is not here: Korean spaces its words.
_UNSPACED = r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
CJK_GAP = re.compile(rf"(?<={_UNSPACED}) (?={_UNSPACED})")

SAMPLE_RATE = 16000
# Clips shorter than one 25 ms analysis frame crash funasr's fbank (kaldi-native-fbank aborts
# the process on a 1-sample clip and segfaults on an empty one), so they never reach it.
MIN_SAMPLES = 400
# The encoder's first four output frames answer the language/emotion/event/ITN queries; the
# text is read from the frames after them.
QUERY_FRAMES = 4

# Hooks on a shared model and funasr's per-call config are not safe across threads.
_recognise_lock = threading.Lock()


@dataclass(frozen=True)
class RichText:
    """One SenseVoice result with its tags parsed, so callers never see `<|...|>`."""

    text: str
    language: str | None
    emotion: str | None
    events: tuple[str, ...]
    itn: bool

    @property
    def has_bgm(self) -> bool:
        """Music under the speech: the draft is likelier to be wrong, and separation may help."""
        return "BGM" in self.events


EMPTY = RichText(text="", language=None, emotion=None, events=(), itn=False)


def parse_rich(raw: str) -> RichText:
    """Split SenseVoice's raw output into clean text and the tags' meaning.

    With several tagged stretches (funasr's merged VAD output), the first language, emotion and
    text-norm tag win and the events are gathered in order without repeats. A language outside
    SenseVoice's five, or a tag this code does not know, is dropped from the text and ignored.
    """
    tags = TAG.findall(raw)
    language = _first(tag for tag in tags if tag in LANGUAGES or tag == "nospeech")
    emotion = _first(tag for tag in tags if tag in EMOTIONS or tag == "EMO_UNKNOWN")
    itn = _first(tag for tag in tags if tag in TEXT_NORM)
    events = tuple(dict.fromkeys(tag for tag in tags if _is_event(tag)))
    return RichText(
        text=clean_text(raw),
        language=None if language in NO_VALUE else language,
        emotion=None if emotion is None or emotion in NO_VALUE else emotion.lower(),
        events=events,
        itn=TEXT_NORM.get(itn or "", False),
    )


def _first(tags: Iterator[str]) -> str | None:
    return next(tags, None)


def _is_event(tag: str) -> bool:
    """Audio events are capitalised (Speech, BGM, Laughter…); emotions are a known closed set,
    so anything else capitalised is an event, which keeps tags added in later models."""
    return bool(tag) and tag[0].isupper() and tag not in EMOTIONS and tag not in NO_VALUE


def clean_text(raw: str) -> str:
    """The words alone: tags out, runs of whitespace to one space, and no space left between two
    characters of a script that is written without spaces."""
    text = " ".join(TAG.sub(" ", raw).split())
    return CJK_GAP.sub("", text)


def load_sensevoice(folder: str, device: str) -> Any:
    """Load a SenseVoice-Small folder with funasr, offline, quietly.

    The folder is checked first, because funasr only prints a line when the weights file is
    missing and goes on with random weights. Feature dither is turned off: with funasr's default
    the same clip can draft differently from one call to the next.
    """
    path = Path(folder).expanduser()
    _check_folder(folder, path)
    try:
        with _quiet_funasr():
            import funasr
            import torch

            model = funasr.AutoModel(
                model=str(path), device=device, disable_update=True, disable_pbar=True,
                disable_log=True, ncpu=torch.get_num_threads(), frontend_conf={"dither": 0.0})
    except Exception as error:  # funasr fails in many ways: YAML, registry, shapes, imports
        first = str(error).splitlines()[0] if str(error) else ""
        raise ModelUnavailable(f"sensevoice.model = {folder!r} cannot be loaded: "
                               f"{type(error).__name__}: {first}") from error
    placed = model.kwargs.get("device", device)
    if placed != device:
        log.warning("sensevoice.device = %r is not available here; SenseVoice runs on %s",
                    device, placed)
    return model


def _check_folder(name: str, path: Path) -> None:
    """The files funasr needs, named in the error before funasr gets a chance to misreport."""
    if not path.is_dir():
        raise ModelUnavailable(f"sensevoice.model = {name!r}: no such folder")
    if not (path / "config.yaml").is_file():
        raise ModelUnavailable(
            f"sensevoice.model = {name!r}: no SenseVoice model (config.yaml) in that folder")
    weights = _weights_name(path)
    if not (path / weights).is_file():
        raise ModelUnavailable(
            f"sensevoice.model = {name!r}: no weights ({weights}) in that folder")


def _weights_name(path: Path) -> str:
    """The weights file configuration.json names (the hub's layout), else model.pt."""
    try:
        metas = json.loads((path / "configuration.json").read_text()).get("file_path_metas", {})
        return str(metas.get("init_param", "model.pt"))
    except (OSError, ValueError, AttributeError):
        return "model.pt"


class _DropFunasrChatter(logging.Filter):
    """funasr logs its progress through the root logger (`logging.info(...)`); drop those below
    ERROR while it loads. Our own loggers are named, so a root-logger filter never sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_funasr = f"{os.sep}funasr{os.sep}" in record.pathname
        return not (from_funasr and record.levelno < logging.ERROR)


@contextlib.contextmanager
def _quiet_funasr() -> Iterator[None]:
    """Keep funasr's banners, prints and root-logging set-up out of the daemon's output.

    funasr prints to stdout on import and load, logs through the root logger, and calls
    `logging.basicConfig`, which would give an unconfigured process an INFO handler. Its stdout
    is kept for the debug log; the root logger's handlers and level are put back.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatter = _DropFunasrChatter()
    printed = io.StringIO()
    root.addFilter(chatter)
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        root.removeFilter(chatter)
        root.handlers[:] = handlers
        root.setLevel(level)
        if printed.getvalue().strip():
            log.debug("funasr said: %s", " | ".join(printed.getvalue().split("\n")).strip(" |"))


def recognise(model: Any, batch: Sequence[np.ndarray],
              language: str = "auto") -> list[tuple[RichText, float]]:
    """Draft each clip (16 kHz mono float32, one per speech span): its parsed text and a
    confidence in [0, 1]. One `generate` call does the whole batch; clips too short for a
    single analysis frame come back empty with confidence 0."""
    clips = [np.ascontiguousarray(clip, dtype=np.float32).reshape(-1) for clip in batch]
    usable = [i for i, clip in enumerate(clips) if clip.size >= MIN_SAMPLES]
    results: list[tuple[RichText, float]] = [(EMPTY, 0.0)] * len(clips)
    if not usable:
        return results
    with _recognise_lock, _CtcTap(model.model) as tap:
        # a fixed key: without one funasr draws a random key from Python's global `random`
        outputs = model.generate(input=[clips[i] for i in usable], key="span", cache={},
                                 language=language, use_itn=True, batch_size=len(usable))
    blank = int(getattr(model.model, "blank_id", 0))
    for i, output, log_probs in zip(usable, outputs, tap.per_clip(), strict=True):
        results[i] = (parse_rich(str(output["text"])), ctc_confidence(log_probs, blank))
    return results


class _CtcTap:
    """Forward hooks that keep each batch's CTC logits and encoder output lengths while funasr's
    `generate` runs, so the posteriors behind its greedy decoding can be scored afterwards."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.logits: list[Any] = []
        self.lengths: list[Any] = []
        self.handles: list[Any] = []

    def __enter__(self) -> _CtcTap:
        self.handles = [
            self.module.ctc.ctc_lo.register_forward_hook(
                lambda _m, _a, out: self.logits.append(out.detach())),
            self.module.encoder.register_forward_hook(
                lambda _m, _a, out: self.lengths.append(out[1].detach())),
        ]
        return self

    def __exit__(self, *_exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def per_clip(self) -> list[np.ndarray]:
        """Log-posteriors per clip, [frames, vocabulary], padding cut off, in input order."""
        import torch

        clips: list[np.ndarray] = []
        for logits, lengths in zip(self.logits, self.lengths, strict=True):
            log_probs = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
            clips.extend(log_probs[b, :int(n)] for b, n in enumerate(lengths.tolist()))
        return clips


def ctc_confidence(log_probs: np.ndarray, blank_id: int = 0) -> float:
    """How sure the model is of its greedy CTC transcript, in [0, 1].

    Each emitted token is scored by its peak posterior over the frames it spans; the clip's
    confidence is the geometric mean of those, exp(mean log p), as Whisper's avg_logprob gives
    the drafts it makes. The query frames (tags) are left out. With no token emitted, it is the
    same mean over the winning labels of every frame: how sure the model is that nothing was said.
    """
    frames = log_probs[QUERY_FRAMES:]
    if frames.shape[0] == 0:
        return 0.0
    best = frames.max(axis=-1)
    ids = frames.argmax(axis=-1)
    starts = np.flatnonzero(np.diff(ids, prepend=-1))
    peaks = np.maximum.reduceat(best, starts)
    emitted = peaks[ids[starts] != blank_id]
    scores = emitted if emitted.size else best
    return float(np.clip(np.exp(scores.mean()), 0.0, 1.0))
