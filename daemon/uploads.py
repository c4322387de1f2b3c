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

UPLOAD = "upload"
RESULT_FORMATS = ("srt", "vtt", "txt", "json")
RESULT_TEMPLATE = "{stem}.{lang}.{ext}"


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
