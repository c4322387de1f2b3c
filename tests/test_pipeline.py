"""The real pipeline: real decoding, Silero VAD and the real tiny.en model on espeak-ng speech."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from test_subtitles import assert_within_limits

from daemon.domain import Cue, Draft
from daemon.errors import Cancelled, InputError
from daemon.models import ModelCache
from daemon.pipeline import NullReporter, Pipeline, style_limits
from daemon.pipeline.decode import DecodeLimits, DecodeStage, decode
from testkit.daemon import make_config
from testkit.media import FORMATS, SR, Speech, encode, write_wav
from testkit.speech import wer


def check_transcript(transcript, speech: Speech, limits) -> None:
    text = " ".join(c.text for c in transcript.cues)
    assert wer(speech.text, text) <= 0.25, text
    for onset in speech.onsets:
        assert any(abs(c.start - onset) <= 1.0 for c in transcript.cues), (onset, transcript.cues)
    starts = [c.start for c in transcript.cues]
    assert starts == sorted(starts)
    assert transcript.cues[-1].end <= speech.duration + 0.05
    assert_within_limits(list(transcript.cues), limits, duration=transcript.duration)


def test_speech_to_cues(pipeline: Pipeline, speech_wav: Path, speech: Speech) -> None:
    transcript = pipeline.run(speech_wav)
    assert transcript.language == "en"
    assert abs(transcript.duration - speech.duration) < 0.05
    check_transcript(transcript, speech, style_limits(pipeline.config))


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_every_container(pipeline: Pipeline, short_speech: Speech, tmp_path: Path,
                         ext: str) -> None:
    path = encode(tmp_path / f"clip.{ext}", short_speech.samples)
    transcript = pipeline.run(path)
    text = " ".join(c.text for c in transcript.cues)
    assert wer(short_speech.text, text) <= 0.25, (ext, text)


def test_silence_gives_no_text(pipeline: Pipeline, tmp_path: Path) -> None:
    path = write_wav(tmp_path / "silence.wav", np.zeros(SR * 8, np.float32))
    transcript = pipeline.run(path)
    assert transcript.no_speech and transcript.cues == ()


def test_noise_floor_gives_no_text(pipeline: Pipeline, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = write_wav(tmp_path / "hiss.wav", (rng.standard_normal(SR * 6) * 0.003)
                     .astype(np.float32))
    assert pipeline.run(path).no_speech


@pytest.mark.parametrize("name, make, code", [
    ("empty.mp4", lambda p: p.write_bytes(b""), "empty_file"),
    ("text.mp4", lambda p: p.write_text("this is not a video\n" * 50), "not_media"),
    ("random.mkv", lambda p: p.write_bytes(os.urandom(64 * 1024)), "not_media"),
])
def test_bad_inputs_are_permanent_errors(pipeline: Pipeline, tmp_path: Path, name: str,
                                         make, code: str) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as info:
        pipeline.run(path)
    assert info.value.code == code and str(info.value)


def test_truncated_mp4_and_video_without_audio(pipeline: Pipeline, short_speech: Speech,
                                               tmp_path: Path) -> None:
    full = encode(tmp_path / "full.mp4", short_speech.samples)
    data = full.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        pipeline.run(tmp_path / "cut.mp4")
    silent_video = encode(tmp_path / "novoice.mp4", None, video_seconds=2)
    with pytest.raises(InputError) as info:
        pipeline.run(silent_video)
    assert info.value.code == "no_audio" and "video" in str(info.value)


class CancelAfterFirstDraft(NullReporter):
    """Asks to stop as soon as Whisper has produced one segment: mid-transcription."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.drafts: list[Draft] = []
        self.finals: list[Cue] = []

    def draft(self, draft: Draft) -> None:
        self.drafts.append(draft)
        self.cancel.set()

    def final(self, cue: Cue, replaces: tuple[str, ...]) -> None:
        self.finals.append(cue)


