"""`subwatch transcribe` as a person at a terminal and a script see it, with the real pipeline.

The terminal is a pseudo-terminal of a known size (tqdm asks the terminal, not $COLUMNS); its
output is split on carriage returns and newlines, so a log record that splices into the bar shows
up as a bar line with log text in it. The models load lazily (`models.preload = []`), so their
INFO records are logged while the first bar is on screen, the case that broke the bar.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from daemon.terminal import clock, logs_above_bars
from testkit.daemon import ROOT, as_at_a_terminal
from testkit.media import Speech

BAR = "%|"  # tqdm's percentage and the bar's left edge
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"  # the text log format's asctime
LOG_PREFIX = "^" + STAMP + r" [A-Z]+ "
LOG_LINE = re.compile("^" + STAMP + r" INFO +daemon\.models\b.*: loaded model ")


@pytest.fixture
def wavs(tmp_path: Path, short_wav: Path) -> list[Path]:
    return [Path(shutil.copy(short_wav, tmp_path / name)) for name in ("a.wav", "b.wav")]


@pytest.fixture
def lazy_config(tmp_path: Path) -> Path:
    path = tmp_path / "lazy.toml"
    path.write_text("[models]\npreload = []\n")
    return path


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    return {**env, "TERM": "xterm", "COLUMNS": "100"}


def run_in_pty(*args: str | Path, timeout: float = 120) -> tuple[int, str]:
    """`python -m daemon ARGS` with a 100-column pseudo-terminal as stdin, stdout and stderr."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "daemon", *map(str, args)], cwd=ROOT,
                            stdin=slave, stdout=slave, stderr=slave, env=child_env())
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout=30), b"".join(chunks).decode()


def screen_lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def bar_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if BAR in line]


def test_terminal_bar_stays_clean_and_a_table_sums_up(
        tmp_path: Path, wavs: list[Path], lazy_config: Path, short_speech: Speech) -> None:
    out = tmp_path / "subs"
    code, text = run_in_pty("transcribe", *wavs, "--config", lazy_config, "-o", out)
    lines = screen_lines(text)
    assert code == 0, text
    bars = bar_lines(lines)
    assert any(line.startswith("[1/2] a.wav") for line in bars), text
    assert any(line.startswith("[2/2] b.wav") for line in bars), text
    assert [line for line in bars if "INFO" in line or "daemon." in line] == []
    assert not any("INFO" in line for line in lines), "INFO lines show only with -v"
    assert any("transcribe" in line and "× real time" in line for line in bars), bars
    audio = clock(short_speech.duration)
    for name in ("a", "b"):
        (row,) = [line for line in lines if line.startswith(f"{name}.wav ")]
        assert audio in row and str(out / f"{name}.en.srt") in row, row
    assert any(re.fullmatch(r"file +audio +took +speed +subtitles", line) for line in lines)
    assert f"2 files: {clock(2 * short_speech.duration)} of audio in" in text


def test_verbose_terminal_prints_info_lines_whole_above_the_bar(
        tmp_path: Path, wavs: list[Path], lazy_config: Path) -> None:
    code, text = run_in_pty("transcribe", wavs[0], "-v", "--config", lazy_config,
                            "-o", tmp_path / "subs")
    lines = screen_lines(text)
    assert code == 0, text
    logged = [i for i, line in enumerate(lines) if LOG_LINE.match(line)]
    assert len(logged) == 2, text  # the VAD and the Whisper model, both while the bar is up
    assert [line for line in bar_lines(lines) if "INFO" in line or "daemon." in line] == []
    assert all(BAR in lines[i + 1] for i in logged), "the bar comes back below each record"


def test_without_a_terminal_no_bar_no_control_characters(
        tmp_path: Path, wavs: list[Path]) -> None:
    out, missing = tmp_path / "subs", tmp_path / "missing.wav"
    done = subprocess.run([sys.executable, "-m", "daemon", "transcribe", *map(str, wavs),
                           str(missing), "-o", str(out)], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    for stream in (done.stdout, done.stderr):
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", stream), repr(stream)
    assert done.stdout.splitlines() == [str(out / "a.en.srt"), str(out / "b.en.srt")]
    plain = [line for line in done.stderr.splitlines() if not re.match(LOG_PREFIX, line)]
    assert len(plain) == 3, done.stderr
    for name, line in zip(("a", "b"), plain, strict=False):
        assert re.fullmatch(rf"{name}\.wav: [\d.]+ s of audio in [\d.]+ s \([\d.]+× real time\) "
                            rf"→ {re.escape(str(out / f'{name}.en.srt'))}", line), line
    assert plain[2].startswith(f"subwatch: {str(missing)!r}: ")


def test_log_records_pass_above_bars_and_the_handler_is_restored() -> None:
    stream, root = io.StringIO(), logging.getLogger()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    log, level = logging.getLogger("daemon.test_terminal"), root.level
    root.setLevel(logging.INFO)
    try:
        with logs_above_bars(stream, logging.WARNING):
            log.info("hidden on a terminal")
            log.warning("shown above the bar")
            assert handler.stream is not stream
        log.info("as configured again")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert stream.getvalue() == "shown above the bar\nas configured again\n"
    assert handler.stream is stream and handler.level == logging.NOTSET


def test_ctrl_c_during_transcribe_is_one_line_and_exit_1(tmp_path: Path) -> None:
    from testkit.speech import long_speech_wav

    wav = long_speech_wav(tmp_path / "long.wav", 12)
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "transcribe", str(wav), "-o",
                             str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=as_at_a_terminal)
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "loaded model whisper" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()  # INFO lines on stderr: the work has begun
    proc.send_signal(2)  # SIGINT, as Ctrl-C sends
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and err.strip().endswith("subwatch: interrupted")
    assert not list((tmp_path / "out").glob("*.srt"))  # stopped before anything was written


def test_two_inputs_that_would_write_one_subtitle_are_refused_before_any_work(
        tmp_path: Path, short_wav: Path) -> None:
    """`transcribe a/x.wav b/x.mp3 -o subs`: both would be subs/x.en.srt, the second silently
    replacing the first; the run is refused at once (exit 2), naming both."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Path(shutil.copy(short_wav, tmp_path / "a" / "x.wav"))
    second = Path(shutil.copy(short_wav, tmp_path / "b" / "x.mp3"))
    out = tmp_path / "subs"
    done = subprocess.run([sys.executable, "-m", "daemon", "transcribe", str(first),
                           str(second), "-o", str(out)], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert str(first) in done.stderr and str(second) in done.stderr
    assert not out.exists()
