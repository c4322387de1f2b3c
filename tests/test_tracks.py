"""Audio track choice and the audio's start offset (issue 13), on files FFmpeg wrote.

The first tests read containers through daemon/pipeline/tracks.py alone. The last two run the
real model on a two-track file and on a file whose audio starts 2.5 s late: they check what
the daemon's transcript says, so they pass once decode uses `choose_audio` and shifts cues by
the offset (the lead's decode rewrite; see tracks.py's docstring for what decode must call).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from daemon.config import config_from_dict
from daemon.pipeline import NullReporter, Pipeline
from daemon.pipeline.tracks import (
    choose_audio,
    frame_offset,
    opened,
    preferred_language,
    probe,
)
from testkit.library_media import AudioSpec, SubtitleSpec, build_media
from testkit.media import SR, Speech, build_speech
from testkit.speech import LONG_SENTENCES, SENTENCES, wer


def dual(tmp_path: Path, first_default: bool = True, ext: str = "mkv") -> Path:
    """Japanese first (flagged default when `first_default`), English second."""
    return build_media(tmp_path / f"dual.{ext}", [
        AudioSpec(language="jpn", default=first_default), AudioSpec(language="eng")])


@pytest.mark.parametrize("preferred", ["en", "eng", "English"])
def test_the_preferred_language_wins_over_the_default_flag(tmp_path: Path,
                                                            preferred: str) -> None:
    with opened(dual(tmp_path)) as container:
        choice = choose_audio(container, preferred)
    assert choice is not None
    assert (choice.index, choice.audio_index, choice.language, choice.reason) == \
        (2, 1, "en", "language")  # stream 0 is the video


def test_without_the_language_the_default_flagged_stream_is_taken(tmp_path: Path) -> None:
    path = build_media(tmp_path / "dual.mkv", [AudioSpec(language="eng"),
                                               AudioSpec(language="jpn", default=True)])
    with opened(path) as container:
        for preferred in ("fr", None, "auto"):
            choice = choose_audio(container, preferred)
            assert choice is not None
            assert (choice.audio_index, choice.language, choice.reason) == (1, "ja", "default")


def test_with_no_language_match_and_no_default_the_first_is_taken(tmp_path: Path) -> None:
    with opened(dual(tmp_path, first_default=False)) as container:
        choice = choose_audio(container, "fr")
    assert choice is not None
    assert (choice.audio_index, choice.language, choice.reason) == (0, "ja", "first")


def test_a_file_without_audio_has_no_choice(tmp_path: Path) -> None:
    path = build_media(tmp_path / "silent-film.mkv", audio=(), video_seconds=1.0)
    with opened(path) as container:
        assert choose_audio(container, "en") is None


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_offset_of_audio_that_starts_late_maps_decoded_samples_onto_the_timeline(
        tmp_path: Path, ext: str) -> None:
    """A click 1 s into an audio stream that starts 2.5 s after the video is at 3.5 s in the
    player: the decoded sample's time plus the offset says so (±10 ms), with the header's
    offset and with the first decoded frame's."""
    click = np.zeros(2 * SR, np.float32)
    click[SR:SR + 200] = 0.9
    path = build_media(tmp_path / f"late.{ext}", [AudioSpec(samples=click, start=2.5)],
                       video_seconds=5.0)
    with opened(path) as container:
        choice = choose_audio(container)
        assert choice is not None
        stream = container.streams[choice.index]
        frames = list(container.decode(stream))
        first = frame_offset(container, frames[0])
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    at = int(np.argmax(np.abs(decoded) > 0.3)) / stream.codec_context.sample_rate
    assert first is not None
    assert abs(at + first - 3.5) < 0.01
    assert abs(at + choice.offset_seconds - 3.5) < 0.01
    assert abs(choice.offset_seconds - 2.5) < 0.05


def test_audio_that_starts_with_the_container_has_no_offset(tmp_path: Path) -> None:
    for path in (build_media(tmp_path / "a.mkv", [AudioSpec(seconds=1.0)]),
                 build_media(tmp_path / "b.mkv", [AudioSpec(seconds=1.0)], video_seconds=None)):
        with opened(path) as container:
            choice = choose_audio(container)
        assert choice is not None and choice.offset_seconds == 0.0


def test_probe_lists_embedded_subtitles_with_forced_flags(tmp_path: Path) -> None:
    path = build_media(tmp_path / "subs.mkv", [AudioSpec(language="jpn")],
                       [SubtitleSpec("eng", forced=True), SubtitleSpec("fre"),
                        SubtitleSpec(None)])
    info = probe(path, "ja")
    assert info is not None and info.audio is not None
    assert info.audio.language == "ja" and info.audio_languages == ("ja",)
    assert [(s.language, s.forced) for s in info.subtitles] == \
        [("en", True), ("fr", False), (None, False)]
    assert info.duration is not None and 0.9 < info.duration < 1.2


def test_probe_refuses_what_decode_refuses(tmp_path: Path) -> None:
    """A concat list names other files: the probe reads none of them (decode's guard)."""
    inside = build_media(tmp_path / "real.mkv", [AudioSpec()])
    concat = tmp_path / "list.mkv"
    concat.write_text(f"ffconcat version 1.0\nfile '{inside}'\n")
    (tmp_path / "text.mkv").write_text("not media")
    assert probe(concat) is None
    assert probe(tmp_path / "text.mkv") is None
    assert probe(tmp_path / "gone.mkv") is None


