"""The dual stream through the code users run: the music/noise gate deciding separation, Demucs
and SenseVoice loaded by their own loaders from folders the tests build (tiny, random weights:
they prove plumbing, gating, events, modes and outputs, not separation or draft quality), and
the real tiny.en Whisper for finals."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np
import pytest
from test_subtitles import assert_within_limits

from daemon.domain import Draft, SpeechSpan
from daemon.events import EventType
from daemon.models import ModelCache
from daemon.pipeline import Pipeline, style_limits
from daemon.pipeline.final import doubtful, draft_words, group_spans, keywords
from testkit.corpus import music
from testkit.daemon import base_url, jobs_of, make_config, run_burst, running_service, wait_until
from testkit.media import Speech, write_wav
from testkit.recording import RecordingReporter
from testkit.speech import wer


@pytest.fixture(scope="module")
def music_wav(tmp_path_factory: pytest.TempPathFactory, short_speech: Speech) -> Path:
    """Speech over a chords-and-beat bed 6 dB under it, the bed running through the gaps."""
    speech = short_speech.samples
    bed = music(len(speech) / short_speech.sample_rate)[:len(speech)]
    mix = speech + bed * (np.sqrt(np.mean(speech ** 2)) / np.sqrt(np.mean(bed ** 2))) * 0.5
    return write_wav(tmp_path_factory.mktemp("mix") / "music.wav", mix / np.max(np.abs(mix)))


def run(tmp_path: Path, cache: ModelCache, wav: Path, **tables: dict) -> tuple:
    pipeline = Pipeline(make_config(tmp_path, **tables), cache)
    reporter = RecordingReporter()
    return pipeline.run(wav, reporter=reporter), reporter


def cue_text(transcript: object) -> str:
    return " ".join(c.text for c in transcript.cues)  # type: ignore[attr-defined]


def test_auto_on_clean_speech_skips_separation_and_changes_nothing(
        tmp_path: Path, cache: ModelCache, short_wav: Path) -> None:
    auto, seen = run(tmp_path, cache, short_wav, separation={"mode": "auto"})
    off, _ = run(tmp_path, cache, short_wav, separation={"mode": "off"})
    (separation,) = seen.of("progress", "separation")
    assert separation.details["status"] == "skipped" and "clean" in separation.details["reason"]
    assert cue_text(auto) == cue_text(off) and [c.start for c in auto.cues] == \
        [c.start for c in off.cues]
    assert all("demucs" not in key for key in cache.snapshot()["loaded"])


def test_auto_separates_the_spans_under_a_music_bed(tmp_path: Path, cache: ModelCache,
                                                    music_wav: Path,
                                                    demucs_repo: dict[str, str]) -> None:
    _, seen = run(tmp_path, cache, music_wav, separation={"mode": "auto", **demucs_repo})
    done = seen.of("progress", "separation")[-1].details
    assert done["status"] == "done" and done["spans"] >= 1 and done["seconds"] > 0
    assert "music" in done["reason"]


async def test_always_with_dual_drafts_come_before_the_finals_that_name_them(
        tmp_path: Path, short_wav: Path, short_speech: Speech, demucs_repo: dict[str, str],
        sensevoice_folder: str) -> None:
    config = make_config(tmp_path, pipeline={"mode": "dual"},
                         separation={"mode": "always", **demucs_repo},
                         sensevoice={"model": sensevoice_folder})
    (tmp_path / "inbox" / "talk.wav").write_bytes(short_wav.read_bytes())
    service = await run_burst(config)
    (job,) = jobs_of(tmp_path)
    assert job["state"] == "done", job
    srt = tmp_path / "outbox" / "talk.en.srt"
    assert srt.is_file()
    events = service.bus.history(job["id"])
    drafts = {e.payload["temp_id"]: e for e in events if e.type == EventType.DRAFT}
    finals = [e for e in events if e.type == EventType.OVERWRITE]
    assert drafts and all(d.payload["engine"] == "sensevoice" for d in drafts.values())
    assert finals
    for final in finals:
        for target in final.payload["target_temp_ids"]:
            assert drafts[target].id < final.id  # the draft was on screen first
    separation = [e.payload for e in events if e.type == "progress.separation"]
    assert separation[-1]["status"] == "done"


def test_sensevoice_mode_writes_subtitles_from_drafts_alone(
        tmp_path: Path, cache: ModelCache, short_wav: Path, sensevoice_folder: str) -> None:
    transcript, seen = run(tmp_path, cache, short_wav, pipeline={"mode": "sensevoice"},
                           sensevoice={"model": sensevoice_folder})
    assert seen.drafts and transcript.cues
    assert all(r.details["source"] == "draft" for r in seen.finals)
    assert_within_limits(list(transcript.cues), style_limits(make_config(tmp_path)),
                         duration=transcript.duration)
    assert not any(key.startswith("whisper") and "sensevoice" in key
                   for key in cache.snapshot()["loaded"])


def test_dual_finals_are_whispers_text(tmp_path: Path, cache: ModelCache, short_wav: Path,
                                       short_speech: Speech, sensevoice_folder: str) -> None:
    transcript, seen = run(tmp_path, cache, short_wav, pipeline={"mode": "dual"},
                           separation={"mode": "off"}, sensevoice={"model": sensevoice_folder})
    assert wer(short_speech.text, cue_text(transcript)) <= 0.25
    assert {r.details["source"] for r in seen.finals} == {"whisper"}
    drafted = [r for r in seen.log if r.kind in ("draft", "final")]
    assert drafted[0].kind == "draft"  # the fast stream is on screen first


async def test_an_unloadable_demucs_degrades_once_and_jobs_finish(tmp_path: Path,
                                                                  short_wav: Path) -> None:
    empty = tmp_path / "no-models"
    empty.mkdir()
    async with running_service(tmp_path, separation={"mode": "always", "model": "nonexistent",
                                                     "repo": str(empty)}) as service, \
            aiohttp.ClientSession() as http:
        for name in ("a.wav", "b.wav"):
            (tmp_path / "inbox" / name).write_bytes(short_wav.read_bytes())
        await wait_until(lambda: service.journal.counts()["done"] == 2, what="both done")
        status = await (await http.get(base_url(service) + "/status")).json()
        assert (await http.get(base_url(service) + "/healthz")).status == 200
    assert "nonexistent" in status["degraded"]["separation"]
    degraded = [e.payload for e in service.bus.history(None)
                if e.type == EventType.DEGRADED and e.payload.get("component")]
    assert len(degraded) == 1 and "nonexistent" in degraded[0]["reasons"][0]


# ---------------------------------------------------------------------------- pure parts

def test_spans_group_up_to_the_chunk_length() -> None:
    spans = [SpeechSpan(0, 10), SpeechSpan(20, 30), SpeechSpan(40, 70), SpeechSpan(80, 85)]
    assert group_spans(spans, 25) == [[spans[0], spans[1]], [spans[2]], [spans[3]]]


def test_draft_words_split_cjk_by_character_and_keep_punctuation() -> None:
    words = draft_words(Draft("s0", "今天天气很好。Hello there", 1.0, 3.0))
    assert [w.text for w in words] == ["今", "天", "天", "气", "很", "好。", "Hello", " there"]
    assert words[0].start == 1.0 and words[-1].end == pytest.approx(3.0)


def test_keywords_are_distinct_longer_words_never_the_sentence() -> None:
    drafts = [Draft("s0", "Meet Siobhan at the Reichstag, then the Reichstag again", 0, 2)]
    assert keywords(drafts) == ["Meet", "Siobhan", "Reichstag", "then", "again"]


@pytest.mark.parametrize("confidences, covered, expected", [
    ([0.9, 0.95], True, False),
    ([0.9, 0.4], True, True),
    ([0.9], False, True),  # a span the draft engine gave no text for
])
def test_patch_sends_doubtful_groups_to_whisper(confidences: list[float], covered: bool,
                                                expected: bool) -> None:
    spans = [SpeechSpan(0, 16000), SpeechSpan(32000, 48000)]
    times = [(0.1, 0.9), (2.1, 2.9)][:len(confidences) if covered else 1]
    drafts = [Draft(f"s{k}", "a plain sentence", a, b, c)
              for k, ((a, b), c) in enumerate(zip(times, confidences, strict=False))]
    assert doubtful(drafts, spans, 16000, 0.7) is expected
