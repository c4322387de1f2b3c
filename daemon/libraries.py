"""Media libraries on disk: `[[libraries]]` beside `paths.inbox`, each watched on its own.

The inbox is the default library, and everything about it stays as it was: its files' journal
identities are their inbox-relative paths, its outputs go to the outbox. A configured library's
files are known to the journal as `.libraries/<name>/<path in the library>`: no inbox file can
have that path (the watcher never admits a hidden part), so identities never collide, and they
survive a remount of the library at another mount point. `library_of` reads such a key back.

Where a library's outputs go: `output = "outbox"` → `outbox/<name>/<folders>/`; `"sidecar"` →
beside the media file, and nothing else is ever written there: error files go to
`outbox/<name>/`, the journal and temp files live in state_dir (writer.outbox_for).

One Watcher per library (`LibraryWatchers`), built and started here so the Service only wires
it: started with the daemon, added, replaced or stopped when a reload changes `[[libraries]]`,
and reported to /healthz (through Degradations) while its folder is unavailable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from .config import Config, LiveConfig, WatchConfig
from .monitor import Lifecycle
from .naming import normalize
from .progress import Degradations
from .watcher import Settled, Watcher

log = logging.getLogger(__name__)

INBOX = "inbox"  # the default library's name
KEY_PREFIX = ".libraries/"
CHECK_SECONDS = 1.0  # how often the libraries' watchers are looked at for /healthz


@dataclass(frozen=True)
class Library:
    """One watched folder and where its subtitles go."""

    name: str
    root: Path
    output: str  # "outbox" | "sidecar"
    language: str | None  # ISO 639-1 its media is in; None = whisper.language
    watch: WatchConfig

    @property
    def default(self) -> bool:
        return self.name == INBOX

    @property
    def prefix(self) -> str:
        return "" if self.default else f"{KEY_PREFIX}{self.name}/"

    def key(self, rel_path: str) -> str:
        """The journal's rel_path for a file at `rel_path` inside this library."""
        return self.prefix + rel_path

    def outbox_root(self, config: Config) -> Path:
        """Where its outputs (outbox libraries) and error files (all) go."""
        return config.paths.outbox if self.default else config.paths.outbox / self.name


def inbox_library(config: Config) -> Library:
    return Library(INBOX, config.paths.inbox, "outbox", None, config.watch)


def libraries_of(config: Config) -> list[Library]:
    """The inbox, then each `[[libraries]]` entry, as configured now."""
    found = [inbox_library(config)]
    for lib in config.libraries:
        watch = config.watch
        if lib.watch.mode:
            watch = dataclasses.replace(watch, mode=lib.watch.mode)
        found.append(Library(lib.name, lib.path, lib.output, normalize(lib.language) or None,
                             watch))
    return found


def is_library_key(rel_path: str) -> bool:
    """Is this journal rel_path a configured library's (not the inbox's)?"""
    return rel_path.startswith(KEY_PREFIX)


def library_of(config: Config, rel_path: str) -> tuple[Library, str] | None:
    """The library a journal rel_path belongs to and the path inside it; None when it names a
    library that is no longer configured."""
    if not is_library_key(rel_path):
        return inbox_library(config), rel_path
    name, _, inner = rel_path[len(KEY_PREFIX):].partition("/")
    for lib in libraries_of(config)[1:]:
        if lib.name == name and inner:
            return lib, inner
    return None


def media_root(config: Config, rel_path: str) -> Path:
    """The folder a file job's rel_path lives in: its library's root, or the inbox."""
    found = library_of(config, rel_path)
    return found[0].root if found else config.paths.inbox


def media_path(config: Config, rel_path: str) -> Path:
    """The media file a file job's rel_path names. For a library removed from the config since
    its admission, a path under the inbox's hidden `.libraries/` that does not exist: the job
    is canceled as `vanished`, which the journal revives if the library comes back."""
    found = library_of(config, rel_path)
    return found[0].root / found[1] if found else config.paths.inbox / rel_path


def key_for_path(config: Config, path: str | os.PathLike[str]) -> str | None:
    """The journal rel_path of an absolute media path inside the inbox or a library (what a
    webhook names, once path-mapped); None when it is inside none of them."""
    absolute = Path(os.path.abspath(path))
    for lib in libraries_of(config):
        try:
            inner = absolute.relative_to(os.path.abspath(lib.root))
        except ValueError:
            continue
        if inner.parts and ".." not in inner.parts:
            return lib.key(PurePosixPath(*inner.parts).as_posix())
    return None


def transcription_language(config: Config, rel_path: str) -> str | None:
    """The language a file is to be transcribed in when its library says (ISO 639-1); None
    leaves it to whisper.language and the audio track's tag."""
    found = library_of(config, rel_path)
    return found[0].language if found else None


def language_for_path(config: Config, path: str | os.PathLike[str]) -> str | None:
    """`transcription_language` for a media file named by its absolute path (what a pipeline
    stage holds): the language of the library it is in, if that library sets one."""
    key = key_for_path(config, path)
    return transcription_language(config, key) if key is not None else None


@dataclass
class Running:
    """A library being watched: its watcher once its mode is chosen (off the loop)."""

    lib: Library
    task: asyncio.Task[Any]
    watcher: Watcher | None = None


