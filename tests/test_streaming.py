"""A film in bounded memory: decoded audio spooled to disk, read back window by window, and
Whisper fed a group of speech at a time, with the same samples, spans and times as before."""

from __future__ import annotations

import os
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from daemon.domain import SpeechSpan
from daemon.pipeline import Pipeline
from daemon.pipeline.decode import decode
from daemon.pipeline.transcribe import hearing_groups, transcribe
from daemon.pipeline.vad import SileroStream, speech_probabilities
from testkit.media import SR, Speech, encode, write_wav
from testkit.memory import rss_bytes
from testkit.speech import wer

SR16 = 16000


def test_spooled_decode_reads_back_the_same_samples_bit_for_bit(speech_wav: Path,
                                                                 tmp_path: Path) -> None:
    held = decode(speech_wav)
    spooled = decode(speech_wav, spool=tmp_path / "spool")
    try:
        assert spooled.length == held.length
        assert np.array_equal(spooled.read(0, spooled.length), held.samples)
        assert np.array_equal(spooled.read(12_345, 67_890), held.samples[12_345:67_890])
        pieces = list(spooled.blocks(10_000))
        assert max(len(p) for p in pieces) == 10_000
        assert np.array_equal(np.concatenate(pieces), held.samples)
    finally:
        spooled.close()


def test_the_spool_leaves_no_file_behind(speech_wav: Path, tmp_path: Path) -> None:
    """The spool is unlinked from the start: the folder stays empty while the audio is in use
    (a crash leaves nothing to clean), and closing frees the space."""
    folder = tmp_path / "spool"
    audio = decode(speech_wav, spool=folder)
    assert list(folder.iterdir()) == []
    audio.close()
    with pytest.raises(ValueError):
        audio.read(0, 10)


def test_a_failed_decode_closes_its_spool(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + os.urandom(4000))
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(Exception):  # noqa: B017 - which InputError is test_pipeline's business
        decode(bad, spool=tmp_path / "spool")
    assert set(os.listdir("/proc/self/fd")) <= before


def test_decoding_a_long_file_holds_a_frame_not_the_file(tmp_path: Path) -> None:
    """Ten minutes of audio: in memory that is 38 MB of float32 (and 19 MB of int16 while
    joining); spooled, the decoder holds about one frame at a time."""
    rng = np.random.default_rng(3)
    path = encode(tmp_path / "long.flac", (rng.standard_normal(SR * 600) * 0.05)
                  .astype(np.float32))
    tracemalloc.start()
    try:
        audio = decode(path, spool=tmp_path / "spool")
        peak = tracemalloc.get_traced_memory()[1]
        held = decode(path)
        held_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert audio.length == held.length == 600 * SR16
    assert peak < 5 * 2**20, peak
    assert held_peak > 38 * 2**20  # the measure sees what the in-memory path holds
    audio.close()


def test_vad_over_spooled_blocks_equals_the_one_pass(speech_wav: Path, tmp_path: Path) -> None:
    spooled = decode(speech_wav, spool=tmp_path / "spool")
    try:
        stream = SileroStream()
        probs = np.concatenate([*(stream.feed(b) for b in spooled.blocks(7_777)),
                                stream.finish()])
        assert np.array_equal(probs, speech_probabilities(decode(speech_wav).samples))
    finally:
        spooled.close()


def S(a: float, b: float) -> SpeechSpan:  # noqa: N802 - reads like the spans it makes
    return SpeechSpan(int(a * SR16), int(b * SR16))


def test_groups_keep_short_speech_as_one_call() -> None:
    spans = [S(0, 10), S(14, 30), S(40, 55)]
    assert hearing_groups(spans, [], SR16, 240) == [spans]


def test_groups_break_between_windows_at_the_limit() -> None:
    spans = [S(0, 100), S(110, 200), S(210, 300)]
    assert hearing_groups(spans, [], SR16, 240) == [[S(0, 100), S(110, 200)], [S(210, 300)]]


