"""Command line: argument parsing and exit codes, and nothing else decides exit codes.

0 ok, 2 bad config or usage, 1 any other failure, 3 the journal is corrupt (`run`: a restart
cannot help, so the systemd unit does not restart on it; README "Journal trouble").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .client import ClientError, DaemonClient
from .config import Config, load_config
from .errors import ConfigError, ModelUnavailable, SubwatchError
from .logs import setup_logging

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .service import Service
    from .terminal import Console, FileProgress, FileResult
    from .writer import Outbox

log = logging.getLogger("subwatch")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_JOURNAL_CORRUPT = 0, 1, 2, 3


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
    tr.add_argument("-v", "--verbose", action="store_true",
                    help="on a terminal, show INFO log lines too (default: warnings and errors)")
    _add_api_commands(sub)
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
               "jobs": cmd_jobs, "retry": cmd_job_action, "cancel": cmd_job_action,
               "check-config": cmd_check_config}[args.command]
    try:
        return handler(args, config)
    except KeyboardInterrupt:  # Ctrl-C in a one-shot command: one line, not a traceback
        print("\nsubwatch: interrupted", file=sys.stderr)
        return EXIT_FAILURE


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


def _to_toml(data: dict[str, Any]) -> str:
    lines = []
    for table, values in data.items():
        many = isinstance(values, list)  # [[table]] entries ([[libraries]], [[path_maps]])
        for entry in values if many else [values]:
            lines.append(f"[[{table}]]" if many else f"[{table}]")
            for key, value in entry.items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- run

def cmd_run(args: argparse.Namespace, config: Config) -> int:
    setup_logging(config.logging)
    from .journal import JournalCorrupt, JournalUnavailable
    from .service import AlreadyRunning, Service

    service: Service | None = None
    code = EXIT_OK
    try:
        service = Service(config)
        _run_until_stopped(service)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        code = EXIT_USAGE
    except JournalCorrupt as exc:  # one line that says what to do, not a restart loop
        log.error("cannot start: %s", exc)
        code = EXIT_JOURNAL_CORRUPT
    except (ModelUnavailable, AlreadyRunning, JournalUnavailable, OSError) as exc:
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
    from .terminal import Console

    clash = _output_clash(args.files, args.output_dir)
    if clash:
        log.error("%s", clash)
        return EXIT_USAGE
    console = Console(verbose=args.verbose)
    with console.logging():
        pipeline = Pipeline(config, ModelCache(config.models.cache_size))
        try:
            pipeline.prepare()
        except ConfigError as exc:
            log.error("config error: %s", exc)
            return EXIT_USAGE
        except ModelUnavailable as exc:
            log.error("cannot start: %s", exc)
            return EXIT_FAILURE
        results = _transcribe_all(args, config, pipeline, console)
    console.summary(results)
    return EXIT_FAILURE if any(r.error is not None for r in results) else EXIT_OK


def _output_clash(files: Sequence[Path], output_dir: Path | None) -> str | None:
    """Two inputs whose subtitles would take one name in `-o DIR` (a/x.wav, b/x.mp3; one file
    named twice): said before any work, rather than the second replacing the first. Files
    that share a stem in one folder (x.mp4, x.mkv) are told apart by the outbox's naming."""
    if output_dir is None:
        return None
    seen: dict[str, Path] = {}
    for path in files:
        other = seen.setdefault(path.stem, path)
        if other is not path and (other.resolve() == path.resolve()
                                  or other.resolve().parent != path.resolve().parent):
            return (f"{str(other)!r} and {str(path)!r} would both write their subtitles as "
                    f"{path.stem!r} in {str(output_dir)!r}; transcribe them in separate runs "
                    "or without -o")
    return None


def _transcribe_all(args: argparse.Namespace, config: Config, pipeline: Pipeline,
                    console: Console) -> list[FileResult]:
    from .writer import Outbox

    results = []
    for index, path in enumerate(args.files, 1):
        outdir = args.output_dir or path.resolve().parent
        # the daemon's naming: a file that shares its stem with another media file beside it
        # (a.mp4, a.mkv) names its outputs after its whole name, so neither overwrites the other
        outbox = Outbox(outdir, config.output.name_template, config.output.formats,
                        inbox=path.resolve().parent, extensions=config.watch.extensions)
        result = _transcribe_one(pipeline, outbox, console.start(path, index, len(args.files)))
        console.done(result)
        results.append(result)
    return results


def _transcribe_one(pipeline: Pipeline, outbox: Outbox, progress: FileProgress) -> FileResult:
    """One file through the pipeline and the outbox; the bar goes away whatever happens."""
    path = progress.path
    try:
        transcript = pipeline.run(path, reporter=progress)
        outputs = [] if transcript.no_speech else outbox.write(path.name, transcript)
    except SubwatchError as exc:
        return progress.finish(error=str(exc))
    finally:
        progress.close()
    return progress.finish(outputs, transcript.duration)


# ---------------------------------------------------------------------------- status

