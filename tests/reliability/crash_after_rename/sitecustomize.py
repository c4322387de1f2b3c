"""A crash at one exact moment, injected from outside the daemon's code (test use only).

On PYTHONPATH, Python imports this module at start. With SUBWATCH_TEST_KILL_AFTER_RENAME set
to a file name, the process SIGKILLs itself as soon as an `os.replace` onto a file of that name
has returned: for an output, right after its atomic rename and before anything else (the
journal's commit, the log line). Nothing else changes; the daemon has no test hook of its own.
"""

from __future__ import annotations

import os
import signal
from typing import Any

_TARGET = os.environ.get("SUBWATCH_TEST_KILL_AFTER_RENAME")
_replace = os.replace


def _replace_then_die(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
    _replace(src, dst, *args, **kwargs)
    if os.path.basename(os.fsdecode(dst)) == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)


if _TARGET:
    os.replace = _replace_then_die
