"""A process's resident memory, read from /proc: the one figure the memory tests compare."""

from __future__ import annotations

import os


def rss_bytes(pid: int | None = None) -> int:
    """The resident set of `pid` (this process if None) now, in bytes (VmRSS)."""
    with open(f"/proc/{pid or os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
