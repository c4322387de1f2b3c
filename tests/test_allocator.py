"""The daemon's large short-lived arrays go back to the system when freed (allocator.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from testkit.daemon import ROOT

# Frees a 24 MB array (glibc then raises its threshold past 8 MB), then makes ten 8 MB arrays
# with a small object after each (as a job's arrays sit between Python's own objects) and
# frees the arrays: how much of their 80 MB stays resident.
RETAINED = """
import json, sys
import numpy as np
from daemon.allocator import return_large_blocks
set_it = sys.argv[1] == "1" and return_large_blocks()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
big = np.ones(24 * 2**20 // 8); del big
before = rss()
arrays, pins = [], []
for _ in range(10):
    arrays.append(np.ones(8 * 2**20 // 8))
    pins.append(bytearray(64 * 1024))
del arrays
print(json.dumps({"set": set_it, "retained_mib": (rss() - before) / 2**20}))
"""


def retained(fixed: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    out = subprocess.run([sys.executable, "-c", RETAINED, "1" if fixed else "0"], cwd=ROOT,
                         env=env, capture_output=True, text=True, check=True).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_freed_large_arrays_leave_the_process_with_the_threshold_fixed() -> None:
    default, fixed = retained(False), retained(True)
    assert default["retained_mib"] > 60, default  # glibc's own behaviour: kept in the heap
    assert fixed["set"] is True
    assert fixed["retained_mib"] < 10, fixed


def test_a_users_own_threshold_stands() -> None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", "from daemon.allocator import return_large_blocks;"
                          "print(return_large_blocks())"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
