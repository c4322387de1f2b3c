"""Demucs vocal separation: load a model, size it, and pull the vocals out of 16 kHz mono audio.

torch and demucs are imported inside the functions only: importing torch alone costs more than a
second, and a daemon with separation off must not pay it. The audio is separated one bounded
block at a time, because demucs' `apply_model` allocates all of its sources (4 x stereo x 44.1 kHz
float32) for the whole input: about 15 GB for a three-hour film, where one 30 s block is 42 MB.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..domain import SAMPLE_RATE
from ..errors import Cancelled, ModelUnavailable

# demucs stores checkpoints in half precision (serialize_model(half=True)) and loads them into
# float32 parameters, so a model holds about twice its file size.
LOADED_PER_STORED_BYTE = 2


def load_demucs(name: str, repo: str, device: str) -> Any:
    """A demucs model (or bag of models) in eval mode on `device` ("cpu", "cuda" or "auto").

    Every failure becomes one ModelUnavailable line naming the setting. demucs' loader reports a
    missing repo folder or a missing diffq with `sys.exit(1)` (utils.fatal), which in a worker
    thread would end the thread without a word, so the folder is checked here first and
    SystemExit is caught as well.
    """
    where = f"separation.model = {name!r}" + (f" (separation.repo = {repo!r})" if repo else "")
    folder = Path(repo).expanduser() if repo else None
    if folder is not None and not folder.is_dir():
        raise ModelUnavailable(f"{where} cannot be loaded: separation.repo is not a folder")
    try:
        from demucs.pretrained import get_model

        target = pick_torch_device(device)
        model = get_model(name, repo=folder) if folder is not None else get_model(name)
        model.eval()
        return model.to(target)
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"{where} cannot be loaded: {exc}") from exc
    except (Exception, SystemExit) as exc:  # SystemExit: demucs.utils.fatal, see above
        raise ModelUnavailable(f"{where} cannot be loaded: {one_line(exc)}") from exc


def pick_torch_device(device: str) -> str:
    """"auto" is CUDA when torch sees a GPU; "cuda" without one is said plainly, not as the
    AssertionError torch raises much later."""
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise ModelUnavailable("separation.device = 'cuda' but torch sees no CUDA GPU")
    return device


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def demucs_bytes(name: str, repo: str) -> int:
    """Expected memory of the model: its checkpoint files, twice over (stored as float16, held
    as float32); 0 when they cannot be found before loading (not downloaded yet)."""
    try:
        folder = Path(repo).expanduser()
        files = local_checkpoints(name, folder) if repo else cached_checkpoints(name)
        return LOADED_PER_STORED_BYTE * sum(f.stat().st_size for f in files)
    except Exception:  # a size is a hint for the cache; the load says what is really wrong
        return 0


def local_checkpoints(name: str, folder: Path) -> list[Path]:
    """The files LocalRepo would read: `<sig>.th` / `<sig>-<checksum>.th`, else the signatures
    listed in the bag `<name>.yaml`."""
    direct = signature_files(folder, name)
    if direct:
        return direct
    sigs = bag_signatures(folder / f"{name}.yaml")
    return [f for sig in sigs for f in signature_files(folder, sig)]


def signature_files(folder: Path, sig: str) -> list[Path]:
    return [f for f in folder.glob(f"{sig}*.th")
            if f.stem == sig or f.stem.rsplit("-", 1)[0] == sig]


def bag_signatures(yaml_file: Path) -> list[str]:
    import yaml

    with open(yaml_file, encoding="utf-8") as fh:
        return [str(sig) for sig in yaml.safe_load(fh)["models"]]


def cached_checkpoints(name: str) -> list[Path]:
    """Where the library's own download keeps `name`: the HuggingFace cache (tried first by
    demucs 4.1) or torch hub's checkpoint folder (the legacy fallback)."""
    import torch.hub
    from demucs.pretrained import REMOTE_ROOT

    bag = REMOTE_ROOT / f"{name}.yaml"
    sigs = bag_signatures(bag) if bag.is_file() else [name]
    found = hf_cached(name, sigs)
    if found:
        return found
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return [f for sig in sigs for f in hub.glob(f"{sig}-*.th")]


def hf_cached(name: str, sigs: list[str]) -> list[Path]:
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    from huggingface_hub import try_to_load_from_cache

    repo_id = f"{DEFAULT_NAMESPACE}/{hf_repo_name(name)}"
    paths = [try_to_load_from_cache(repo_id, f"{sig}.safetensors") for sig in sigs]
    return [Path(p) for p in paths if isinstance(p, str)]


def release_demucs() -> None:
    """Nothing to drop: demucs keeps no reference to the models it loads (get_model builds a new
    one each call, no module cache), so dropping ours frees it; the cache's give_memory_back
    then empties torch's CUDA allocator."""