def test_preferred_language_order(tmp_path: Path) -> None:
    def config(**whisper: str) -> object:
        return config_from_dict({"whisper": whisper}, base=tmp_path)

    assert preferred_language(config(), "ja") == "ja"  # type: ignore[arg-type]
    assert preferred_language(config(language="de", model="small")) == "de"  # type: ignore
    assert preferred_language(config()) == "en"  # type: ignore[arg-type]  # tiny.en hears English
    assert preferred_language(config(model="small")) is None  # type: ignore[arg-type]
    assert preferred_language(config(task="translate")) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- end to end

def transcribe(pipeline: Pipeline, path: Path) -> tuple[str, list[float]]:
    transcript = pipeline.run(path, threading.Event(), NullReporter())
    return " ".join(c.text for c in transcript.cues), [c.start for c in transcript.cues]


def test_two_tracks_the_configured_language_is_transcribed(pipeline: Pipeline,
                                                            tmp_path: Path) -> None:
    """Needs decode to call choose_audio. The first stream (Japanese-tagged, default) says
    other sentences than the English-tagged second one; tiny.en prefers English."""
    english, other = build_speech(SENTENCES[:2]), build_speech(LONG_SENTENCES[:2])
    path = build_media(tmp_path / "dual.mkv", [
        AudioSpec(samples=other.samples, language="jpn", default=True),
        AudioSpec(samples=english.samples, language="eng")],
        video_seconds=max(english.duration, other.duration))
    text, _starts = transcribe(pipeline, path)
    assert wer(english.text, text) < 0.35, text
    assert wer(other.text, text) > 0.7, text


@pytest.fixture(scope="module")
def two_sentences() -> Speech:
    return build_speech(SENTENCES[:2], gap=1.0)


def test_audio_starting_late_shifts_every_cue_by_its_offset(pipeline: Pipeline, tmp_path: Path,
                                                            two_sentences: Speech) -> None:
    """Needs decode to shift cues by the offset. The same speech, in a file whose audio starts
    with the video and in one whose audio starts 2.5 s later: every cue 2.5 s later (±50 ms).
    Matroska, where both decode to the same samples, so only the offset moves the cues (an MP4
    that starts late keeps the AAC priming samples, which moves the model's own timing by a
    few tens of ms; its offset is checked to the sample above)."""
    ext = "mkv"
    seconds = two_sentences.duration + 3.0
    on_time = build_media(tmp_path / f"on-time.{ext}",
                          [AudioSpec(samples=two_sentences.samples)], video_seconds=seconds)
    late = build_media(tmp_path / f"late.{ext}",
                       [AudioSpec(samples=two_sentences.samples, start=2.5)],
                       video_seconds=seconds)
    _text, starts = transcribe(pipeline, on_time)
    _late_text, late_starts = transcribe(pipeline, late)
    assert starts and len(late_starts) == len(starts), (starts, late_starts)
    assert all(abs(b - a - 2.5) <= 0.05 for a, b in zip(starts, late_starts, strict=True)), \
        (starts, late_starts)


def test_live_cues_and_drafts_of_late_audio_are_on_the_containers_timeline(
        pipeline: Pipeline, tmp_path: Path, two_sentences: Speech) -> None:
    """What /events shows while a job runs is what the file will say: the same shift, and
    the track chosen is reported with the decode."""
    from testkit.recording import RecordingReporter

    late = build_media(tmp_path / "late.mkv", [AudioSpec(samples=two_sentences.samples,
                                                         start=2.5)],
                       video_seconds=two_sentences.duration + 3.0)
    seen = RecordingReporter()
    transcript = pipeline.run(late, threading.Event(), seen)
    live = [r.cue for r in seen.log if r.kind == "final" and r.cue]
    drafts = [r.draft for r in seen.log if r.kind == "draft" and r.draft]
    assert [c.start for c in live] == [c.start for c in transcript.cues]
    assert drafts and min(d.start for d in drafts) >= 2.5
    decoded = [r for r in seen.log if r.kind == "progress" and "track" in r.details]
    assert decoded[-1].details["track"]["offset_seconds"] == pytest.approx(2.5, abs=0.01)
    assert transcript.track is not None and transcript.track["reason"] == "first"


async def test_the_track_choice_reaches_the_job_record_and_the_done_event(
        tmp_path: Path, cache, two_sentences: Speech) -> None:
    """The daemon's record of a dual-audio file says which stream it heard and why."""
    import json

    from testkit.daemon import jobs_of, make_config, run_burst

    (tmp_path / "inbox").mkdir()
    build_media(tmp_path / "inbox" / "dual.mkv", [
        AudioSpec(samples=two_sentences.samples, language="jpn", default=True),
        AudioSpec(samples=two_sentences.samples, language="eng", start=0.5)],
        video_seconds=two_sentences.duration + 1)
    service = await run_burst(make_config(tmp_path), cache=cache)
    (job,) = jobs_of(tmp_path)
    track = json.loads(job["track"])
    assert job["state"] == "done"
    assert (track["audio_index"], track["language"], track["reason"]) == (1, "en", "language")
    assert track["offset_seconds"] == pytest.approx(0.5, abs=0.01)
    done = service.bus.history(job["id"], types=["signal.job_done"])
    assert done and done[-1].payload["track"] == track
