"""The TOML configuration, read once into frozen dataclasses.

Nothing may start half-configured, so every key is checked here, before any other part of the
daemon is built: an unknown key, a wrong type or an impossible value becomes one ConfigError line
that names the key, the value and what is allowed. Relative paths are resolved against the folder
of the config file, so the daemon behaves the same whatever its working directory.
"""

from __future__ import annotations

import dataclasses
import os
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
from .naming import LANG_STYLES, normalize

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


def _nonempty(value: Any) -> str | None:
    return None if value else "a non-empty string"


def _url(value: Any) -> str | None:
    """Empty (not used) or an http(s) address."""
    ok = value == "" or value.startswith(("http://", "https://"))
    return None if ok else "\"\" or an http:// or https:// address"


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
    # Extension to the contract: how often the inbox is walked whole and every candidate looked
    # up in the journal, to catch what events missed (events mode) or what the cheap poll walks
    # skip (poll mode: they ask only about files new or changed since the walk before). Between
    # rescans an event looks only at what it names, so a large library costs little while idle.
    rescan_seconds: float = field(default=900.0, metadata=_check(_positive))


@dataclass(frozen=True)
class JobsConfig:
    # Extension: 0 = from the cores this process may use (`auto_workers`); 1 stays the default.
    workers: int = field(default=1, metadata=_check(_non_negative))
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
    # Issue 13: how `{lang}` is written (Movie.en.srt, Movie.eng.srt, Movie.English.srt), a tag
    # before it ("generated": Movie.generated.en.srt) and the sdh/forced flags after it.
    lang_style: str = field(default="iso639-1", metadata=_check(_choice(*LANG_STYLES)))
    tag: str = ""
    sdh: bool = False
    forced: bool = False


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
    # Extension: faster-whisper's BatchedInferencePipeline, N windows of up to 30 s decoded at
    # once; 1 = off (one window after another); 0 = auto: off on CPU, where it loses
    # (docs/BENCHMARKS.md), 8 on CUDA.
    batch_size: int = field(default=0, metadata=_check(_non_negative))


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
    # Extension (issue 14): the largest body POST /asr and /detect-language take, streamed to
    # state_dir/uploads; a bigger one is refused with 413 before or while it arrives.
    max_upload_bytes: int = field(default=4 * 1024 ** 3, metadata=_check(_positive))
    # Extension: the bytes all uploads together may hold in state_dir/uploads (arriving, or
    # waiting for their job); an upload past it is refused with 503 and Retry-After before its
    # body is read. 0: 4 × max_upload_bytes.
    max_upload_total_bytes: int = field(default=0, metadata=_check(_non_negative))


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


def _redis_url(value: Any) -> str | None:
    ok = value.startswith(("redis://", "rediss://", "unix://"))
    return None if ok else "a redis://, rediss:// or unix:// address"


def _key_prefix(value: Any) -> str | None:
    ok = bool(value) and all(c.isalnum() or c in "-_." for c in value)
    return None if ok else "a name of letters, digits, -, _ and ."


@dataclass(frozen=True)
class ClusterConfig:
    """[cluster] (issue 15): several machines on one library through Redis Streams
    (daemon/cluster/). `name` prefixes every key, so several libraries can share one Redis;
    a worker whose jobs went `claim_timeout` seconds without a heartbeat is taken over."""

    backend: str = field(default="sqlite", metadata=_check(_choice("sqlite", "redis")))
    url: str = field(default="redis://127.0.0.1:6379/0", metadata=_check(_redis_url))
    name: str = field(default="subwatch", metadata=_check(_key_prefix))
    role: str = field(default="all", metadata=_check(_choice("all", "intake", "worker")))
    claim_timeout: float = field(default=60.0, metadata=_check(_positive))
    wait_for_backend: bool = False


@dataclass(frozen=True)
class MediaBrowserServer:
    """[media_servers.jellyfin] and [media_servers.emby] (one API family: MediaBrowser)."""

    url: str = field(default="", metadata=_check(_url))  # e.g. "http://jellyfin:8096"
    api_key: str = ""  # Dashboard → API keys: item look-ups and library refreshes
    hook_secret: str = ""  # when set, /hooks/<server> wants ?secret=<it> (or the http.token)
    refresh: bool = False  # say when a subtitle is written (POST /Library/Media/Updated)
    on_play: bool = False  # queue on playback start too, not only when an item is added


@dataclass(frozen=True)
class PlexServer:
    """[media_servers.plex]."""

    url: str = field(default="", metadata=_check(_url))  # e.g. "http://plex:32400"
    token: str = ""  # X-Plex-Token: item look-ups and section refreshes
    hook_secret: str = ""
    refresh: bool = False  # GET /library/sections/{id}/refresh?path=<folder>
    on_play: bool = False