class Admission(Protocol):
    """The intake as the watchers use it, in journal keys."""

    def is_known(self, rel_path: str, st: os.stat_result) -> bool: ...

    async def admit(self, item: Settled) -> None: ...


class LibraryWatchers:
    """A Watcher for each configured library (the inbox's own watcher stays the Service's).

    The intake speaks journal keys: each watcher's library-relative paths are turned into
    keys on the way. Watchers run as the lifecycle's tasks, so the stop cancels them; a reload
    that adds a library starts its watcher, one that changes it restarts it, one that removes
    it stops it."""

    def __init__(self, live: LiveConfig, intake: Admission,
                 blocking: Callable[..., Awaitable[Any]]) -> None:
        self._live = live
        self._intake = intake
        self._blocking = blocking
        self._life = Lifecycle()  # the daemon's, from `start`
        self._degradations: Degradations | None = None
        self._running: dict[str, Running] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        live.subscribe(self._on_config)

    @property
    def watchers(self) -> dict[str, Watcher]:
        return {name: run.watcher for name, run in self._running.items() if run.watcher}

    def start(self, life: Lifecycle, degradations: Degradations) -> None:
        """On the event loop, at startup: a watcher for each library as the lifecycle's tasks
        (the stop cancels them), and their health reported through `degradations`. Their
        first scans are not awaited: ready must not wait for a slow share."""
        self._life, self._degradations = life, degradations
        self._loop = asyncio.get_running_loop()
        self.sync(self._live.current)
        life.tasks.append(asyncio.create_task(self._keep_health(degradations),
                                              name="libraries-health"))

    def describe(self) -> list[dict[str, object]]:
        return [{"name": name, "output": run.lib.output, **run.watcher.describe()}
                for name, run in self._running.items() if run.watcher]

    def _on_config(self, config: Config) -> None:
        """A LiveConfig listener (a reload runs it in a thread): sync on the loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.sync, config)

    def sync(self, config: Config) -> None:
        """Make the running watchers match `config`'s libraries (on the loop)."""
        if self._life.stopping.is_set():
            return
        watching = config.cluster.role != "worker"  # a worker node only runs jobs (issue 15)
        wanted = {lib.name: lib for lib in libraries_of(config)[1:] if watching}
        for name, run in list(self._running.items()):
            if wanted.get(name) == run.lib:
                if run.watcher is not None:
                    run.watcher.reconfigure(run.lib.watch)
                continue
            if run.watcher is not None:
                run.watcher.pause()
            run.task.cancel()
            del self._running[name]
            if self._degradations is not None:
                self._degradations.clear(_component(name))
            log.info("library %r: no longer watched as it was", name)
        for name, lib in wanted.items():
            if name not in self._running:
                self._start(lib)

    def _start(self, lib: Library) -> None:
        task = asyncio.create_task(self._watch(lib), name=f"library-{lib.name}")
        self._life.tasks.append(task)
        self._running[lib.name] = Running(lib, task)

    async def _watch(self, lib: Library) -> None:
        """Build the library's watcher and run it until canceled. What `auto` resolves to is
        the watcher's to find, in the daemon's threads, at its first look at the folder and
        whenever a share is mounted over it or unmounted (on a NAS that hangs, resolving the
        path would hold the event loop and every request with it)."""
        run = self._running.get(lib.name)
        if run is None or run.task is not asyncio.current_task():
            return  # replaced or removed before it ran (its task is canceled too)

        async def admit(item: Settled) -> None:
            await self._intake.admit(dataclasses.replace(item, rel_path=lib.key(item.rel_path)))

        def is_known(rel_path: str, st: os.stat_result) -> bool:
            return self._intake.is_known(lib.key(rel_path), st)

        run.watcher = Watcher(lib.root, lib.watch, is_known, admit, self._blocking)
        log.info("library %r: watching %r (%s mode), subtitles %s", lib.name, str(lib.root),
                 lib.watch.mode, "beside the media" if lib.output == "sidecar"
                 else f"in {str(lib.outbox_root(self._live.current))!r}")
        await run.watcher.run()

    async def _keep_health(self, degradations: Degradations) -> None:
        """A library whose folder is unavailable (a NAS that unmounted) or whose scans fail is
        degraded in /healthz and /status until it is back; on the stop, intake ends."""
        while not self._life.stopping.is_set():
            for name, run in list(self._running.items()):
                watcher = run.watcher
                if watcher is None:
                    continue  # its task has not run yet
                if watcher.state in ("unavailable", "degraded") or watcher.scans_failing():
                    reason = watcher.last_error or f"watcher {watcher.state}"
                    degradations.report(_component(name), f"{_component(name)} "
                                        f"{watcher.state}: {reason}", holds_jobs=True)
                elif watcher.state == "watching":
                    degradations.clear(_component(name))
            try:
                await asyncio.wait_for(self._life.stopping.wait(), CHECK_SECONDS)
            except TimeoutError:
                pass
        for run in self._running.values():
            if run.watcher is not None:
                run.watcher.pause()


def _component(name: str) -> str:
    return f"library {name}"