def test_a_window_longer_than_a_group_is_cut_in_a_pause_of_the_voice() -> None:
    window = S(0, 500)
    voice = [S(0.5, 150), S(151, 230), S(231, 400), S(401, 499.5)]
    groups = hearing_groups([window], voice, SR16, 240)
    cuts = [g[0].start / SR16 for g in groups[1:]]
    assert cuts == [230.5, 400.5]
    pieces = [p for g in groups for p in g]
    assert pieces[0].start == window.start and pieces[-1].end == window.end
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))


def test_a_window_with_no_pause_is_cut_hard_at_the_limit() -> None:
    groups = hearing_groups([S(0, 500)], [S(0, 500)], SR16, 240)
    assert [[(p.start / SR16, p.end / SR16) for p in g] for g in groups] == [
        [(0, 240)], [(240, 480)], [(480, 500)]]


def test_whisper_in_small_groups_keeps_words_and_times(pipeline: Pipeline, speech: Speech,
                                                       speech_wav: Path) -> None:
    """Groups of 6 s force several Whisper calls over one file: the words and their times
    come back in the source's timeline as from one call."""
    audio = decode(speech_wav)
    spans = [SpeechSpan(0, audio.length)]
    voice = [S(a, b) for a, b in zip(speech.onsets, speech.ends, strict=True)]
    model = pipeline.model("whisper")
    cfg = pipeline.config.whisper
    whole = transcribe(model, audio, spans, cfg, threading.Event())
    grouped = transcribe(model, audio, spans, cfg, threading.Event(), voice=voice,
                         group_seconds=6.0)
    assert len(hearing_groups(spans, voice, SR16, 6.0)) >= 3
    text = " ".join(s.text for s in grouped.segments)
    assert wer(speech.text, text) <= 0.25, text
    assert len(grouped.segments) > len(whole.segments) / 2
    for onset in speech.onsets:
        starts = [w.start for s in grouped.segments for w in s.words]
        assert min(abs(t - onset) for t in starts) <= 0.5, onset
    indices = [s.index for s in grouped.segments]
    assert indices == sorted(set(indices))
    assert grouped.language == whole.language == "en"


