"""The cluster's nodes as /status lists them: each node writes its record (role, heartbeat,
running jobs, model cache) every few seconds; a record that stops being written expires, and
the node is listed as gone (with when it was last seen) for a day.

Each record carries the token of the process life that wrote it, so a node id used by two
live processes (a state_dir copied to a second machine, or shared by two daemons) is seen:
at start by `check_alone`, while running by the previous record `beat` returns."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ..journal import JournalUnavailable
from .link import Link

log = logging.getLogger(__name__)

GONE_AFTER_BEATS = 3  # a node whose record is this many claim timeouts old is listed as gone
FORGET_SECONDS = 86400.0
LOOK_AGAIN_BEATS = 1.5  # how long a start watches a fresh record of its id, in beat intervals
LOOK_SECONDS = 0.2


class DuplicateNode(JournalUnavailable):
    """This node's id is in use by another live process. A JournalUnavailable because, like an
    unreachable Redis, it means the node cannot use the cluster's queue: the daemon refuses to
    start with one line (exit 1) and does nothing to the other process's jobs."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "duplicate_node")


def duplicate(node: str, record: dict[str, Any]) -> str:
    """What to say when another process uses this node's id, and the fix."""
    return (f"cluster node id {node!r} is in use by another daemon too (pid {record.get('pid')} "
            f"on {record.get('host')}; a state_dir copied to a second machine, or one state_dir "
            "shared by two daemons): delete state_dir/cluster-node on one of them, which then "
            "joins under a new id")


class NodeRegistry:
    def __init__(self, link: Link, prefix: str) -> None:
        self._link = link
        self._nodes = prefix + "nodes"
        self._prefix = prefix + "node:"

    def beat(self, node: str, record: dict[str, Any],
             claim_timeout: float) -> dict[str, Any] | None:
        """Write `node`'s record; the record it replaced (whose token says who wrote it)."""
        now = time.time()
        ttl_ms = int(GONE_AFTER_BEATS * claim_timeout * 1000)
        with self._link.guard():
            pipe = self._link.client.pipeline(transaction=False)
            pipe.set(self._prefix + node, json.dumps({**record, "heartbeat": now}), px=ttl_ms,
                     get=True)
            pipe.zadd(self._nodes, {node: now})
            pipe.zremrangebyscore(self._nodes, "-inf", now - FORGET_SECONDS)
            previous = pipe.execute()[0]
        return json.loads(previous) if previous is not None else None

    def leave(self, node: str, token: str) -> None:
        """At a clean stop: take down this life's record (not a twin's), so a restart at once
        does not watch it as another daemon's; /status lists the node as gone, last seen now."""
        seen = self.record(node)
        if seen is not None and seen.get("token") == token:
            with self._link.guard():
                self._link.client.delete(self._prefix + node)

    def record(self, node: str) -> dict[str, Any] | None:
        with self._link.guard():
            raw = self._link.client.get(self._prefix + node)
        return json.loads(raw) if raw is not None else None

    def check_alone(self, node: str, token: str, claim_timeout: float, interval: float) -> None:
        """At start, before any job is taken: DuplicateNode when another live process beats
        under `node`. A fresh record with another token is either that, or this node's own
        previous life, killed a moment ago (a crash and a restart by systemd). The two differ
        in one thing only: a live process writes its record again every beat `interval`, a
        dead one never. So look again for up to 1.5 intervals (slack for a late beat): a
        record that moved is refused, one that stayed is a dead life's, and the node starts
        (its first beat then replaces it, and it takes back its own jobs). A lock key renewed
        by the beat would need the same wait (for the dead life's lock to expire) and one more
        key; the record is already there. Two processes starting in the same instant may both
        pass: the beat sees them then (`beat`'s previous record), and /healthz says so."""
        seen = self.record(node)
        if seen is None or seen.get("token") == token or (
                time.time() - float(seen.get("heartbeat", 0)) >= claim_timeout):
            return
        wait = interval * LOOK_AGAIN_BEATS
        log.info("cluster node id %r has a fresh record from another process life (pid %s on "
                 "%s): watching it for %.1f s to tell a restart after a crash from a second "
                 "live daemon", node, seen.get("pid"), seen.get("host"), wait)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(LOOK_SECONDS)
            now = self.record(node)
            if now is not None and now.get("token") != token and (
                    now.get("heartbeat") != seen.get("heartbeat")):
                raise DuplicateNode(duplicate(node, now))

    def nodes(self, claim_timeout: float) -> list[dict[str, Any]]:
        with self._link.guard():
            seen = self._link.client.zrange(self._nodes, 0, -1, withscores=True)
            names = [name.decode() for name, _ in seen]
            records = self._link.client.mget([self._prefix + n for n in names]) if names else []
        out = []
        for (name, last), raw in zip(seen, records, strict=True):
            if raw is None:
                out.append({"node": name.decode(), "alive": False, "heartbeat": last})
                continue
            record = json.loads(raw)
            fresh = time.time() - record["heartbeat"] < GONE_AFTER_BEATS * claim_timeout
            out.append({"node": name.decode(), "alive": fresh, **record})
        return out
