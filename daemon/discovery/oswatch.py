"""The OS watcher (events mode): the only importer of watchdog.

Events only say "look here", and say it cheaply: a file event names a file to settle, a folder
made or moved in names a folder to scan (its files bring no events of their own). A folder
"modified" is only the echo of a child's own event and is dropped; so are opens and reads (a
media server reading the library would otherwise wake us for every file it touches). Nothing
here walks the tree. The inotify queue overflowing (events lost) asks for a full rescan.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_ATTRIB,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MODIFIED,
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from ..config import WatchConfig

log = logging.getLogger("daemon.watcher")

# What inotify is asked for: no IN_OPEN / IN_CLOSE_NOWRITE, and no folder "modified" echoes.
EVENTS = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
          FileAttribEvent, DirCreatedEvent, DirMovedEvent, DirDeletedEvent, DirAttribEvent]
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"  # watchdog says "queue overflowed" only there

FILE, FOLDER, INBOX = "file", "folder", "inbox"
Hint = Callable[[str, str], None]  # (path, FILE | FOLDER | INBOX), called on watchdog's thread


def hint_kind(inbox: Path, event: FileSystemEvent, path: str, is_dest: bool) -> str | None:
    """What one path of one event asks for: a file to settle, a folder to scan, the whole
    inbox again (the inbox itself changed), or nothing."""
    if Path(path) == inbox:
        return None if event.event_type == EVENT_TYPE_MODIFIED else INBOX
    if not event.is_directory:
        return FILE
    if is_dest or event.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_ATTRIB):
        return FOLDER  # made, moved in, or its permissions changed (it may be listable now)
    return None  # modified (a child's event names the child), deleted or moved away


class _Handler(FileSystemEventHandler):
    """watchdog handler: every event becomes a 'look at this path' for the watcher."""

    def __init__(self, inbox: Path, hint: Hint) -> None:
        self._inbox = inbox
        self._hint = hint

    def dispatch(self, event: FileSystemEvent) -> None:
        for path, is_dest in ((event.src_path, False), (event.dest_path, True)):
            if not path:
                continue
            try:
                text = os.fsdecode(path)
                kind = hint_kind(self._inbox, event, text, is_dest)
                if kind is not None:
                    self._hint(text, kind)
            except Exception:  # an exception here ends watchdog's thread, and all events
                log.debug("ignoring a watcher event for %r", path, exc_info=True)


class _OverflowListener(logging.Filter):
    """Hears watchdog's "Inotify queue overflowed" (it has no other way to say events were
    lost) and asks for a rescan; every record still passes."""

    def __init__(self, lost: Callable[[], None]) -> None:
        super().__init__()
        self._lost = lost

    def filter(self, record: logging.LogRecord) -> bool:
        if "queue overflowed" in str(record.msg):
            self._lost()
        return True


def _discard(observer: BaseObserver) -> None:
    """An observer that failed to start still holds a reader thread and an inotify instance
    (made in its constructor): without this, every retry would leak one."""
    try:
        observer.stop()
    except Exception:
        log.debug("stopping an observer that did not start", exc_info=True)


class OsWatch:
    """The watchdog observer thread: started, stopped, checked for death. Blocking: call
    from a thread."""

    def __init__(self, inbox: Path, hint: Hint, lost: Callable[[], None]) -> None:
        self.inbox = inbox
        self.error: str | None = None  # why the last start failed
        self._hint = hint
        self._overflow = _OverflowListener(lost)
        self._observer: BaseObserver | None = None

    @property
    def running(self) -> bool:
        return self._observer is not None

    def start(self, cfg: WatchConfig, rescan_every: float) -> None:
        from watchdog.observers import Observer

        self.stop()
        observer: BaseObserver = Observer()
        try:
            observer.schedule(_Handler(self.inbox, self._hint), str(self.inbox),
                              recursive=cfg.recursive, event_filter=EVENTS)
            observer.start()
        except Exception as exc:  # the watch limit, or a tree deeper than watchdog can walk
            _discard(observer)
            error = f"watcher failed: {getattr(exc, 'strerror', None) or exc}"
            if error != self.error:  # once, not at every rescan that tries again
                log.error("cannot watch %r (%s); relying on rescans every %.0f s",
                          str(self.inbox), error, rescan_every)
            self.error = error
            return
        logging.getLogger(OVERFLOW_LOGGER).addFilter(self._overflow)
        self._observer = observer
        self.error = None

    def stop(self) -> None:
        logging.getLogger(OVERFLOW_LOGGER).removeFilter(self._overflow)
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            try:
                observer.join(timeout=5)
            except RuntimeError:
                pass

    def died(self) -> bool:
        """Has the observer thread ended on its own (a watch error)?"""
        if self._observer is not None and not self._observer.is_alive():
            self._observer = None
            return True
        return False
