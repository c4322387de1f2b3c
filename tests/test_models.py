"""The model cache: LRU, memory threshold, single-flight loads, idle unload, preload."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from daemon.errors import TransientError
from daemon.models import ModelCache
from daemon.service import Service
from testkit.daemon import ROOT, make_config

MiB = 2**20


class Blob:
    """A stand-in model whose memory the test controls (the probe below sums live blobs)."""

    live: weakref.WeakSet[Blob] = weakref.WeakSet()

    def __init__(self, size: int) -> None:
        self.size = size
        Blob.live.add(self)


def fake_memory(limit: int):
    def probe() -> tuple[int, int]:
        gc.collect()
        return sum(b.size for b in Blob.live), limit
    return probe


def test_memory_threshold_evicts_least_recently_used() -> None:
    cache = ModelCache(size=10, memory_threshold=0.5, memory=fake_memory(1000 * MiB))
    cache.get(("whisper", "a"), lambda: Blob(200 * MiB), size=200 * MiB)
    cache.get(("vad", "b"), lambda: Blob(100 * MiB), size=100 * MiB)
    cache.get(("whisper", "a"), lambda: Blob(200 * MiB), size=200 * MiB)  # a is now recent
    cache.get(("demucs", "c"), lambda: Blob(150 * MiB), size=150 * MiB)  # 450 > 500? no: fits
    cache.get(("sense", "d"), lambda: Blob(100 * MiB), size=100 * MiB)  # must evict b (LRU)
    loaded = cache.snapshot()["loaded"]
    assert "vad/b" not in loaded and {"whisper/a", "demucs/c", "sense/d"} <= set(loaded)
    assert cache.snapshot()["stats"]["vad/b"]["evictions"] == 1
    with pytest.raises(TransientError) as info:
        cache.get(("huge", "e"), lambda: Blob(600 * MiB), size=600 * MiB)
    assert info.value.code == "out_of_memory" and "memory_threshold" in str(info.value)


def test_single_flight_loads() -> None:
    cache = ModelCache(size=2)
    calls = []

    def slow_loader() -> object:
        calls.append(1)
        time.sleep(0.3)
        return object()

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(("w", "x"), slow_loader)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(g) for g in got}) == 1
    stats = cache.snapshot()["stats"]["w/x"]
    assert stats["load_count"] == 1 and stats["hits"] == 7 and stats["misses"] == 1


def test_idle_unload_releases() -> None:
    released = []
    cache = ModelCache(size=3)
    cache.get(("vad", "s"), object, release=lambda: released.append(True))
    assert cache.unload_idle(60) == 0
    assert cache.unload_idle(0) == 1 and released == [True]
    assert cache.snapshot()["loaded"] == []


async def test_cache_size_one_really_evicts_real_models(tmp_path: Path, short_wav: Path) -> None:
    config = make_config(tmp_path, models={"cache_size": 1})
    service = Service(config, burst=True)
    await service.startup()
    whisper = weakref.ref(service.pipeline.model("whisper"))
    for n in range(2):
        shutil.copy(short_wav, tmp_path / "inbox" / f"e{n}.wav")
    await service.main_loop()
    await service.shutdown()
    stats = service.cache.snapshot()["stats"]
    w = next(v for k, v in stats.items() if k.startswith("whisper"))
    v = next(v for k, v in stats.items() if k.startswith("vad"))
    assert w["load_count"] >= 3 and v["load_count"] >= 3  # each job reloads both kinds
    assert w["evictions"] >= 2 and v["evictions"] >= 2
    gc.collect()
    assert whisper() is None  # the first Whisper model object is really gone
    assert len(list((tmp_path / "outbox").glob("*.srt"))) == 2


async def test_no_preload_loads_on_first_use(tmp_path: Path, short_wav: Path) -> None:
    service = Service(make_config(tmp_path, models={"preload": []}), burst=True)
    await service.startup()
    assert service.cache.snapshot()["loaded"] == []
    shutil.copy(short_wav, tmp_path / "inbox" / "first.wav")
    await service.main_loop()
    status = service.monitor.status()
    await service.shutdown()
    w = next(v for k, v in status["models"]["stats"].items() if k.startswith("whisper"))
    assert w["load_count"] == 1 and w["inference_count"] == 1
    assert {"load_seconds", "hit_rate", "avg_inference_seconds", "bytes_held"} <= set(w)


def test_cuda_without_gpu_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[whisper]\ndevice = "cuda"\n')
    out = subprocess.run([sys.executable, "-m", "daemon", "check-config", "--config", str(cfg)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    from daemon.models import cuda_device_count

    if cuda_device_count():  # on a machine with a GPU the same config is simply valid
        assert out.returncode == 0
    else:
        assert out.returncode == 2 and "whisper.device" in out.stderr and "GPU" in out.stderr


def test_mirror_url_is_where_downloads_go(tmp_path: Path) -> None:
    """A model missing from the cache is fetched from models.mirror_url (a local server here)."""
    import http.server

    seen: list[str] = []

    class Mirror(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            seen.append(self.path)
            self.send_error(404)

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\nmirror_url = "http://127.0.0.1:{server.server_port}"\n'
                   f'download_root = "{tmp_path / "hub"}"\ndownload_timeout = 60\n'
                   '[whisper]\nmodel = "base.en"\n[http]\nport = 0\n')
    try:
        out = subprocess.run([sys.executable, "-m", "daemon", "run", "--config", str(cfg)],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 1 and "base.en" in out.stderr and "cannot be had" in out.stderr
    assert any("faster-whisper-base.en" in path for path in seen), seen
