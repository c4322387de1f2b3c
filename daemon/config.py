"""The TOML configuration, read once into frozen dataclasses.

Nothing may start half-configured, so every key is checked here, before any other part of the
daemon is built: an unknown key, a wrong type or an impossible value becomes one ConfigError line
that names the key, the value and what is allowed. Relative paths are resolved against the folder
of the config file, so the daemon behaves the same whatever its working directory.
"""

from __future__ import annotations

import dataclasses
import string
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):  # noqa: UP036 - the issue asks tomli to keep 3.10 working
    import tomllib
else:  # pragma: no cover - the project targets 3.11+, tomli keeps 3.10 working
    import tomli as tomllib

from .errors import ConfigError

MEDIA_EXTENSIONS = (
    "mp3", "wav", "m4a", "flac", "ogg", "opus", "aac", "wma",
    "mp4", "mkv", "mov", "avi", "webm", "ts", "m2ts",
)
OUTPUT_FORMATS = ("srt", "vtt", "json", "txt")
PRELOADABLE = ("vad", "whisper", "demucs", "sensevoice")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _choice(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else "one of " + " | ".join(allowed)
    return check


def _positive(value: Any) -> str | None:
    return None if value > 0 else "a number > 0"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "a number >= 0"


def _fraction(value: Any) -> str | None:
    return None if 0 < value <= 1 else "a fraction in (0, 1]"


def _port(value: Any) -> str | None:
    return None if 0 <= value <= 65535 else "a port number 0..65535"


def _check(validator: Callable[[Any], str | None]) -> dict[str, Any]:
    return {"validate": validator}


@dataclass(frozen=True)
class PathsConfig:
    inbox: Path = Path("inbox")
    outbox: Path = Path("outbox")
    state_dir: Path = Path("state")


@dataclass(frozen=True)
class WatchConfig:
    mode: str = field(default="auto", metadata=_check(_choice("auto", "events", "poll")))
    poll_interval: float = field(default=5.0, metadata=_check(_positive))
    settle_seconds: float = field(default=5.0, metadata=_check(_non_negative))
    recursive: bool = True
    extensions: tuple[str, ...] = MEDIA_EXTENSIONS
    # Extension to the contract: how often events mode re-walks the inbox to catch what inotify
    # missed (queue overflow, files that appeared while the watch was being set up).
    rescan_seconds: float = field(default=60.0, metadata=_check(_positive))


@dataclass(frozen=True)
class JobsConfig:
    workers: int = field(default=1, metadata=_check(_positive))
    max_attempts: int = field(default=3, metadata=_check(_positive))
    retry_backoff_seconds: float = field(default=30.0, metadata=_check(_non_negative))
    on_success: str = field(default="keep", metadata=_check(_choice("keep", "move", "delete")))
    skip_existing: bool = True
    # Extension: how long a stop waits for running jobs to reach a safe point before leaving.
    grace_seconds: float = field(default=20.0, metadata=_check(_non_negative))
    # Seconds of audio one input may hold (0 = no limit): a longer one fails for good, found
    # from its header before decoding, and on the samples while decoding (headers lie).
    max_duration: float = field(default=21600.0, metadata=_check(_non_negative))


@dataclass(frozen=True)
class OutputConfig:
    formats: tuple[str, ...] = ("srt",)
    name_template: str = "{stem}.{lang}.{ext}"
    max_line_chars: int = field(default=42, metadata=_check(_positive))
    max_lines: int = field(default=2, metadata=_check(_positive))
    min_cue_seconds: float = field(default=0.8, metadata=_check(_non_negative))
    max_cue_seconds: float = field(default=7.0, metadata=_check(_positive))
    max_cps: float = field(default=20.0, metadata=_check(_positive))


@dataclass(frozen=True)
class ModelsConfig:
    cache_size: int = field(default=3, metadata=_check(_positive))
    memory_threshold: float = field(default=0.8, metadata=_check(_fraction))
    preload: tuple[str, ...] = ("vad", "whisper")
    idle_unload_seconds: float = field(default=600.0, metadata=_check(_non_negative))
    download_root: str = ""
    download_timeout: float = field(default=600.0, metadata=_check(_positive))
    mirror_url: str = ""


@dataclass(frozen=True)
class WhisperConfig:
    model: str = "tiny.en"
    device: str = field(default="auto", metadata=_check(_choice("auto", "cpu", "cuda")))
    compute_type: str = "auto"
    language: str = "auto"
    task: str = field(default="transcribe", metadata=_check(_choice("transcribe", "translate")))
    beam_size: int = field(default=5, metadata=_check(_positive))
    # Extension: CPU threads for CTranslate2; 0 = the cores this process may use / workers.
    cpu_threads: int = field(default=0, metadata=_check(_non_negative))


@dataclass(frozen=True)
class VadConfig:
    threshold: float = field(default=0.5, metadata=_check(_fraction))
    min_silence_ms: int = field(default=500, metadata=_check(_non_negative))
    speech_pad_ms: int = field(default=300, metadata=_check(_non_negative))
    max_chunk_seconds: float = field(default=30.0, metadata=_check(_positive))
    # Extension: the cut for what Whisper hears (wide: context helps recognition, most of all
    # under noise), apart from the fine cut above that times the cues. Same VAD pass.
    whisper_min_silence_ms: int = field(default=2000, metadata=_check(_non_negative))
    whisper_pad_ms: int = field(default=400, metadata=_check(_non_negative))


PIPELINE_MODES = ("whisper", "dual", "patch", "sensevoice")


@dataclass(frozen=True)
class PipelineConfig:
    # whisper: Whisper alone (its segments are the drafts); dual: SenseVoice drafts, Whisper
    # finals; patch: Whisper only where a draft is doubtful; sensevoice: drafts are final.
    mode: str = field(default="whisper", metadata=_check(_choice(*PIPELINE_MODES)))
    # Extension: in patch mode, a span group whose drafts are all at least this confident
    # keeps them as finals; anything less goes through Whisper.
    patch_min_confidence: float = field(default=0.7, metadata=_check(_fraction))


@dataclass(frozen=True)
class SeparationConfig:
    mode: str = field(default="auto", metadata=_check(_choice("off", "auto", "always")))
    model: str = "htdemucs"
    repo: str = ""
    device: str = field(default="auto", metadata=_check(_choice("auto", "cpu", "cuda")))
    # Extension: Demucs runs over at most this much audio at a time (memory stays a block's).
    block_seconds: float = field(default=30.0, metadata=_check(_positive))


@dataclass(frozen=True)
class SenseVoiceConfig:
    enabled: bool = False
    model: str = ""
    device: str = field(default="cpu", metadata=_check(_choice("auto", "cpu", "cuda")))


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = field(default=8750, metadata=_check(_port))
    token: str = ""
    history_size: int = field(default=1000, metadata=_check(_positive))
    # Extension: host names (besides the bound address and localhost) that requests may name in
    # their Host header, e.g. ["nas.local"]; anything else is refused (DNS-rebinding guard).
    allowed_hosts: tuple[str, ...] = ()
    # Extension: SSE readers at once (each holds a descriptor); more get 503 with Retry-After.
    max_event_streams: int = field(default=64, metadata=_check(_positive))
    # Extension: memory for event history (replays, /events/history); oldest finished jobs go
    # first. history_size bounds the events per job and the jobs kept.
    history_bytes: int = field(default=64 * 1024 * 1024, metadata=_check(_positive))


@dataclass(frozen=True)
class LoggingConfig:
    level: str = field(default="INFO", metadata=_check(_choice(*LOG_LEVELS)))
    format: str = field(default="auto", metadata=_check(_choice("auto", "text", "json")))
    dir: str = ""
    max_bytes: int = field(default=10 * 1024 * 1024, metadata=_check(_positive))
    backup_count: int = field(default=5, metadata=_check(_non_negative))
    # [logging.levels]: per-logger levels, e.g. faster_whisper = "DEBUG" (third-party loggers
    # default to WARNING)
    levels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = PathsConfig()
    watch: WatchConfig = WatchConfig()
    jobs: JobsConfig = JobsConfig()
    output: OutputConfig = OutputConfig()
    models: ModelsConfig = ModelsConfig()
    whisper: WhisperConfig = WhisperConfig()
    vad: VadConfig = VadConfig()
    pipeline: PipelineConfig = PipelineConfig()
    separation: SeparationConfig = SeparationConfig()
    sensevoice: SenseVoiceConfig = SenseVoiceConfig()
    http: HttpConfig = HttpConfig()
    logging: LoggingConfig = LoggingConfig()
    source: Path | None = None  # the file it was read from, for messages and reloads

    def to_dict(self) -> dict[str, Any]:
        """The effective config as plain data (what `check-config` prints)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                table = dataclasses.asdict(value)  # type: ignore[arg-type]
                out[f.name] = {k: _plain(v) for k, v in table.items()}
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def load_config(path: str | Path | None) -> Config:
    """Read, check and resolve a config file; None gives the built-in defaults (cwd-relative)."""
    if path is None:
        return _resolve_paths(Config(), Path.cwd())
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return config_from_dict(raw, base=path.resolve().parent, source=path.resolve())


def config_from_dict(raw: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Build a Config from parsed TOML; every problem is a ConfigError naming the key."""
    tables: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    sections = {f.name for f in dataclasses.fields(Config) if f.name != "source"}
    for name, value in raw.items():
        if name not in sections:
            raise ConfigError(f"unknown table [{name}]; allowed: {', '.join(sorted(sections))}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table, got {value!r}")
        tables[name] = _build_section(name, hints[name], value)
    config = Config(**tables, source=source)
    _check_cross(config)
    extensions = tuple(dict.fromkeys(e.lower() for e in config.watch.extensions))
    config = dataclasses.replace(
        config, watch=dataclasses.replace(config.watch, extensions=extensions))
    return _resolve_paths(config, base)


def _build_section(section: str, cls: type, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{section}.{key}"
        if key not in fields:
            raise ConfigError(f"unknown key {name}; allowed: {', '.join(fields)}")
        converted = _convert(name, hints[key], value)
        validate = fields[key].metadata.get("validate")
        problem = validate(converted) if validate else None
        if problem:
            raise ConfigError(f"{name} = {value!r} is not allowed; expected {problem}")
        kwargs[key] = converted
    return cls(**kwargs)


# TOML types accepted for each scalar field type (ints where floats are; never bools as numbers)
_SCALARS: dict[Any, tuple[type, ...]] = {bool: (bool,), int: (int,), float: (int, float),
                                         str: (str,)}


def _convert(name: str, hint: Any, value: Any) -> Any:
    """Check a TOML value against a field's type hint; ints are accepted where floats are."""
    wrong = ConfigError(f"{name} = {value!r} has the wrong type; expected {_type_name(hint)}")
    origin = typing.get_origin(hint)
    if hint in _SCALARS:
        if not _is_scalar(hint, value):
            raise wrong
        return float(value) if hint is float else value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise wrong
        return Path(value)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong
        return tuple(value)
    if origin is dict:
        return _log_levels(name, value)
    raise wrong  # pragma: no cover - every field type is handled above


def _is_scalar(hint: type, value: Any) -> bool:
    return isinstance(value, _SCALARS[hint]) and (hint is bool or not isinstance(value, bool))


def _log_levels(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{name} = {value!r} has the wrong type; expected a table of "
                          "logger = \"LEVEL\"")
    for logger, level in value.items():
        if level.upper() not in LOG_LEVELS:
            raise ConfigError(f"{name}.{logger} = {level!r} is not allowed; expected one of "
                              + " | ".join(LOG_LEVELS))
    return {k: v.upper() for k, v in value.items()}


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    if typing.get_origin(hint) is dict:
        return "a table"
    if hint is Path:
        return "a path string"
    if isinstance(hint, (type, types.GenericAlias)):
        return {"bool": "true or false", "int": "an integer", "float": "a number",
                "str": "a string"}.get(getattr(hint, "__name__", ""), str(hint))
    return str(hint)  # pragma: no cover


def _check_cross(config: Config) -> None:
    """Checks that involve more than one value or a list's members."""
    _check_lists(config)
    _check_template(config.output.name_template)
    _check_values(config)


def _check_lists(config: Config) -> None:
    for ext in config.watch.extensions:
        if not ext or "/" in ext or ext.startswith("."):
            raise ConfigError(
                f"watch.extensions contains {ext!r}; expected bare extensions like \"mp4\"")
    for fmt in config.output.formats:
        if fmt not in OUTPUT_FORMATS:
            raise ConfigError(
                f"output.formats contains {fmt!r}; allowed: {' | '.join(OUTPUT_FORMATS)}")
    if not config.output.formats:
        raise ConfigError("output.formats = [] is not allowed; expected at least one format")
    for name in config.models.preload:
        if name not in PRELOADABLE:
            raise ConfigError(
                f"models.preload contains {name!r}; allowed: {' | '.join(PRELOADABLE)}")


def _check_values(config: Config) -> None:
    out = config.output
    if out.min_cue_seconds >= out.max_cue_seconds:
        raise ConfigError(
            f"output.min_cue_seconds = {out.min_cue_seconds} is not allowed; expected less than "
            f"output.max_cue_seconds ({out.max_cue_seconds})")
    if config.whisper.compute_type not in COMPUTE_TYPES:
        raise ConfigError(
            f"whisper.compute_type = {config.whisper.compute_type!r} is not allowed; "
            f"expected one of {' | '.join(COMPUTE_TYPES)}")
    lang = config.whisper.language
    if lang != "auto" and not (len(lang) in (2, 3) and lang.isalpha() and lang.islower()):
        raise ConfigError(
            f"whisper.language = {lang!r} is not allowed; expected \"auto\" or an ISO 639-1 code")
    _check_drafts(config)


def uses_sensevoice(config: Config) -> bool:
    """SenseVoice drafts run in every mode but `whisper`, and in `whisper` when enabled
    (which then behaves as `dual`)."""
    return config.pipeline.mode != "whisper" or config.sensevoice.enabled


def _check_drafts(config: Config) -> None:
    if uses_sensevoice(config) and not config.sensevoice.model:
        why = ("sensevoice.enabled = true" if config.pipeline.mode == "whisper"
               else f"pipeline.mode = {config.pipeline.mode!r}")
        raise ConfigError(f"{why} needs sensevoice.model = the folder of a local SenseVoiceSmall "
                          "model (funasr format: config.yaml, model.pt, tokenizer)")


COMPUTE_TYPES = (
    "auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
    "float16", "bfloat16", "float32",
)


def _check_template(template: str) -> None:
    bad = ConfigError(
        f"output.name_template = {template!r} is not allowed; expected a file name using "
        "{stem}, {lang} and {ext}, for example \"{stem}.{lang}.{ext}\"")
    try:
        names = {n for _, n, _, _ in string.Formatter().parse(template) if n is not None}
    except ValueError:
        raise bad from None
    if not names <= {"stem", "lang", "ext"} or not {"stem", "ext"} <= names:
        raise bad
    if "/" in template or "\\" in template or template.startswith("."):
        raise bad


def _resolve_paths(config: Config, base: Path) -> Config:
    paths = config.paths
    resolved = PathsConfig(*(_absolute(base, p) for p in (paths.inbox, paths.outbox,
                                                           paths.state_dir)))
    log_dir = config.logging.dir
    logging_cfg = config.logging
    if log_dir:
        logging_cfg = dataclasses.replace(logging_cfg, dir=str(_absolute(base, Path(log_dir))))
    models = config.models
    if models.download_root:
        models = dataclasses.replace(
            models, download_root=str(_absolute(base, Path(models.download_root))))
    whisper = config.whisper
    if _looks_like_path(base, whisper.model):
        whisper = dataclasses.replace(whisper, model=str(_absolute(base, Path(whisper.model))))
    return dataclasses.replace(config, paths=resolved, logging=logging_cfg, models=models,
                               whisper=whisper, **_model_folders(config, base))


def _model_folders(config: Config, base: Path) -> dict[str, Any]:
    """Local model folders for separation and SenseVoice, relative to the config's folder."""
    out: dict[str, Any] = {}
    if config.separation.repo:
        out["separation"] = dataclasses.replace(
            config.separation, repo=str(_absolute(base, Path(config.separation.repo))))
    if config.sensevoice.model:
        out["sensevoice"] = dataclasses.replace(
            config.sensevoice, model=str(_absolute(base, Path(config.sensevoice.model))))
    return out


def _looks_like_path(base: Path, name: str) -> bool:
    """A model folder, as opposed to a model name or a hub repo id ("org/name")."""
    return name.startswith((".", "/", "~")) or (base / name).is_dir()


def _absolute(base: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path)


class LiveConfig:
    """The config in force: replaced whole on reload, read by every part at the moment it
    needs a value, so no part keeps a stale copy. Listeners apply what must be pushed (log
    handlers, the watcher's settle time)."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._listeners: list[Callable[[Config], None]] = []

    @property
    def current(self) -> Config:
        return self._config

    def subscribe(self, listener: Callable[[Config], None]) -> None:
        self._listeners.append(listener)

    def replace(self, config: Config) -> None:
        self._config = config
        for listener in self._listeners:
            listener(config)