def _add_api_commands(sub: Any) -> None:
    """status, jobs, retry, cancel: each asks the running daemon over HTTP (daemon/client.py),
    found from the same config it runs with (address and token), or at --url."""
    from .journal import STATES

    st = sub.add_parser("status", help="show the running daemon's status")
    _client_args(st)
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    st.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    st.add_argument("--interval", type=_positive(float), default=2.0, metavar="SECONDS",
                    help="seconds between refreshes with --watch (default: 2)")
    jb = sub.add_parser("jobs", help="list the daemon's jobs, newest first")
    _client_args(jb)
    jb.add_argument("--state", choices=STATES, metavar="STATE",
                    help=f"only jobs in this state: {', '.join(STATES)}")
    jb.add_argument("--limit", type=_positive(int), default=20, metavar="N",
                    help="at most N jobs (default: 20, the daemon caps it at 1000)")
    jb.add_argument("--json", action="store_true", help="print the raw JSON")
    for verb, what in (("retry", "queue a failed, canceled, done or skipped job again"),
                       ("cancel", "cancel a queued job, or a running one at its next safe point")):
        act = sub.add_parser(verb, help=what)
        act.add_argument("job_id", metavar="ID", help="the job's id (see `subwatch jobs`)")
        _client_args(act)


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="daemon URL (default: from the config)")
    parser.add_argument("--config", type=Path)


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
        return value

    return parse


def _client_failed(exc: ClientError) -> int:
    print(f"subwatch: {exc}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    client = DaemonClient.from_config(config, args.url)
    if args.watch:
        return _watch_status(client, args.json, args.interval)
    try:
        data = client.status()
    except ClientError as exc:
        return _client_failed(exc)
    print(_render_status(data, args.json))
    return EXIT_OK


def _render_status(data: dict[str, Any], as_json: bool) -> str:
    return json.dumps(data, indent=2) if as_json else format_status(data)


# Cursor home, then erase the screen: each refresh replaces the last one, as watch(1) does.
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _watch_status(client: DaemonClient, as_json: bool, interval: float) -> int:
    """Redraw in place on a terminal; a new block per refresh (blank line between) for a pipe
    or a log. A daemon that goes away after the first answer is shown, not fatal: it may be
    restarting, and the point of watching is to see it come back. Ctrl-C is the way out."""
    tty = sys.stdout.isatty()
    first = True
    try:
        while True:
            try:
                text = _render_status(client.status(), as_json)
            except ClientError as exc:
                if first:
                    return _client_failed(exc)
                text = f"subwatch: {exc}"
            if tty:
                header = f"every {interval:g}s, Ctrl-C to stop   {time.strftime('%H:%M:%S')}"
                sys.stdout.write(f"{CLEAR_SCREEN}{header}\n\n{text}\n")
            else:
                sys.stdout.write(("" if first else "\n") + text + "\n")
            sys.stdout.flush()  # a pipe is block-buffered: the reader would see nothing
            first = False
            time.sleep(interval)
    except KeyboardInterrupt:
        return EXIT_OK


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
    lines += [_node_line(node) for node in (data.get("cluster") or {}).get("nodes", [])]
    return "\n".join(lines)


def _node_line(node: dict[str, Any]) -> str:
    """A cluster node (`[cluster] backend = "redis"`): its role, whether it beats, its jobs."""
    if not node.get("alive"):
        return f"node:    {node['node']}  gone (last heartbeat {time.ctime(node['heartbeat'])})"
    running = ", ".join(repr(r["input"]) for r in node.get("running", [])) or "idle"
    return f"node:    {node['node']}  {node.get('role')} on {node.get('host')}  {running}"


def _duration(seconds: float) -> str:
    seconds = int(seconds or 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# ---------------------------------------------------------------------------- jobs

def cmd_jobs(args: argparse.Namespace, config: Config) -> int:
    try:
        data = DaemonClient.from_config(config, args.url).jobs(args.state, args.limit)
    except ClientError as exc:
        return _client_failed(exc)
    print(json.dumps(data, indent=2) if args.json else format_jobs(data.get("jobs") or []))
    return EXIT_OK


def cmd_job_action(args: argparse.Namespace, config: Config) -> int:
    """retry or cancel: print the state the job is in now, for a person or a script."""
    try:
        data = DaemonClient.from_config(config, args.url).act(args.job_id, args.command)
    except ClientError as exc:
        return _client_failed(exc)
    print(data.get("state"))
    return EXIT_OK


JOB_COLUMNS = ("ID", "STATE", "TRIES", "INPUT", "DETAIL")
INPUT_WIDTH = 40


def format_jobs(jobs: list[dict[str, Any]], width: int | None = None) -> str:
    """/jobs for a human: one line a job, the detail cut to the terminal's width."""
    if not jobs:
        return "no jobs"
    width = width or shutil.get_terminal_size((120, 24)).columns
    rows = [JOB_COLUMNS] + [(str(j.get("id")), str(j.get("state")), str(j.get("attempts")),
                             _shorten(str(j.get("rel_path")), INPUT_WIDTH, keep_end=True),
                             _job_detail(j)) for j in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    room = max(20, width - sum(widths) - 2 * len(widths))
    return "\n".join(("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
                      + "  " + _shorten(row[4], room)).rstrip() for row in rows)


def _job_detail(job: dict[str, Any]) -> str:
    if job.get("error"):
        return " ".join(f"{job['error']}: {job.get('message') or ''}".split())
    if job.get("outputs"):
        return ", ".join(Path(out).name for out in job["outputs"])
    return "no speech" if job.get("result") == "no_speech" else ""


def _shorten(text: str, width: int, keep_end: bool = False) -> str:
    """At most `width` characters; a path keeps its end (the file's name says the most)."""
    if len(text) <= width:
        return text
    return "..." + text[3 - width:] if keep_end else text[:width - 3] + "..."
