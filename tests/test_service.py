"""The whole daemon in-process (burst mode): real watcher, journal, pipeline, writer, HTTP."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from daemon.models import ModelCache
from testkit.daemon import jobs_of, make_config, run_burst
from testkit.media import Speech, encode
from testkit.speech import srt_text, wer

ODD_NAMES = ["-rf $(x).wav", "space name.wav", "ünïcødé 字幕.wav", "new\nline.wav",
             "sub/dir/deep.wav"]


async def test_odd_names_and_folders(tmp_path: Path, short_wav: Path, short_speech: Speech,
                                     cache: ModelCache) -> None:
    config = make_config(tmp_path)
    for name in ODD_NAMES:
        dest = tmp_path / "inbox" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(short_wav, dest)
    await run_burst(config, cache)
    for name in ODD_NAMES:
        stem = name.rsplit(".", 1)[0]
        srt = tmp_path / "outbox" / f"{stem}.en.srt"
        assert srt.is_file(), (name, sorted(p.name for p in (tmp_path / "outbox").rglob("*")))
        assert wer(short_speech.text, srt_text(srt)) <= 0.25
        assert (tmp_path / "inbox" / name).is_file()  # on_success = keep
    assert {j["state"] for j in jobs_of(tmp_path)} == {"done"}


async def test_bad_inputs_fail_cleanly(tmp_path: Path, short_speech: Speech,
                                       cache: ModelCache) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "empty.mp4").write_bytes(b"")
    (inbox / "text.mp4").write_text("definitely not a movie\n" * 100)
    (inbox / "random.webm").write_bytes(os.urandom(100_000))
    full = encode(tmp_path / "full.mp4", short_speech.samples).read_bytes()
    (inbox / "truncated.mp4").write_bytes(full[: len(full) // 2])
    encode(inbox / "novoice.mkv", None, video_seconds=2)
    encode(inbox / "good.m4a", short_speech.samples)
    service = await run_burst(make_config(tmp_path), cache)
    bad = ["empty", "text", "random", "truncated", "novoice"]
    for stem in bad:
        record = json.loads((tmp_path / "outbox" / f"{stem}.error.json").read_text())
        assert set(record) >= {"input", "error", "message", "attempts", "failed_at"}
        assert record["message"] and record["input"].startswith(stem)
    assert (tmp_path / "outbox" / "good.en.srt").is_file()
    states = {j["rel_path"]: (j["state"], j["attempts"]) for j in jobs_of(tmp_path)}
    assert all(states[n] == ("failed", 1) for n in states if not n.startswith("good")), states
    assert states["good.m4a"][0] == "done"
    assert len(list(inbox.iterdir())) == 6  # every input stays
    assert service.monitor.health() == (False, ["stopping"])  # healthy until the burst ended


async def test_silence_is_done_with_no_speech(tmp_path: Path, cache: ModelCache) -> None:
    import numpy as np

    from testkit.media import write_wav

    config = make_config(tmp_path)
    write_wav(tmp_path / "inbox" / "quiet.wav", np.zeros(16000 * 5, np.float32))
    await run_burst(config, cache)
    (job,) = jobs_of(tmp_path)
    assert job["state"] == "done" and job["result"] == "no_speech"
    assert not list((tmp_path / "outbox").rglob("*.srt"))


async def test_restart_does_not_reprocess(tmp_path: Path, short_wav: Path,
                                          cache: ModelCache) -> None:
    config = make_config(tmp_path)
    shutil.copy(short_wav, tmp_path / "inbox" / "once.wav")
    await run_burst(config, cache)
    srt = tmp_path / "outbox" / "once.en.srt"
    first = srt.stat().st_mtime_ns
    await run_burst(config, cache)
    assert srt.stat().st_mtime_ns == first and len(jobs_of(tmp_path)) == 1
    # a changed file is a new identity: processed again
    with open(tmp_path / "inbox" / "once.wav", "ab") as fh:
        fh.write(b"\0" * 3200)
    await run_burst(config, cache)
    assert [j["state"] for j in jobs_of(tmp_path)] == ["done", "done"]


async def test_skip_existing_and_move_on_success(tmp_path: Path, short_wav: Path,
                                                 cache: ModelCache) -> None:
    config = make_config(tmp_path, jobs={"on_success": "move"},
                         output={"formats": ["srt", "vtt", "json", "txt"]})
    shutil.copy(short_wav, tmp_path / "inbox" / "has.wav")
    shutil.copy(short_wav, tmp_path / "inbox" / "new.wav")
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "has.en.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nMine\n")
    await run_burst(config, cache)
    states = {j["rel_path"]: j["state"] for j in jobs_of(tmp_path)}
    assert states == {"has.wav": "skipped", "new.wav": "done"}
    assert "Mine" in (tmp_path / "outbox" / "has.en.srt").read_text()
    for ext in ("srt", "vtt", "json", "txt"):
        assert (tmp_path / "outbox" / f"new.en.{ext}").is_file()
    assert (tmp_path / "inbox" / ".done" / "new.wav").is_file()
    assert not (tmp_path / "inbox" / "new.wav").exists()
    assert json.loads((tmp_path / "outbox" / "new.en.json").read_text())["language"] == "en"


async def test_two_workers_share_one_loaded_model(tmp_path: Path, short_wav: Path) -> None:
    config = make_config(tmp_path, jobs={"workers": 2})
    for n in range(4):
        shutil.copy(short_wav, tmp_path / "inbox" / f"f{n}.wav")
    service = await run_burst(config, ModelCache(3))
    assert sorted(p.name for p in (tmp_path / "outbox").glob("*.srt")) == \
        [f"f{n}.en.srt" for n in range(4)]
    stats = service.cache.snapshot()["stats"]
    whisper = next(v for k, v in stats.items() if k.startswith("whisper"))
    assert whisper["load_count"] == 1 and whisper["hits"] >= 3
