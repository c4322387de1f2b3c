"""The reliability suite's one oracle, checked after every scenario.

Whatever was done to the daemon (files copied oddly, events lost, the disk filled, the process
killed), the end state must be the same promise to the user:
- every input in the inbox ends with a valid subtitle (a done job whose outputs exist and parse)
  or with an error file naming it and a failed job, and that job read the file as it is now (its
  size and mtime), not a version caught half-written;
- no temp file is left in the outbox or the state folder;
- each identity is one job, in a final state, finished once: the daemon's log (`daemon.log` in
  `root`, where DaemonProcess writes it, across restarts) says it was done at most once (a kill
  between the journal's commit and the log line leaves none), and every subtitle in the outbox
  is an output of a done job (a job run twice under two names, or a stray copy, shows here);
- the daemon is healthy.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from daemon.writer import error_input, is_temp_name

SUBTITLE_SUFFIXES = (".srt", ".vtt")
SRT_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})$")
TERMINAL = ("done", "failed", "canceled")


def journal_rows(state_dir: Path) -> list[dict[str, Any]]:
    """The journal's rows (read beside a running daemon: SQLite readers do not block it)."""
    db = sqlite3.connect(f"file:{state_dir / 'journal.sqlite3'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY rel_path, created_at")]
    finally:
        db.close()


def valid_srt(path: Path) -> list[tuple[float, float, str]]:
    """The cues of an SRT file; AssertionError when it is not a whole, well-formed file."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path}: truncated"
    cues = []
    for n, block in enumerate(text.strip().split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(n), f"{path}: cue {n} numbered {lines[0]!r}"
        m = SRT_TIME.match(lines[1])
        assert m, f"{path}: bad time line {lines[1]!r}"
        v = [int(x) for x in m.groups()]
        start = v[0] * 3600 + v[1] * 60 + v[2] + v[3] / 1000
        end = v[4] * 3600 + v[5] * 60 + v[6] + v[7] / 1000
        assert end >= start and len(lines) >= 3, f"{path}: cue {n} {lines}"
        cues.append((start, end, " ".join(lines[2:])))
    return cues


def error_files(outbox: Path) -> dict[str, dict[str, Any]]:
    """Every error file in the outbox, by the input it names."""
    out = {}
    for path in outbox.rglob("*.error.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        out[record["input"]] = record
    return out


def temp_files(*folders: Path) -> list[Path]:
    return [Path(d) / name for folder in folders if folder.exists()
            for d, _dirs, names in os.walk(folder) for name in names if is_temp_name(name)]


def check(root: Path, inputs: Iterable[str], healthz: dict[str, Any] | None = None,
          speech: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Assert the promise for `inputs` (inbox-relative paths) under a daemon rooted in `root`
    (inbox/, outbox/, state/); `speech`: inputs that must have text. Returns each input's job."""
    rows = journal_rows(root / "state")
    errors = error_files(root / "outbox")
    by_path: dict[str, dict[str, Any]] = {}
    identities = [(r["rel_path"], r["size"], r["mtime_ns"]) for r in rows]
    assert len(identities) == len(set(identities)), "an identity admitted twice"
    for rel in inputs:
        jobs = [r for r in rows if r["rel_path"] == rel]
        assert jobs, f"{rel}: never admitted"
        job = jobs[-1]
        assert job["state"] in TERMINAL, f"{rel}: left {job['state']}"
        if job["state"] == "done":
            _check_done(rel, job, rel in set(speech))
        else:
            if error_input(rel) not in errors:  # written just after the journal's record
                time.sleep(2)
                errors = error_files(root / "outbox")
            assert error_input(rel) in errors, f"{rel}: {job['state']} with no error file"
        _check_identity(root / "inbox" / rel, job)
        by_path[rel] = job
    _check_finished_once(root / "daemon.log", by_path)
    _check_no_strays(root / "outbox", rows)
    assert not temp_files(root / "outbox", root / "state"), temp_files(root / "outbox",
                                                                        root / "state")
    if healthz is not None:
        assert healthz.get("status") == "ok", healthz
    return by_path


def _check_done(rel: str, job: dict[str, Any], must_speak: bool) -> None:
    outputs = [Path(p) for p in json.loads(job["outputs"])]
    if must_speak:
        assert outputs, f"{rel}: done without a subtitle"
    for out in outputs:
        assert out.exists(), f"{rel}: output {out} missing"
        if out.suffix == ".srt":
            cues = valid_srt(out)
            assert cues or not must_speak, f"{rel}: empty subtitle"


def _check_identity(path: Path, job: dict[str, Any]) -> None:
    """The job is for the file as it is now (kept by on_success = keep)."""
    try:
        st = path.stat()
    except FileNotFoundError:  # moved or deleted by on_success
        return
    assert (job["size"], job["mtime_ns"]) == (st.st_size, st.st_mtime_ns), \
        f"{path.name}: the job read another version ({job['size']}, {job['mtime_ns']})"


def _check_finished_once(log: Path, jobs: dict[str, dict[str, Any]]) -> None:
    if not log.exists():
        return
    text = log.read_text(encoding="utf-8", errors="replace")
    for rel, job in jobs.items():
        if job["state"] == "done":
            count = text.count(f"done {rel!r}:")
            assert count <= 1, f"{rel}: done {count} times"


def _check_no_strays(outbox: Path, rows: list[dict[str, Any]]) -> None:
    outputs = {out for r in rows if r["state"] == "done" for out in json.loads(r["outputs"])}
    subtitles = {str(p) for p in outbox.rglob("*") if p.suffix in SUBTITLE_SUFFIXES}
    assert subtitles <= outputs, f"subtitles no done job wrote: {sorted(subtitles - outputs)}"
