"""The cluster's nodes as /status lists them: each node writes its record (role, heartbeat,
running jobs, model cache) every few seconds; a record that stops being written expires, and
the node is listed as gone (with when it was last seen) for a day."""

from __future__ import annotations

import json
import time
from typing import Any

from .link import Link

GONE_AFTER_BEATS = 3  # a node whose record is this many claim timeouts old is listed as gone
FORGET_SECONDS = 86400.0


class NodeRegistry:
    def __init__(self, link: Link, prefix: str) -> None:
        self._link = link
        self._nodes = prefix + "nodes"
        self._prefix = prefix + "node:"

    def beat(self, node: str, record: dict[str, Any], claim_timeout: float) -> None:
        now = time.time()
        ttl_ms = int(GONE_AFTER_BEATS * claim_timeout * 1000)
        with self._link.guard():
            pipe = self._link.client.pipeline(transaction=False)
            pipe.set(self._prefix + node, json.dumps({**record, "heartbeat": now}), px=ttl_ms)
            pipe.zadd(self._nodes, {node: now})
            pipe.zremrangebyscore(self._nodes, "-inf", now - FORGET_SECONDS)
            pipe.execute()

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