def test_cancel_before_decode_stops_at_once(pipeline: Pipeline, speech_wav: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    reporter = CancelAfterFirstDraft(cancel)
    with pytest.raises(Cancelled, match="decode"):
        pipeline.run(speech_wav, cancel, reporter)
    assert reporter.drafts == []


def test_cancel_between_two_segments_stops_transcription(pipeline: Pipeline,
                                                         speech_wav: Path) -> None:
    cancel = threading.Event()
    reporter = CancelAfterFirstDraft(cancel)
    with pytest.raises(Cancelled, match="transcribing"):
        pipeline.run(speech_wav, cancel, reporter)
    assert len(reporter.drafts) == 1  # no later segment reached anyone


def test_decode_resamples_to_16k_mono(short_speech: Speech, tmp_path: Path) -> None:
    audio = decode(encode(tmp_path / "s.flac", short_speech.samples))
    assert audio.sample_rate == 16000 and audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1 and abs(audio.duration - short_speech.duration) < 0.05


def test_model_loaded_once_across_files(pipeline: Pipeline, cache: ModelCache,
                                        short_wav: Path) -> None:
    pipeline.run(short_wav)
    pipeline.run(short_wav)
    stats = cache.snapshot()["stats"]
    whisper = next(v for k, v in stats.items() if k.startswith("whisper"))
    assert whisper["load_count"] == 1 and whisper["hits"] >= 1



# ---------------------------------------------------------------------------- decode: hostile input

def tone(seconds: float) -> np.ndarray:
    return (np.sin(np.arange(int(SR * seconds)) / 7) * 0.3).astype(np.float32)


def test_concat_list_is_refused_before_it_reads_what_it_names(tmp_path: Path) -> None:
    """A text file named .mp4 that FFmpeg would probe as a concat list: it must not decode the
    file it names (a private file through a symlink with an extension the watcher ignores)."""
    write_wav(tmp_path / "private" / "secret.wav", tone(2.0))
    (tmp_path / "s.dat").symlink_to(tmp_path / "private" / "secret.wav")
    leak = tmp_path / "leak.mp4"
    leak.write_text("ffconcat version 1.0\nfile s.dat\n")
    with pytest.raises(InputError) as info:
        decode(leak)
    assert info.value.code == "unsafe_container" and "concat" in str(info.value)


@pytest.mark.parametrize("name, text, code", [
    ("loop.mp4", "ffconcat version 1.0\nfile loop.mp4\n", "unsafe_container"),
    ("list.mkv", "ffconcat version 1.0\n" + "file a.mp3\n" * 2000, "unsafe_container"),
    # read from a descriptor FFmpeg has no file name to probe HLS by: not media at all
    ("playlist.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.mp3\n"
                      "#EXT-X-ENDLIST\n", "not_media"),
])
def test_reference_formats_are_refused(tmp_path: Path, name: str, text: str, code: str) -> None:
    """A self-referencing list, a list repeating one file 2000 times, an HLS playlist (where a
    user watches .m3u8): none is a media file, all are refused at once as permanent errors."""
    encode(tmp_path / "a.mp3", tone(2.0))
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as info:
        decode(tmp_path / name)
    assert info.value.code == code


def decode_only(root: Path, **jobs: object) -> Pipeline:
    """The daemon's decode stage alone, on a config whose inbox is `root/inbox`."""
    return Pipeline(make_config(root, jobs=dict(jobs)), ModelCache(1), stages=[DecodeStage()])


def test_symlink_repointed_out_of_the_inbox_is_not_read(tmp_path: Path) -> None:
    """alias.wav was admitted pointing inside the inbox, then re-pointed at a private file of
    the same size and mtime (so the worker's identity check passes): the read is refused."""
    inbox = tmp_path / "inbox"
    inside = write_wav(inbox / "real.wav", tone(1.0))
    secret = write_wav(tmp_path / "private" / "secret.wav", tone(1.0) * 0.5)
    st = inside.stat()
    os.utime(secret, ns=(st.st_atime_ns, st.st_mtime_ns))
    (inbox / "alias.wav").symlink_to(inside)
    pipeline = decode_only(tmp_path)
    assert pipeline.run(inbox / "alias.wav").duration == pytest.approx(1.0, abs=0.01)
    (inbox / "alias.wav").unlink()
    (inbox / "alias.wav").symlink_to(secret)
    with pytest.raises(InputError) as info:
        pipeline.run(inbox / "alias.wav")
    assert info.value.code == "outside_inbox"


def test_max_duration_refuses_from_the_container_before_decoding(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "long.wav", tone(3.0))
    seen: list[float] = []
    with pytest.raises(InputError) as info:
        decode(path, progress=seen.append, limits=DecodeLimits(max_seconds=1.0))
    assert info.value.code == "too_long" and "jobs.max_duration" in str(info.value)
    assert seen == []  # refused from the header, not after decoding it


def test_max_duration_holds_when_the_header_lies(tmp_path: Path) -> None:
    """An MKV whose header claims 0.5 s but holds 3 s: counted while decoding, refused at 1 s."""
    path = encode(tmp_path / "lie.mkv", tone(3.0))
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # the segment's Duration, a float64 in milliseconds
    data[at + 3:at + 11] = struct.pack(">d", 500.0)
    path.write_bytes(data)
    assert decode(path).duration > 2.9  # the whole file decodes without a limit
    with pytest.raises(InputError) as info:
        decode(path, limits=DecodeLimits(max_seconds=1.0))
    assert info.value.code == "too_long"


def test_decoded_bytes_guard(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", tone(3.0))
    with pytest.raises(InputError) as info:
        decode(path, limits=DecodeLimits(max_seconds=0, max_bytes=100_000))
    assert info.value.code == "too_large"
    assert decode(path, limits=DecodeLimits(max_seconds=0, max_bytes=10**7)).duration > 2.9


def test_a_library_file_reached_through_a_folder_link_out_of_the_library_is_not_read(
        pipeline: Pipeline, short_wav: Path, tmp_path: Path) -> None:
    """Whoever named the file (the watcher refuses such links, a webhook or a retry might not):
    the decoder reads only inside the inbox or library the path is in."""
    import dataclasses

    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.wav").write_bytes(short_wav.read_bytes())
    library = tmp_path / "lib"
    library.mkdir()
    (library / "x").symlink_to(private)
    config = make_config(tmp_path, libraries=[{"name": "tv", "path": str(library)}])
    stage = DecodeStage()
    from daemon.pipeline.base import JobState, StageContext, StageReport

    ctx = StageContext(config, pipeline._cache, threading.Event(),  # noqa: SLF001
                       StageReport(NullReporter(), "decode", (0.0, 1.0)))
    with pytest.raises(InputError) as refused:
        stage(JobState(library / "x" / "secret.wav"), ctx)
    assert refused.value.code == "outside_inbox"
    assert dataclasses.is_dataclass(config)
