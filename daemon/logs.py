"""Logging for a daemon: readable on a console, structured in files, right under journald.

Job context (job_id, chunk_id, stage) travels in contextvars, not in a global record factory, so
it follows a job into the worker threads started for it (the daemon copies the context there) and
never leaks into another job's records.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .config import LoggingConfig

CONTEXT_FIELDS = ("job_id", "chunk_id", "stage")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "subwatch_log_context", default=None)

THIRD_PARTY = ("faster_whisper", "ctranslate2", "torch", "funasr", "modelscope", "urllib3",
               "httpx", "huggingface_hub", "watchdog", "aiohttp.access", "asyncio", "filelock")

PROJECT = __name__.partition(".")[0]

SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                   logging.DEBUG: 7}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (job_id, chunk_id, stage) to every record logged inside the block."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current job context onto each record, and a syslog priority for journald."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _context.get() or {}
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, ctx.get(name))
        tags = " ".join(f"{k}={ctx[k]}" for k in CONTEXT_FIELDS if ctx.get(k) is not None)
        record.ctx = f" [{tags}]" if tags else ""
        record.syslog = SYSLOG_PRIORITY.get(record.levelno, 6)
        return True


@functools.cache
def project_loggers() -> frozenset[str]:
    """The project's own logger names: the package and each of its modules (found on disk, so
    a stage not imported yet can still be named)."""
    package = Path(__file__).resolve().parent
    names = {PROJECT}
    for source in package.rglob("*.py"):
        parts = source.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.add(".".join((PROJECT, *parts)))
    return frozenset(names)


def unknown_loggers(names: Iterable[str], configured: Iterable[str] = ()) -> list[str]:
    """Names that are neither ours, nor a library we configure, nor in the config file: a
    request may not make loggers (each one is kept for good and slows every level change)."""
    known = project_loggers() | set(THIRD_PARTY) | set(configured)
    return [name for name in names if name not in known]


def under_journald() -> bool:
    """stderr is the journal when JOURNAL_STREAM names its device:inode (systemd.exec(5))."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(module)s %(funcName)s %(lineno)d"
        " %(job_id)s %(chunk_id)s %(stage)s",
        rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger",
                       "funcName": "function", "lineno": "line"},
        timestamp=False, json_ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(ctx)s: %(message)s"


def _console_formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return _json_formatter()
    if fmt == "auto" and under_journald():
        return logging.Formatter("<%(syslog)d>%(levelname)s %(name)s%(ctx)s: %(message)s")
    return logging.Formatter(TEXT_FORMAT)


def setup_logging(cfg: LoggingConfig) -> None:
    """Replace the root handlers by the configured ones (idempotent: reload calls it again)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(cfg.level)
    context = ContextFilter()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_console_formatter(cfg.format))
    console.addFilter(context)
    root.addHandler(console)
    if cfg.dir:
        _add_files(root, cfg, context)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, level in cfg.levels.items():
        logging.getLogger(name).setLevel(level)


def _add_files(root: logging.Logger, cfg: LoggingConfig, context: logging.Filter) -> None:
    folder = Path(cfg.dir)
    folder.mkdir(parents=True, exist_ok=True)
    file_fmt = _json_formatter() if cfg.format == "json" else logging.Formatter(TEXT_FORMAT)
    for name, level in (("app.log", logging.NOTSET), ("error.log", logging.ERROR)):
        handler = logging.handlers.RotatingFileHandler(
            folder / name, maxBytes=cfg.max_bytes, backupCount=cfg.backup_count,
            encoding="utf-8")
        handler.setLevel(level)
        handler.setFormatter(file_fmt)
        handler.addFilter(context)
        root.addHandler(handler)
