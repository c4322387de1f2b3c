"""The job queue on Redis Streams with a consumer group, for several machines on one library.

The same contract as the SQLite journal (daemon/queue.py; tests/test_queue_contract.py), so the
daemon's parts never ask which one they hold. What Redis adds (scripts.py has the keys):
- admission is idempotent by identity (one key per identity, set once), so two intake nodes
  scanning one share admit a file once;
- a claim reads its level's stream through the consumer group (XREADGROUP): the entry stays
  pending, owned by this node, while the job runs; `heartbeat` keeps its idle time low;
  finishing acknowledges it (XACK);
- `recover` takes over entries nobody heartbeated for `cluster.claim_timeout` (XAUTOCLAIM),
  with the dead worker's attempt still charged, so a poison file fails after max_attempts.

Blocking and thread-safe like the journal: the daemon calls it from its threads. The client is
redis-py's synchronous one for that reason (every call site runs in a worker thread through
`Blocking`, and the watcher's scan thread asks `known` synchronously).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import threading
import time
from typing import Any

from ..journal import FINAL_STATES, STATES, Identity, Job
from . import scripts
from .link import Link
from .registry import NodeRegistry

INTS = frozenset({"size", "mtime_ns", "inode", "attempts", "priority"})
FLOATS = frozenset({"created_at", "updated_at", "started_at", "finished_at", "next_attempt_at",
                    "audio_seconds", "processing_seconds"})
JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


def encoded(value: Any) -> bytes:
    """A field as Redis stores it. Text keeps the odd bytes of a non-UTF-8 name (surrogate
    escapes, as the journal does), floats their full precision."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode("utf-8", "surrogateescape")


def digest(*parts: Any) -> str:
    return hashlib.sha1(b"\0".join(encoded(p) for p in parts)).hexdigest()


def job_from(flat: list[bytes] | dict[bytes, bytes] | None) -> Job | None:
    """A Job from its hash (HGETALL as a dict or as the flat list a script returns)."""
    if not flat:
        return None
    raw = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    fields = {k.decode(): v for k, v in raw.items()}
    data: dict[str, Any] = {}
    for name in JOB_FIELDS:
        value = fields.get(name)
        if name in ("outputs", "written", "track"):
            data[name] = json.loads(value) if value else ([] if name == "outputs" else None)
        elif name in INTS:
            data[name] = int(value) if value is not None else 0
        elif name in FLOATS:
            data[name] = float(value) if value is not None else None
        else:
            data[name] = value.decode("utf-8", "surrogateescape") if value is not None else None
    data["kind"] = data["kind"] or "file"
    return Job(**data)