@dataclass(frozen=True)
class MediaServersConfig:
    jellyfin: MediaBrowserServer = MediaBrowserServer()
    emby: MediaBrowserServer = MediaBrowserServer()
    plex: PlexServer = PlexServer()


@dataclass(frozen=True)
class PathMap:
    """[[path_maps]]: a media server (in a container) sees `from`; this daemon sees `to`."""

    from_: str = field(default="", metadata={"toml": "from", **_check(_nonempty)})
    to: str = field(default="", metadata=_check(_nonempty))


@dataclass(frozen=True)
class NotifyConfig:
    """[notify]: a JSON POST per finished job, kept in state_dir until acknowledged (2xx)."""

    webhook_url: str = field(default="", metadata=_check(_url))
    timeout: float = field(default=10.0, metadata=_check(_positive))
    retry_backoff_seconds: float = field(default=5.0, metadata=_check(_positive))
    max_backoff_seconds: float = field(default=600.0, metadata=_check(_positive))


@dataclass(frozen=True)
class SkipConfig:
    """[skip] (issue 13): media not to transcribe, each rule on its own (see daemon/skips.py)."""

    external_subtitles: bool = True  # a subtitle file beside the media in the target language
    forced_counts: bool = False  # ... where a forced one (x.en.forced.srt) counts too
    embedded_subtitles: bool = True  # a subtitle stream in the file, in the target language
    audio_languages: tuple[str, ...] = ()  # transcribe only these audio languages; () = any
    ignore_file: str = ".subwatchignore"  # in the media's folder or a parent; "" = off
    min_duration: float = field(default=0.0, metadata=_check(_non_negative))  # seconds, 0 = off
    globs: tuple[str, ...] = ()  # library-relative, e.g. "**/Extras/**", "*-trailer.*"


@dataclass(frozen=True)
class LibraryWatch:
    mode: str = field(default="", metadata=_check(_choice("auto", "events", "poll")))