def test_what_a_groups_decoding_freed_is_handed_back_before_the_next_group(
        pipeline: Pipeline, speech: Speech, speech_wav: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder's working memory (each 30 s window's encoder attention, its beams) is freed
    at the end of a group but stayed resident in the C heap: on a film it sat under the next
    group's features and set the peak (366 MiB at 60 minutes; 339 handed back, one process).
    At each later group's start, a trim finds nothing left to hand back."""
    import daemon.pipeline.transcribe as module
    from daemon.models import trim_heap

    resident: list[int] = []  # what a trim at the group's start hands back, in bytes
    gather = module.gathered

    def measured(audio: object, group: object) -> np.ndarray:
        before = rss_bytes()
        trim_heap()
        resident.append(before - rss_bytes())
        return gather(audio, group)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "gathered", measured)
    audio = decode(speech_wav)
    spans = [SpeechSpan(0, audio.length)]
    voice = [S(a, b) for a, b in zip(speech.onsets, speech.ends, strict=True)]
    transcribe(pipeline.model("whisper"), audio, spans, pipeline.config.whisper,
               threading.Event(), voice=voice, group_seconds=6.0)
    assert len(resident) >= 3
    assert max(resident[1:]) < 4 * 2**20, [r // 2**20 for r in resident]


def test_a_job_leaves_nothing_in_the_spool_folder(pipeline: Pipeline, speech_wav: Path) -> None:
    pipeline.run(speech_wav)
    folder = pipeline.config.paths.state_dir / "spool"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_silence_spooled_gives_no_text(pipeline: Pipeline, tmp_path: Path) -> None:
    path = write_wav(tmp_path / "quiet.wav", np.zeros(SR * 3, np.float32))
    assert pipeline.run(path).cues == ()


def test_a_state_dir_that_cannot_hold_the_spool_falls_back_to_the_temp_folder(
        speech_wav: Path, tmp_path: Path) -> None:
    """`subwatch transcribe` with a config whose state_dir is not usable here: the job still
    runs (a file where the folder should be stands for any folder that cannot be made)."""
    state = tmp_path / "state"
    state.write_text("not a folder")
    audio = decode(speech_wav, spool=state / "spool")
    assert audio.length > 0 and state.is_file()
    audio.close()


def test_batched_inference_keeps_words_and_times(pipeline: Pipeline, speech: Speech,
                                                 speech_wav: Path) -> None:
    """whisper.batch_size > 1: the windows go through BatchedInferencePipeline as clips of the
    concatenated speech, and come back in the source's timeline with word timestamps."""
    import dataclasses

    audio = decode(speech_wav)
    windows = [S(max(a - 0.4, 0), b + 0.4) for a, b in zip(speech.onsets, speech.ends,
                                                           strict=True)]
    cfg = dataclasses.replace(pipeline.config.whisper, batch_size=4)
    result = transcribe(pipeline.model("whisper"), audio, windows, cfg, threading.Event())
    text = " ".join(s.text for s in result.segments)
    assert wer(speech.text, text) <= 0.25, text
    starts = [w.start for s in result.segments for w in s.words]
    for onset in speech.onsets:
        assert min(abs(t - onset) for t in starts) <= 0.5, onset
    assert all(s.words for s in result.segments)


def test_clips_pack_windows_into_full_30s_items() -> None:
    from daemon.pipeline.transcribe import batch_clips

    group = [S(0, 10), S(20, 32), S(40, 50), S(60, 100)]
    assert batch_clips(group) == [{"start": 0.0, "end": 22.0}, {"start": 22.0, "end": 32.0},
                             {"start": 32.0, "end": 62.0}, {"start": 62.0, "end": 72.0}]


def test_a_full_spool_disk_is_the_daemons_shortage_not_the_files(tmp_path: Path) -> None:
    """state_dir full: a clear transient error that charges the job no attempt (the worker
    requeues it), the spool closed, no traceback of the close."""
    from daemon.errors import SPOOL_FULL, TransientError, daemon_short
    from testkit.disks import small_tmpfs

    rng = np.random.default_rng(5)
    path = encode(tmp_path / "minute.flac", (rng.standard_normal(SR * 60) * 0.05)
                  .astype(np.float32))
    before = set(os.listdir("/proc/self/fd"))
    with small_tmpfs(tmp_path / "state", "512k") as state:
        with pytest.raises(TransientError) as caught:
            decode(path, spool=state / "spool")
        assert caught.value.code == SPOOL_FULL and daemon_short(caught.value)
        assert "no room for the decoded audio" in str(caught.value)
    assert set(os.listdir("/proc/self/fd")) <= before


def test_the_music_gate_judges_a_spooled_film_without_loading_it(tmp_path: Path) -> None:
    """separation.mode = auto (the default) asks the gate about every span of every job: it
    reads the spans and the gaps near them, the same verdicts as from the whole array, while
    memory holds a span, not ten minutes."""
    from daemon.pipeline.gate import AudioSlices, judge

    rng = np.random.default_rng(9)
    seconds = 600
    path = encode(tmp_path / "long.flac", (rng.standard_normal(SR * seconds) * 0.02)
                  .astype(np.float32))
    audio = decode(path, spool=tmp_path / "spool")
    spans = [S(t, t + 4) for t in range(5, seconds - 10, 10)]
    try:
        tracemalloc.start()
        try:
            lazily = judge(AudioSlices(audio), SR16, spans)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert lazily == judge(audio.read(0, audio.length), SR16, spans)
        assert peak < 8 * 2**20, peak  # the whole film is 38 MB of float32
    finally:
        audio.close()


def test_the_memory_guard_does_not_refuse_what_is_spooled_to_disk(tmp_path: Path) -> None:
    """The decoded-bytes guard (half the memory a process may use) is for audio held in
    memory; spooled, a long film on a small NAS is bounded by jobs.max_duration alone."""
    from daemon.errors import InputError
    from daemon.pipeline.decode import DecodeLimits

    path = write_wav(tmp_path / "a.wav", np.zeros(SR * 3, np.float32))
    tight = DecodeLimits(max_seconds=0, max_bytes=100_000)
    with pytest.raises(InputError):
        decode(path, limits=tight)
    audio = decode(path, limits=tight, spool=tmp_path / "spool")
    assert audio.duration > 2.9
    audio.close()
    with pytest.raises(InputError) as too_long:
        decode(path, limits=DecodeLimits(max_seconds=1.0, max_bytes=0), spool=tmp_path / "s")
    assert too_long.value.code == "too_long"


@pytest.mark.parametrize("ext", ["m4a", "mp3", "ogg", "opus", "flac"])
def test_frames_joined_before_resampling_give_the_same_samples(
        tmp_path: Path, ext: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder resamples ~500 000 samples at a time (an AAC film is 1 024-sample frames:
    a resampler call each cost 1.6 s per 20 minutes); the samples are those of frame by frame,
    bit for bit."""
    import daemon.pipeline.decode as decoding

    rng = np.random.default_rng(2)
    path = encode(tmp_path / f"a.{ext}", (rng.standard_normal(SR * 30) * 0.1)
                  .astype(np.float32))
    joined = decode(path).samples
    monkeypatch.setattr(decoding, "_grouped", lambda frames: frames)
    assert np.array_equal(joined, decode(path).samples)


def test_edits_to_a_spooled_film_read_back_exactly_and_leave_no_file(tmp_path: Path) -> None:
    """What separation puts over the mix (`Audio.editing`) is kept beside the spool, not in
    memory: every later read, across an edit's edges, an overlap of two edits or the whole,
    gives what the same edits give in memory, and a stage that failed keeps none of its own."""
    rng = np.random.default_rng(4)
    path = encode(tmp_path / "film.flac", (rng.standard_normal(SR * 20) * 0.1)
                  .astype(np.float32))
    folder = tmp_path / "spool"
    held, spooled = decode(path), decode(path, spool=folder)
    edits = [(16_000, 48_000, 0.5), (40_000, 90_000, -2.0), (200_000, 200_001, 3.0)]
    try:
        for start, end, factor in edits:
            for audio in (held, spooled):
                with audio.editing(start, end) as samples:
                    samples *= factor
        with pytest.raises(RuntimeError), spooled.editing(100_000, 150_000) as samples:
            samples[:] = 0
            raise RuntimeError("the separation failed half-way")
        assert np.array_equal(spooled.read(0, spooled.length), held.samples)
        for start, end in ((39_990, 48_010), (0, 16_001), (199_999, 200_002), (150_000, 160_000)):
            assert np.array_equal(spooled.read(start, end), held.samples[start:end])
        assert os.listdir(folder) == []
    finally:
        spooled.close()


def test_a_groups_speech_is_gathered_into_one_array_not_pieces_and_their_join(
        tmp_path: Path) -> None:
    """Ten minutes of speech a Whisper call takes were a list of span copies and their join,
    both alive: twice the group. Now the spans are read into one array."""
    from daemon.pipeline.transcribe import gathered

    rng = np.random.default_rng(2)
    path = encode(tmp_path / "long.flac", (rng.standard_normal(SR * 120) * 0.05)
                  .astype(np.float32))
    audio = decode(path, spool=tmp_path / "spool")
    spans = [S(t, t + 5) for t in range(1, 115, 6)]
    try:
        tracemalloc.start()
        try:
            speech = gathered(audio, spans)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert np.array_equal(speech, np.concatenate([audio.read(s.start, s.end) for s in spans]))
        assert peak < 1.2 * speech.nbytes, (peak, speech.nbytes)
    finally:
        audio.close()