class RedisQueue:
    """A cluster node's view of the queue: what it holds (claimed and not yet ended) is its own;
    every other job it may read, admit, cancel while waiting, or take over when its worker
    died."""

    def __init__(self, link: Link, name: str, node: str, max_attempts: int,
                 claim_timeout: float) -> None:
        self.link = link
        self.name = name
        self.node = node
        self.max_attempts = max_attempts
        self.claim_timeout = claim_timeout
        self._prefix = f"{name}:"
        self._held: dict[str, str] = {}  # job id → its stream entry, while this node runs it
        self._holding = threading.Lock()  # a claim's reply and `recover` never interleave
        self._claim_token = secrets.token_hex(8)  # kept until a claim's reply arrives
        self._scripts = {n: link.client.register_script(getattr(scripts, n)) for n in (
            "ADMIT", "KNOWN", "CLAIM", "MOVE", "HEARTBEAT", "WRITTEN", "REAP")}
        self.registry = NodeRegistry(link, self._prefix)
        self.life = secrets.token_hex(8)  # this process's life as `node`, in its record

    @property
    def problem(self) -> str | None:
        return self.link.problem

    def close(self) -> None:
        self.link.close()

    def _run(self, script: str, *args: Any) -> Any:
        with self.link.guard():
            return self._scripts[script](args=[self._prefix, *args])

    def _key(self, *parts: str) -> str:
        return self._prefix + "".join(parts)

    # ---------------------------------------------------------------- lifecycle

    def recover(self) -> tuple[int, list[Job]]:
        """This node's own entries from before a restart at once; others' once Redis has
        answered this node for claim_timeout (after an outage every live worker gets that long
        to heartbeat first, so a job still running is not taken from it)."""
        ripe = self.link.connected_for() >= self.claim_timeout
        with self._holding:
            requeued, failed = self._run(
                "REAP", self.node, str(int(self.claim_timeout * 1000)) if ripe else "",
                self.max_attempts, time.time(), *self._held.values())
        return int(requeued), [job for i in failed if (job := self.get(i.decode()))]

    # ---------------------------------------------------------------- intake

    def known(self, identity: Identity) -> bool:
        return bool(self._run("KNOWN", _identity_key(identity)))

    def outputs_of(self, rel_path: str) -> set[str]:
        with self.link.guard():
            ids = self.link.client.smembers(self._key("path:", digest(rel_path)))
            pipe = self.link.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(self._key("job:", job_id.decode()), "state", "outputs")
            rows = pipe.execute()
        return {out for state, outputs in rows if state == b"done"
                for out in json.loads(outputs or b"[]")}

    def admit(self, identity: Identity, state: str = "queued", message: str | None = None,
              *, kind: str = "file", priority: int = 0) -> Job | None:
        now = time.time()
        job_id = secrets.token_hex(8)
        fields: dict[str, Any] = {
            "id": job_id, "rel_path": identity.rel_path, "size": identity.size,
            "mtime_ns": identity.mtime_ns, "inode": identity.inode, "state": state,
            "attempts": 0, "created_at": now, "updated_at": now, "outputs": "[]",
            "kind": kind, "priority": priority}
        if message is not None:
            fields["message"] = message
        if state in FINAL_STATES:
            fields["finished_at"] = now
        flat = [encoded(v) for pair in fields.items() for v in pair]
        return job_from(self._run("ADMIT", _identity_key(identity), digest(identity.rel_path),
                                  job_id, now, state, *flat))

    # ---------------------------------------------------------------- work

    def claim(self, now: float | None = None) -> Job | None:
        now = time.time() if now is None else now
        with self._holding:
            got = self._run("CLAIM", self.node, now, self._claim_token)
            self._claim_token = secrets.token_hex(8)  # answered: the next claim is a new one
            job = job_from(got[1:]) if got else None
            if job is not None:
                self._held[job.id] = got[0].decode()
        return job

    def heartbeat(self, job_id: str) -> bool:
        entry = self._held.get(job_id)
        if entry is None:
            return False
        if self._run("HEARTBEAT", job_id, entry, self.node):
            return True
        self._held.pop(job_id, None)  # taken over (this node stalled) or ended elsewhere
        return False

    def held(self) -> list[str]:
        return list(self._held)

    def record_written(self, job_id: str, written: dict[str, Any] | None) -> None:
        self._run("WRITTEN", job_id, self._held.get(job_id, ""), time.time(),
                  "" if written is None else json.dumps(written))

    def finish(self, job_id: str, outputs: list[str], language: str | None, result: str,
               audio_seconds: float, processing_seconds: float,
               track: dict[str, Any] | None = None) -> bool:
        return self._move(job_id, "done", ("running",), {
            "outputs": json.dumps(outputs), "language": language, "result": result,
            "audio_seconds": audio_seconds, "processing_seconds": processing_seconds,
            "track": json.dumps(track) if track else None,
            "finished_at": time.time(), "error": None, "message": None, "written": None})

    def fail(self, job_id: str, code: str, message: str) -> None:
        self._move(job_id, "failed", ("running",),
                   {"error": code, "message": message, "finished_at": time.time()})

    def retry_later(self, job_id: str, code: str, message: str, delay: float) -> None:
        self._move(job_id, "retry_wait", ("running",), {
            "error": code, "message": message, "next_attempt_at": time.time() + delay})

    def prioritize(self, job_id: str, priority: int) -> bool:
        return self._move(job_id, "queued", ("queued",), {"priority": priority})

    def requeue(self, job_id: str) -> bool:
        return self._move(job_id, "queued", ("running",), {}, refund=True)

    def defer(self, job_id: str, delay: float) -> bool:
        return self._move(job_id, "retry_wait", ("running",),
                          {"next_attempt_at": time.time() + delay}, refund=True)

    def reset(self, job_id: str) -> bool:
        return self._move(job_id, "queued", ("failed", "canceled", "done", "skipped"), {
            "attempts": 0, "error": None, "message": None, "next_attempt_at": None,
            "finished_at": None})

    def cancel(self, job_id: str, reason: str, code: str = "canceled",
               states: tuple[str, ...] = ("running",)) -> bool:
        return self._move(job_id, "canceled", states,
                          {"error": code, "message": reason, "finished_at": time.time()})

    def _move(self, job_id: str, state: str, from_states: tuple[str, ...],
              fields: dict[str, Any], refund: bool = False) -> bool:
        """Every transition names the states it may start from (as the journal's do); a job
        that runs moves only under the entry this node holds."""
        sets = [encoded(x) for k, v in fields.items() if v is not None for x in (k, v)]
        dels = [k for k, v in fields.items() if v is None]
        moved = bool(self._run("MOVE", job_id, self._held.get(job_id, ""), state, time.time(),
                               ",".join(from_states), "refund" if refund else "",
                               len(sets) // 2, *sets, *dels))
        if moved:
            self._held.pop(job_id, None)
        return moved

    # ---------------------------------------------------------------- queries

    def get(self, job_id: str) -> Job | None:
        with self.link.guard():
            return job_from(self.link.client.hgetall(self._key("job:", job_id)))

    def list_jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        index = self._key("state:", state) if state else self._key("all")
        with self.link.guard():
            ids = self.link.client.zrevrange(index, 0, limit - 1)
            pipe = self.link.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(self._key("job:", job_id.decode()))
            rows = pipe.execute()
        return [job for row in rows if (job := job_from(row))]

    def counts(self) -> dict[str, int]:
        with self.link.guard():
            pipe = self.link.client.pipeline(transaction=False)
            for state in STATES:
                pipe.zcard(self._key("state:", state))
            return dict(zip(STATES, pipe.execute(), strict=True))

    def next_due(self) -> float | None:
        with self.link.guard():
            first = self.link.client.zrange(self._key("due"), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.link.guard():
            value = self.link.client.hget(self._key("meta"), key)
        return value.decode() if value is not None else default

    def set_meta(self, key: str, value: str) -> None:
        with self.link.guard():
            self.link.client.hset(self._key("meta"), key, value)

    def describe(self) -> dict[str, Any]:
        return {"backend": "redis", "url": self.link.shown, "name": self.name,
                "node": self.node, "nodes": self.registry.nodes(self.claim_timeout)}


def _identity_key(identity: Identity) -> str:
    return digest(identity.rel_path, identity.size, identity.mtime_ns)

