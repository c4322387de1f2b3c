"""Soak: a 200-file drop into a running daemon (`make test-soak`; not part of `make test`)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from testkit.memory import rss_bytes

FILES = int(os.environ.get("SOAK_FILES", "200"))


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_a_big_drop_is_processed_once_each(daemon_factory, tmp_path: Path,
                                           short_wav: Path) -> None:
    d = daemon_factory(jobs={"workers": 2}).start()
    for n in range(FILES):
        folder = tmp_path / "inbox" / f"batch{n % 7}"
        folder.mkdir(exist_ok=True)
        shutil.copy(short_wav, folder / f"clip {n:03d} -$(x).wav")
    (tmp_path / "inbox" / "broken.mp4").write_text("not media")
    d.wait_for(lambda: d.status()["queue"]["done"] >= FILES // 4, 1800, "a quarter done")
    rss_early = rss_bytes(d.proc.pid) // 1024
    d.wait_for(lambda: d.status()["queue"]["done"] == FILES, 3000, "all done")
    rss_late = rss_bytes(d.proc.pid) // 1024
    status = d.status()
    assert status["queue"]["failed"] == 1 and status["queue"]["queued"] == 0
    srts = list((tmp_path / "outbox").rglob("*.srt"))
    assert len(srts) == FILES
    assert not [p for p in (tmp_path / "outbox").rglob(".subwatch-*")]
    assert rss_late < rss_early * 1.5, (rss_early, rss_late)  # no leak per file
    d.signal(signal.SIGTERM)
    assert d.wait_exit(60) == 0
