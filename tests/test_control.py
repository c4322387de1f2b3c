"""The one config merge that SIGHUP, POST /reload and POST /logging share, and the stage
registry's rules for models (pure: no daemon, no model loaded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daemon.config import config_from_dict
from daemon.control import RESTART_ONLY, merge_config
from daemon.errors import ConfigError
from daemon.models import ModelCache
from daemon.pipeline import Pipeline, Skip, build_stages
from testkit.daemon import make_config


def config(tmp_path: Path, **tables: dict) -> object:
    return config_from_dict(tables, base=tmp_path)


def test_live_values_apply_and_restart_only_values_wait(tmp_path: Path) -> None:
    old = config(tmp_path)
    new = config(tmp_path, output={"max_line_chars": 30}, whisper={"model": "base.en"},
                 http={"token": "t", "port": 9999}, watch={"mode": "poll",
                                                         "settle_seconds": 1.0})
    merge = merge_config(old, new)
    assert merge.applied == ["watch", "output", "http"]
    assert merge.restart_needed == ["whisper", "watch.mode", "http.port"]
    running = merge.config
    assert running.output.max_line_chars == 30 and running.watch.settle_seconds == 1.0
    assert running.http.token == "t"
    assert (running.whisper, running.watch.mode, running.http.port) == \
        (old.whisper, old.watch.mode, old.http.port)


def test_the_stream_cap_applies_live_and_the_history_budget_waits(tmp_path: Path) -> None:
    old = config(tmp_path)
    new = config(tmp_path, http={"max_event_streams": 8, "history_bytes": 1 << 20})
    merge = merge_config(old, new)
    assert merge.restart_needed == ["http.history_bytes"]  # the bus was sized at start
    assert merge.config.http.max_event_streams == 8  # read at each new stream
    assert merge.config.http.history_bytes == old.http.history_bytes


def test_the_same_config_applies_nothing(tmp_path: Path) -> None:
    merge = merge_config(config(tmp_path), config(tmp_path))
    assert merge.applied == [] and merge.restart_needed == []


def test_every_restart_only_name_exists(tmp_path: Path) -> None:
    base = config(tmp_path)
    for name in RESTART_ONLY:
        table, _, key = name.partition(".")
        section = getattr(base, table)
        assert not key or key in {f.name for f in dataclasses.fields(section)}, name


def test_optional_stages_that_are_off_are_stand_ins(tmp_path: Path) -> None:
    stages = build_stages(make_config(tmp_path))
    assert [s.name for s in stages] == ["decode", "vad", "draft", "separation", "transcribe"]
    assert [type(s) is Skip for s in stages] == [False, False, True, False, False]
    assert all(s.models() == () for s in stages if isinstance(s, Skip))


def test_a_preload_name_no_stage_uses_is_a_config_error(tmp_path: Path) -> None:
    config = make_config(tmp_path, models={"preload": ["sensevoice"]})  # whisper mode: no drafts
    with pytest.raises(ConfigError, match="models.preload contains 'sensevoice'"):
        Pipeline(config, ModelCache(1)).prepare()
    config = make_config(tmp_path, models={"preload": ["demucs"]}, separation={"mode": "off"})
    with pytest.raises(ConfigError, match="models.preload contains 'demucs'"):
        Pipeline(config, ModelCache(1)).prepare()
