"""Config: refused with one line naming the key; defaults run as is; CLI exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import Config, config_from_dict, load_config
from daemon.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("raw, key", [
    ({"bogus": {}}, "[bogus]"),
    ({"watch": {"nope": 1}}, "watch.nope"),
    ({"watch": {"mode": "inotify"}}, "watch.mode"),
    ({"watch": {"settle_seconds": "5"}}, "watch.settle_seconds"),
    ({"watch": {"settle_seconds": -1}}, "watch.settle_seconds"),
    ({"watch": {"recursive": 1}}, "watch.recursive"),
    ({"watch": {"extensions": "mp4"}}, "watch.extensions"),
    ({"jobs": {"workers": -1}}, "jobs.workers"),
    ({"jobs": {"workers": 1.5}}, "jobs.workers"),
    ({"jobs": {"on_success": "archive"}}, "jobs.on_success"),
    ({"jobs": {"max_duration": -1}}, "jobs.max_duration"),
    ({"jobs": {"max_duration": "6h"}}, "jobs.max_duration"),
    ({"output": {"formats": ["srt", "docx"]}}, "output.formats"),
    ({"output": {"name_template": "{stem}.srt"}}, "output.name_template"),
    ({"output": {"name_template": "../{stem}.{ext}"}}, "output.name_template"),
    ({"output": {"name_template": "{stem}.{title}.{ext}"}}, "output.name_template"),
    ({"output": {"min_cue_seconds": 8}}, "output.min_cue_seconds"),
    ({"models": {"memory_threshold": 1.5}}, "models.memory_threshold"),
    ({"models": {"preload": ["gpt"]}}, "models.preload"),
    ({"whisper": {"compute_type": "int3"}}, "whisper.compute_type"),
    ({"whisper": {"language": "English"}}, "whisper.language"),
    ({"whisper": {"task": "summarise"}}, "whisper.task"),
    ({"http": {"port": 70000}}, "http.port"),
    ({"logging": {"level": "LOUD"}}, "logging.level"),
    ({"paths": "inbox"}, "[paths]"),
])
def test_bad_values_are_refused_naming_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, base=Path("/tmp"))
    message = str(info.value)
    assert key in message and "\n" not in message


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[paths]\ninbox = "in"\n[watch]\nsettle_seconds = 2\n')
    config = load_config(path)
    assert config.paths.inbox == tmp_path / "in"
    assert config.paths.outbox == tmp_path / "outbox"
    assert config.watch.settle_seconds == 2.0 and isinstance(config.watch.settle_seconds, float)
    assert config.output.max_line_chars == Config().output.max_line_chars


def test_path_map_to_is_relative_to_the_config_folder_and_from_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[path_maps]]\nfrom = "/data/tv"\nto = "media/tv"\n'
                    '[[path_maps]]\nfrom = "D:\\\\Films"\nto = "/mnt/films"\n')
    maps = load_config(path).path_maps
    assert [(m.from_, m.to) for m in maps] == [("/data/tv", str(tmp_path / "media" / "tv")),
                                              ("D:\\Films", "/mnt/films")]


def test_max_duration_defaults_to_six_hours_and_zero_turns_it_off() -> None:
    assert config_from_dict({}, base=ROOT).jobs.max_duration == 21600.0
    assert config_from_dict({"jobs": {"max_duration": 0}}, base=ROOT).jobs.max_duration == 0


def test_shipped_config_is_the_defaults() -> None:
    config = load_config(ROOT / "config.toml")
    defaults = config_from_dict({}, base=ROOT)
    assert config.to_dict() == defaults.to_dict()


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[watch\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_check_config_exit_codes(tmp_path: Path) -> None:
    ok = run_cli("check-config", "--config", str(ROOT / "config.toml"))
    assert ok.returncode == 0, ok.stderr
    assert "[whisper]" in ok.stdout and 'model = "tiny.en"' in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[jobs]\nworkers = -2\n")
    refused = run_cli("check-config", "--config", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "jobs.workers" in refused.stderr
    missing = run_cli("check-config", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    usage = run_cli("frobnicate")
    assert usage.returncode == 2


def test_run_refuses_bad_config_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[watch]\nmode = "sometimes"\n')
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 2 and "watch.mode" in result.stderr
    assert not (tmp_path / "state").exists()


def test_workers_zero_means_from_the_cores(tmp_path: Path) -> None:
    """jobs.workers = 0: two single-threaded jobs on 2 cores (what bench/many_files.py found
    faster there), two threads a job above that; the default stays 1."""
    from daemon.config import auto_workers, config_from_dict

    assert [auto_workers(n) for n in (1, 2, 4, 8, 16)] == [1, 2, 2, 4, 8]
    config = config_from_dict({"jobs": {"workers": 0}}, base=tmp_path)
    assert config.jobs.workers == auto_workers() >= 1
    assert config_from_dict({}, base=tmp_path).jobs.workers == 1
