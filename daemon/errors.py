"""The small vocabulary of failures, because the kind of error decides what happens next.

- ConfigError: the daemon refuses to start (exit 2).
- InputError: the file itself is bad (not media, no audio, corrupt, a container that refers to
  other files, too long), or the storage refuses it in a way no retry changes (a name too long,
  a read-only filesystem); retrying cannot help, so the job fails at once with an error file and
  the input stays where it is.
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


# Out of descriptors (this process's or the system's): the daemon is short, not the file, so
# the job goes back to the queue with no attempt charged.
OUT_OF_DESCRIPTORS = frozenset((errno.EMFILE, errno.ENFILE))
DAEMON_SHORT = "out_of_descriptors"
# No room in state_dir for a job's decoded audio (pipeline.spool): the daemon's disk, likewise.
SPOOL_FULL = "spool_full"


def daemon_short(exc: BaseException) -> bool:
    """Did this failure come from the daemon's own shortage rather than from the job?"""
    if isinstance(exc, TransientError):
        return exc.code in (DAEMON_SHORT, SPOOL_FULL)
    return isinstance(exc, OSError) and exc.errno in OUT_OF_DESCRIPTORS


# errno values that fail the same way on every retry: a name too long for the filesystem, an
# argument the filesystem refuses, a read-only mount, a symlink loop (or a link where none may
# be). Retrying them only repeats the work and delays the error file.
PERMANENT_ERRNOS = {
    errno.ENAMETOOLONG: "name_too_long",
    errno.EINVAL: "invalid",
    errno.EROFS: "read_only",
    errno.ELOOP: "symlink",
}


def classify_os_error(exc: OSError, what: str) -> SubwatchError:
    """Map an OSError met while reading input or writing output to permanent or transient."""
    reason = exc.strerror or str(exc)
    if exc.errno in OUT_OF_DESCRIPTORS:
        return TransientError(DAEMON_SHORT, f"{what}: {reason}")
    if exc.errno in PERMANENT_ERRNOS:
        return InputError(PERMANENT_ERRNOS[exc.errno], f"{what}: {reason}")
    if exc.errno in TRANSIENT_ERRNOS:
        return TransientError("io_error", f"{what}: {reason}")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return TransientError("vanished", f"{what}: {reason}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return TransientError("permission", f"{what}: {reason}")
    return TransientError("io_error", f"{what}: {reason}")
