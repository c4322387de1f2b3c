"""Where an upload job (POST /asr, /detect-language) keeps its input and its outputs.

An upload is a job like a folder's, with two differences in where things are: its input is
streamed to `state_dir/uploads/in/<token>/<name>` (never the inbox, so the watcher and the
on_success rules never see it), and its outputs go to `state_dir/uploads/out/<token>/` in every
format, where the waiting request picks the one it asked for. Both folders are the request's: it
removes them once answered, and the start-up sweep removes what a stop left behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from .config import Config, LiveConfig, WhisperConfig
from .domain import Transcript
from .journal import Job
from .libraries import media_path, media_root
from .models import ModelCache
from .pipeline import Pipeline, Reporter
from .writer import Outbox, outbox_for

log = logging.getLogger(__name__)

UPLOAD = "upload"
RESULT_FORMATS = ("srt", "vtt", "txt", "json")
RESULT_TEMPLATE = "{stem}.{lang}.{ext}"
TOTAL_PER_REQUEST = 4  # http.max_upload_total_bytes = 0: room for this many full uploads


def uploads_dir(config: Config) -> Path:
    return config.paths.state_dir / "uploads"


def input_root(config: Config, job: Job) -> Path:
    """The folder a job's `rel_path` is relative to: the inbox or its library (issue 13), or
    the uploads' inputs."""
    return uploads_dir(config) / "in" if job.kind == UPLOAD else media_root(config, job.rel_path)


def input_path(config: Config, job: Job) -> Path:
    if job.kind == UPLOAD:
        return input_root(config, job) / job.rel_path
    return media_path(config, job.rel_path)  # a library's file is `.libraries/<name>/…`


def outbox_of(config: Config, job: Job) -> Outbox:
    """Where a job's outputs (and error file) go: the outbox, or the upload's own folder."""
    if job.kind == UPLOAD:
        return Outbox(uploads_dir(config) / "out", RESULT_TEMPLATE, RESULT_FORMATS)
    return outbox_for(config, job.rel_path)  # a library's outputs go where it says


def remove_upload(config: Config, rel_path: str) -> None:
    """Forget an upload's files (its input and its outputs): `<token>/…` in both folders."""
    token = PurePosixPath(rel_path).parts[0]
    for side in ("in", "out"):
        shutil.rmtree(uploads_dir(config) / side / token, ignore_errors=True)


# ---------------------------------------------------------------------------- per-request options

REQUEST_FILE = ".request.json"  # beside an upload's input (no client name starts with a dot)


def write_request(folder: Path, options: dict[str, Any]) -> None:
    (folder / REQUEST_FILE).write_text(json.dumps(options), encoding="utf-8")


def requested_whisper(config: Config, path: Path) -> WhisperConfig | None:
    """The [whisper] settings an upload's request asked for (its `language` and `task`), when
    `path` is an upload's input that asked for any; None for everything else."""
    inputs = uploads_dir(config) / "in"
    if path.parent.parent != inputs:
        return None
    try:
        options = json.loads((path.parent / REQUEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    asked = {k: options[k] for k in ("language", "task") if options.get(k)}
    return dataclasses.replace(config.whisper, **asked) if asked else None


class UploadAware:
    """The worker's transcription: the daemon's pipeline, or for an upload that asked for its
    own language or task, a pipeline of that config over the same models (the cache is keyed by
    model, device and compute type, so nothing is loaded twice)."""

    def __init__(self, live: LiveConfig, pipeline: Pipeline, cache: ModelCache) -> None:
        self._live = live
        self._pipeline = pipeline
        self._cache = cache

    def pipeline_for(self, path: Path) -> Pipeline:
        config = self._live.current
        whisper = requested_whisper(config, path)
        if whisper is None or whisper == config.whisper:
            return self._pipeline
        return Pipeline(dataclasses.replace(config, whisper=whisper), self._cache,
                        config.jobs.workers)

    def __call__(self, path: Path, cancel: threading.Event, reporter: Reporter) -> Transcript:
        return self.pipeline_for(path).run(path, cancel, reporter)


# ---------------------------------------------------------------------------- room on disk

def total_upload_limit(config: Config) -> int:
    """The bytes all uploads together may hold in state_dir/uploads."""
    http = config.http
    return http.max_upload_total_bytes or TOTAL_PER_REQUEST * http.max_upload_bytes


class UploadRoom:
    """The state_dir bytes the uploads hold, so that many at once cannot fill its disk (each is
    bounded alone by http.max_upload_bytes). A request takes its room before its body is read:
    its Content-Length, or the per-request limit when it sends none; once received it holds its
    file's size until it is answered and its files removed. A request that finds no room is
    refused at once (the caller answers 503 with Retry-After: try again later). The first
    refusal of a burst is logged, the rest counted into the line that says uploads are taken
    again. On the event loop only: no lock."""

    def __init__(self, live: LiveConfig) -> None:
        self._live = live
        self._held: dict[int, int] = {}  # ticket -> bytes
        self._next = 0
        self._refused = 0  # in the current burst

    @property
    def held(self) -> int:
        return sum(self._held.values())

    def take(self, content_length: int | None) -> int | None:
        """A ticket for an upload's room, or None when there is none now."""
        limit = self._live.current.http.max_upload_bytes
        wanted = limit if content_length is None else min(content_length, limit)
        total = total_upload_limit(self._live.current)
        if self.held + wanted > total:
            if not self._refused:
                log.warning("uploads: refusing new uploads (503) while those held take %d of "
                            "http.max_upload_total_bytes (%d); this one wanted %d", self.held,
                            total, wanted)
            self._refused += 1
            return None
        if self._refused:
            log.info("uploads: taken again after %d refused", self._refused)
            self._refused = 0
        self._next += 1
        self._held[self._next] = wanted
        return self._next

    def settle(self, ticket: int, size: int) -> None:
        """The upload has arrived: it holds what its file takes, no longer its estimate."""
        if ticket in self._held:
            self._held[ticket] = size

    def give_back(self, ticket: int) -> None:
        self._held.pop(ticket, None)
