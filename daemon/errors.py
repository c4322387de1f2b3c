"""The small vocabulary of failures, because the kind of error decides what happens next.

- ConfigError: the daemon refuses to start (exit 2).
- InputError: the file itself is bad (not media, no audio, corrupt); retrying cannot help, so the
  job fails at once with an error file and the input stays where it is.
- TransientError: the world is in the way (disk full, share gone, I/O error); retry with backoff.
- Cancelled: a stop or a cancel request reached a safe point; the job is requeued or canceled,
  and no attempt is charged for a stop.
"""

from __future__ import annotations

import errno


class SubwatchError(Exception):
    """Base of the project's own errors; `code` is the short name stored in job records."""

    code = "error"


class ConfigError(SubwatchError):
    code = "config"


class ModelUnavailable(SubwatchError):
    """The configured model cannot be had (offline, typo, missing folder)."""

    code = "model_unavailable"


class InputError(SubwatchError):
    """A permanent problem with one input file."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TransientError(SubwatchError):
    """A problem that may go away by itself; worth a retry later."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Cancelled(SubwatchError):
    code = "canceled"


# errno values that mean "the storage is unwell", not "the file is bad".
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "ENOSPC", "EIO", "EAGAIN", "EBUSY", "ESTALE", "ETIMEDOUT", "EHOSTDOWN", "EHOSTUNREACH",
        "ENOTCONN", "ECONNRESET", "ECONNABORTED", "ENETDOWN", "ENETUNREACH", "EDQUOT", "ENOMEM",
        "EINTR", "ENOLINK", "EREMOTEIO", "ENODEV", "ENXIO",
    ) if hasattr(errno, name)
)


def classify_os_error(exc: OSError, what: str) -> SubwatchError:
    """Map an OSError met while reading input or writing output to permanent or transient."""
    reason = exc.strerror or str(exc)
    if exc.errno in TRANSIENT_ERRNOS:
        return TransientError("io_error", f"{what}: {reason}")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return TransientError("vanished", f"{what}: {reason}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return TransientError("permission", f"{what}: {reason}")
    return TransientError("io_error", f"{what}: {reason}")