@dataclass(frozen=True)
class LibraryConfig:
    """[[libraries]] (issue 13): a media library watched besides the inbox (daemon/libraries.py).
    `output = "sidecar"` writes each subtitle beside its media file; `language` (any spelling,
    "" = whisper.language) is what its media is transcribed in; `watch.mode` "" = [watch]."""

    name: str = ""
    path: Path = Path("")
    output: str = field(default="outbox", metadata=_check(_choice("outbox", "sidecar")))
    language: str = ""
    watch: LibraryWatch = LibraryWatch()


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
    cluster: ClusterConfig = ClusterConfig()
    media_servers: MediaServersConfig = MediaServersConfig()
    path_maps: tuple[PathMap, ...] = ()
    notify: NotifyConfig = NotifyConfig()
    skip: SkipConfig = SkipConfig()
    libraries: tuple[LibraryConfig, ...] = ()
    source: Path | None = None  # the file it was read from, for messages and reloads

    def to_dict(self) -> dict[str, Any]:
        """The effective config as plain data (what `check-config` prints)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                table = dataclasses.asdict(value)  # type: ignore[arg-type]
                out[f.name] = {k: _plain(v) for k, v in table.items()}
            elif isinstance(value, tuple):  # [[name]] tables, keys as spelled in TOML
                out[f.name] = [{g.metadata.get("toml", g.name): _plain(getattr(item, g.name))
                                if not dataclasses.is_dataclass(getattr(item, g.name)) else
                                dataclasses.asdict(getattr(item, g.name))
                                for g in dataclasses.fields(item)} for item in value]
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
        if not isinstance(value, dict) and typing.get_origin(hints[name]) is not tuple:
            raise ConfigError(f"[{name}] must be a table, got {value!r}")
        tables[name] = _convert(name, hints[name], value)  # a table, or [[name]] tables
    config = Config(**tables, source=source)
    _check_cross(config)
    extensions = tuple(dict.fromkeys(e.lower() for e in config.watch.extensions))
    config = dataclasses.replace(
        config, watch=dataclasses.replace(config.watch, extensions=extensions),
        jobs=dataclasses.replace(config.jobs, workers=config.jobs.workers or auto_workers()))
    return _check_libraries(_resolve_paths(config, base))


def auto_workers(cores: int | None = None) -> int:
    """`jobs.workers = 0`: jobs at once for the cores this process may use. On 2 cores, two
    single-threaded jobs finish a queue of short files 1.4x sooner than one job on both
    (docs/BENCHMARKS.md); above that, two threads a job (CTranslate2's gain per thread falls
    off, and each worker holds its own copy of the model's working memory)."""
    cores = cores or len(os.sched_getaffinity(0))
    return cores if cores <= 2 else max(1, cores // 2)


def _build_section(section: str, cls: type, values: dict[str, Any]) -> Any:
    # a key may be spelled otherwise in TOML than in Python (`from`, a keyword)
    fields = {f.metadata.get("toml", f.name): f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{section}.{key}"
        if key not in fields:
            raise ConfigError(f"unknown key {name}; allowed: {', '.join(fields)}")
        converted = _convert(name, hints[fields[key].name], value)
        validate = fields[key].metadata.get("validate")
        problem = validate(converted) if validate else None
        if problem:
            raise ConfigError(f"{name} = {value!r} is not allowed; expected {problem}")
        kwargs[fields[key].name] = converted
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
    if dataclasses.is_dataclass(hint):  # a table inside a table ([media_servers.plex])
        if not isinstance(value, dict):
            raise wrong
        return _build_section(name, hint, value)  # type: ignore[arg-type]
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0]):  # [[name]]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise wrong
        item = typing.get_args(hint)[0]
        return tuple(_build_section(f"{name}[{i}]", item, v) for i, v in enumerate(value))
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
    if dataclasses.is_dataclass(hint):
        return "a table"
    if typing.get_origin(hint) is tuple and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        return "a list of tables ([[name]])"
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
    _check_languages(config)
    if config.cluster.role != "all" and config.cluster.backend != "redis":
        raise ConfigError(f"cluster.role = {config.cluster.role!r} needs cluster.backend = "
                          "\"redis\" (one SQLite journal has one daemon: it watches and works)")


def _check_languages(config: Config) -> None:
    """Languages in any spelling the naming table knows (`ja`, `jpn`, `Japanese`)."""
    named = [(f"libraries[{i}].language", lib.language)
             for i, lib in enumerate(config.libraries) if lib.language]
    named += [("skip.audio_languages", lang) for lang in config.skip.audio_languages]
    for key, lang in named:
        if normalize(lang) is None:
            raise ConfigError(f"{key} = {lang!r} is not allowed; expected a language code or "
                              "English name (\"en\", \"eng\", \"English\")")
    tag = config.output.tag
    if tag and not all(c.isalnum() or c in "-_" for c in tag):
        raise ConfigError(f"output.tag = {tag!r} is not allowed; expected letters, digits, - "
                          "and _ (e.g. \"generated\")")
    ignore = config.skip.ignore_file
    if "/" in ignore or ignore in (".", ".."):
        raise ConfigError(f"skip.ignore_file = {ignore!r} is not allowed; expected a file name")


def _check_libraries(config: Config) -> Config:
    """[[libraries]] after paths are resolved: each named once, with a path, and no watched
    folder inside another (a file would be two jobs) nor the state_dir inside a library
    (nothing but subtitles is written into one)."""
    roots = [("paths.inbox", config.paths.inbox)]
    for i, lib in enumerate(config.libraries):
        where = f"libraries[{i}]"
        if not lib.name or not all(c.isalnum() or c in "-_." for c in lib.name) \
                or lib.name.startswith(".") or lib.name == "inbox":
            raise ConfigError(f"{where}.name = {lib.name!r} is not allowed; expected a name of "
                              "letters, digits, -, _ and . (not \"inbox\")")
        if str(lib.path) in ("", "."):
            raise ConfigError(f"{where} ({lib.name}) needs path = the library's folder")
        if any(lib.name == other.name for other in config.libraries[:i]):
            raise ConfigError(f"{where}.name = {lib.name!r} is used twice; names must differ")
        if config.paths.state_dir.is_relative_to(lib.path):
            raise ConfigError(f"paths.state_dir is inside library {lib.name!r} ({lib.path}); "
                              "keep the journal outside the media")
        roots.append((f"{where}.path", lib.path))
    for n, (key, root) in enumerate(roots):
        for other_key, other in roots[:n]:
            if root.is_relative_to(other) or other.is_relative_to(root):
                raise ConfigError(f"{key} = {str(root)!r} overlaps {other_key} = "
                                  f"{str(other)!r}; watched folders must not contain each other")
    return config


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
    for i, path_map in enumerate(config.path_maps):
        if not (path_map.from_ and path_map.to):
            raise ConfigError(f"path_maps[{i}] needs both `from` (the media server's path) "
                              "and `to` (the same folder as this daemon sees it)")
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
    http = config.http
    if 0 < http.max_upload_total_bytes < http.max_upload_bytes:
        raise ConfigError(
            f"http.max_upload_total_bytes = {http.max_upload_total_bytes} is not allowed; "
            f"expected 0 or at least http.max_upload_bytes ({http.max_upload_bytes})")


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
    libraries = tuple(dataclasses.replace(lib, path=_absolute(base, lib.path))
                      if str(lib.path) not in ("", ".") else lib for lib in config.libraries)
    # `to` is one of our paths (`from` is the server's, taken as written).
    path_maps = tuple(dataclasses.replace(m, to=str(_absolute(base, Path(m.to))))
                      if m.to else m for m in config.path_maps)
    return dataclasses.replace(config, paths=resolved, logging=logging_cfg, models=models,
                               whisper=whisper, libraries=libraries, path_maps=path_maps,
                               **_model_folders(config, base))


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