def separate_vocals(model: Any, samples: np.ndarray, cancel: threading.Event | None = None,
                    block_seconds: float = 30.0, overlap_seconds: float = 1.0) -> np.ndarray:
    """The vocals of 16 kHz mono float32 `samples`, as a new array of the same length."""
    out = np.array(samples, dtype=np.float32, copy=True)
    separate_in_place(model, out, cancel, block_seconds, overlap_seconds)
    return out


def separate_in_place(model: Any, samples: np.ndarray, cancel: threading.Event | None = None,
                      block_seconds: float = 30.0, overlap_seconds: float = 1.0) -> None:
    """Replace 16 kHz mono float32 `samples` with their vocals, one block at a time.

    Blocks of `block_seconds` overlap by `overlap_seconds` and are joined with a linear
    crossfade. Each block's output is written back at once except its overlapping tail, which
    waits (with the mix under it still in place for the next block to hear) until the next
    block's head is blended into it: so nothing but one block is held beside the audio itself.
    The mix is normalised once, over the whole input, as demucs does (mean and std of the mix);
    per-block statistics would change the gain from block to block. `cancel` is checked before
    each block and, through apply_model's callback, before and after each demucs segment (7.8 s
    of audio for htdemucs), because one 30 s block can take a minute on a small CPU.
    """
    block, overlap = block_lengths(block_seconds, overlap_seconds)
    if len(samples) == 0:
        return
    mean, std = mix_stats(samples)
    stop = stop_check(cancel)
    separate = block_separator(model, mean, std + 1e-8, stop)  # + 1e-8 as demucs: 0 stays 0
    tail = np.empty(0, np.float32)  # the previous block's vocals over the overlap, not yet written
    for start, end in block_spans(len(samples), block, overlap):
        stop()
        vocals = separate(samples[start:end])
        fade = len(tail)
        if fade:
            ramp = np.arange(1, fade + 1, dtype=np.float32) / np.float32(fade + 1)
            vocals[:fade] = tail * (1.0 - ramp) + vocals[:fade] * ramp
        keep = overlap if end < len(samples) else 0
        samples[start:end - keep] = vocals[:len(vocals) - keep]
        tail = vocals[len(vocals) - keep:].copy()


def stop_check(cancel: threading.Event | None) -> Callable[..., None]:
    """Raises Cancelled once `cancel` is set. apply_model lets an exception from its callback
    through and drops the segments it has not run."""

    def stop(*_: Any) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("stopped while separating")

    return stop


def mix_stats(samples: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float]:
    """Mean and standard deviation in float64, a chunk at a time: np.std would make a float64
    copy of the whole input (1.4 GB for three hours)."""
    parts = range(0, len(samples), chunk)
    mean = sum(float(np.sum(samples[i:i + chunk], dtype=np.float64)) for i in parts) / len(samples)
    squares = sum(float(np.sum(np.square(samples[i:i + chunk] - mean, dtype=np.float64)))
                  for i in parts)
    return mean, (squares / len(samples)) ** 0.5


def block_lengths(block_seconds: float, overlap_seconds: float) -> tuple[int, int]:
    block = int(round(block_seconds * SAMPLE_RATE))
    overlap = int(round(overlap_seconds * SAMPLE_RATE))
    if block <= 0 or not 0 <= overlap < block:
        raise ValueError(f"blocks of {block_seconds} s with {overlap_seconds} s overlap: "
                         "need 0 <= overlap < block")
    return block, overlap


def block_spans(length: int, block: int, overlap: int) -> Iterator[tuple[int, int]]:
    """[start, end) of each block; each starts `overlap` before the previous one ends, the last
    ends at `length`."""
    start = 0
    while True:
        end = min(start + block, length)
        yield start, end
        if end == length:
            return
        start = end - overlap


def block_separator(model: Any, mean: float, std: float,
                    stop: Callable[..., None]) -> Callable[[np.ndarray], np.ndarray]:
    """A function from one 16 kHz mono block to its 16 kHz mono vocals, with the resampling
    kernels made once per file (julius rebuilds them on every resample_frac call)."""
    import julius
    import torch
    from demucs.apply import apply_model

    rate = int(model.samplerate)
    up = julius.ResampleFrac(SAMPLE_RATE, rate)
    down = julius.ResampleFrac(rate, SAMPLE_RATE)
    vocals_index = list(model.sources).index("vocals")
    device = model_device(model)

    def separate(block: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            mono = (torch.tensor(block) - mean) / std  # a copy: the input may be read-only
            mix = up(mono[None], full=True)  # (1, time at the model's rate)
            mix = mix.expand(int(model.audio_channels), -1)
            # shifts=0: one random shift averages nothing and makes runs differ (global random)
            sources = apply_model(model, mix[None], shifts=0, split=True, overlap=0.25,
                                  progress=False, device=device, callback=stop)
            vocals = sources[0, vocals_index].mean(dim=0) * std + mean
            del sources
            return down(vocals[None], output_length=len(block))[0].numpy()

    return separate


def model_device(model: Any) -> Any:
    """Where the model's weights are (apply_model moves each chunk there); cpu for a model
    without parameters."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else "cpu"
