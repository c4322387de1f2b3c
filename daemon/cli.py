"""Command line: argument parsing and exit codes, and nothing else decides exit codes.

0 ok, 2 bad config or usage, 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .config import Config, load_config
from .errors import ConfigError, ModelUnavailable, SubwatchError
from .logs import setup_logging
from .pipeline import NullReporter

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .service import Service
    from .writer import Outbox

log = logging.getLogger("subwatch")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 too; keep its wording short
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"subwatch: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="subwatch", description="Watch an inbox and write subtitles.")
    parser.add_argument("--version", action="version", version=f"subwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", type=Path, help="config file (default: built-in defaults)")
    tr = sub.add_parser("transcribe", help="transcribe files once with the same pipeline")
    tr.add_argument("files", nargs="+", type=Path, metavar="FILE")
    tr.add_argument("--config", type=Path)
    tr.add_argument("-o", "--output-dir", type=Path,
                    help="where subtitles go (default: beside each input)")
    st = sub.add_parser("status", help="show the running daemon's status")
    st.add_argument("--url", default=None, help="daemon URL (default: from the config)")
    st.add_argument("--config", type=Path)
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    cc = sub.add_parser("check-config", help="validate and print the effective config")
    cc.add_argument("--config", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"subwatch: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .models import apply_hub_settings

    apply_hub_settings(config.models)  # before anything imports the hub client
    handler = {"run": cmd_run, "transcribe": cmd_transcribe, "status": cmd_status,
               "check-config": cmd_check_config}[args.command]
    return handler(args, config)


# ---------------------------------------------------------------------------- check-config

def cmd_check_config(args: argparse.Namespace, config: Config) -> int:
    from .models import pick_device

    try:
        pick_device(config.whisper.device, "whisper.device")
    except ConfigError as exc:
        print(f"subwatch: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"# effective config{' from ' + str(config.source) if config.source else ''}")
    print(_to_toml(config.to_dict()), end="")
    return EXIT_OK


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    return json.dumps(value, ensure_ascii=False)


def _to_toml(data: dict[str, dict[str, Any]]) -> str:
    lines = []
    for table, values in data.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- run

def cmd_run(args: argparse.Namespace, config: Config) -> int:
    setup_logging(config.logging)
    from .service import AlreadyRunning, Service

    service: Service | None = None
    code = EXIT_OK
    try:
        service = Service(config)
        _run_until_stopped(service)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        code = EXIT_USAGE
    except (ModelUnavailable, AlreadyRunning, OSError) as exc:
        log.error("cannot start: %s", exc)
        code = EXIT_FAILURE
    if service is not None and service.threads_busy:
        # A worker thread is still inside a library call that cannot be interrupted; its job is
        # already back in the queue, so leave without waiting for it.
        logging.shutdown()
        os._exit(code)
    return code


def _run_until_stopped(service: Service) -> None:
    """Like asyncio.run, but without waiting for executor threads at the end: one may be stuck
    in an inference past the grace period, or in a stat of a share that hung."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(service.run())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# ---------------------------------------------------------------------------- transcribe

def cmd_transcribe(args: argparse.Namespace, config: Config) -> int:
    setup_logging(config.logging)
    from .models import ModelCache
    from .pipeline import Pipeline
    from .writer import Outbox

    pipeline = Pipeline(config, ModelCache(config.models.cache_size))
    try:
        pipeline.prepare()
    except ConfigError as exc:
        log.error("config error: %s", exc)
        return EXIT_USAGE
    except ModelUnavailable as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILURE
    failures = 0
    for path in args.files:
        outdir = args.output_dir or path.resolve().parent
        outbox = Outbox(outdir, config.output.name_template, config.output.formats)
        failures += not _transcribe_one(pipeline, outbox, path)
    return EXIT_FAILURE if failures else EXIT_OK


def _transcribe_one(pipeline: Pipeline, outbox: Outbox, path: Path) -> bool:
    bar = _ProgressBar(path.name)
    try:
        transcript = pipeline.run(path, reporter=bar)
        outputs = [] if transcript.no_speech else outbox.write(path.name, transcript)
    except SubwatchError as exc:
        bar.close()
        print(f"subwatch: {str(path)!r}: {exc}", file=sys.stderr)
        return False
    except KeyboardInterrupt:
        bar.close()
        raise
    bar.close()
    if not outputs:
        print(f"{str(path)!r}: no speech found; no subtitles written")
    for out in outputs:
        print(out)
    return True


class _ProgressBar(NullReporter):
    """A tqdm bar on a TTY, silence otherwise (scripts read only the printed output paths)."""

    def __init__(self, name: str) -> None:
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=100, desc=name[:30], unit="%", leave=False,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def progress(self, phase: str, fraction: float, overall: float | None, message: str = "",
                 details: Mapping[str, Any] | None = None) -> None:
        if self._bar is not None and overall is not None:
            self._bar.n = round(100 * overall, 1)
            self._bar.set_postfix_str(phase, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------- status

def cmd_status(args: argparse.Namespace, config: Config) -> int:
    url = args.url or f"http://{_client_host(config.http.host)}:{config.http.port}"
    request = urllib.request.Request(url.rstrip("/") + "/status")
    if config.http.token:
        request.add_header("Authorization", f"Bearer {config.http.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            data = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"subwatch: cannot reach the daemon at {url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(data, indent=2) if args.json else format_status(data))
    return EXIT_OK


def _client_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def format_status(data: dict[str, Any]) -> str:
    """The /status document for a human."""
    watcher = data.get("watcher") or {}
    queue = data.get("queue") or {}
    lines = [
        f"subwatch {data.get('version')}  up {_duration(data.get('uptime_seconds', 0))}"
        f"  {'ready' if data.get('ready') else 'starting'}",
        f"watcher: {watcher.get('state')} ({watcher.get('mode')} mode) on {watcher.get('inbox')}"
        + (f", {watcher['pending']} settling" if watcher.get("pending") else "")
        + (f" - {watcher['error']}" if watcher.get("error") else ""),
        "queue:   " + ", ".join(f"{k} {v}" for k, v in queue.items() if v) if any(
            queue.values()) else "queue:   empty",
    ]
    for run in data.get("running", []):
        filled = int(run["percent"] / 5)
        eta = f" eta {_duration(run['eta_seconds'])}" if run.get("eta_seconds") else ""
        lines.append(f"running: {run['input']!r}  [{'#' * filled}{'.' * (20 - filled)}] "
                     f"{run['percent']:5.1f}% {run['phase']}{eta}")
    for fail in data.get("recent_failures", []):
        lines.append(f"failed:  {fail['input']!r}: {fail['error']}: {fail['message']}")
    for key, stats in (data.get("models") or {}).get("stats", {}).items():
        lines.append(f"model:   {key}  loads {stats['load_count']}  hits {stats['hits']}"
                     f"  inferences {stats['inference_count']}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds or 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
