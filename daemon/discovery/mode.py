"""Events or polling: inotify sees no change made on another machine of a network share."""

from __future__ import annotations

import os
from pathlib import Path

NETWORK_FS = ("nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "ceph", "glusterfs",
              "afs", "davfs", "fuse", "sshfs", "lustre", "gpfs", "beegfs", "virtiofs")


def filesystem_type(path: Path) -> str:
    """The fstype of the mount holding `path`, from /proc/mounts ('' if unknown)."""
    try:
        real = os.path.realpath(path)
        best, fstype = "", ""
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, fstype = mount, fields[2]
        return fstype
    except OSError:
        return ""


def choose_mode(mode: str, inbox: Path) -> str:
    """events or poll; `auto` polls on network filesystems, where inotify sees no remote change."""
    if mode != "auto":
        return mode
    fstype = filesystem_type(inbox)
    network = any(fstype == n or fstype.startswith(n + ".") for n in NETWORK_FS)
    return "poll" if network else "events"
