"""A deep queue (a library dropped at once: 10 000 files) must not make the journal's hot reads
slower: a claim, /jobs and /status's recent failures read the few rows they return through an
index in order, never the whole queue sorted. Measured in SQLite's own work (virtual-machine
steps, counted by a progress handler), which is deterministic, not in wall-clock time."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.journal import CLAIM_NEXT, LIST_ALL, LIST_IN_STATE, Identity, Journal

READS = {"claim": (CLAIM_NEXT, lambda: (time.time(),)),
         "jobs, any state": (LIST_ALL, lambda: (100,)),
         "jobs in one state": (LIST_IN_STATE, lambda: ("queued", 100)),
         "recent failures": (LIST_IN_STATE, lambda: ("failed", 5))}


def admit(journal: Journal, start: int, count: int) -> None:
    for i in range(start, start + count):
        journal.admit(Identity(f"show/episode {i:05d}.mkv", 1000 + i, i))


def sqlite_steps(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db.set_progress_handler(count, 1)
    try:
        db.execute(sql, args).fetchall()
    finally:
        db.set_progress_handler(None, 1)
    return steps


@pytest.mark.parametrize("read", READS)
def test_a_hot_read_costs_the_same_with_200_or_5000_queued(tmp_path: Path, read: str) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path, max_attempts=3)
    admit(journal, 0, 200)
    journal.fail(journal.claim().id, "bad", "failed once")  # type: ignore[union-attr]
    db = sqlite3.connect(path)
    sql, args = READS[read]
    shallow = sqlite_steps(db, sql, args())
    admit(journal, 200, 4800)
    deep = sqlite_steps(db, sql, args())
    journal.close()
    db.close()
    assert deep < 1.5 * shallow + 100, (read, shallow, deep)


def test_claim_still_takes_the_most_urgent_of_queued_and_due_retries(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3", max_attempts=3)
    admit(journal, 0, 3)
    first = journal.claim(now=100.0)
    assert first is not None and first.rel_path == "show/episode 00000.mkv"
    journal.retry_later(first.id, "busy", "try again", delay=-1.0)  # already due
    assert journal.claim().id == first.id  # type: ignore[union-attr]  # older than the rest
    urgent = journal.admit(Identity("upload.wav", 1, 1), kind="upload", priority=10)
    assert journal.claim().id == urgent.id  # type: ignore[union-attr]
    journal.close()
