"""Scale-out: several machines work one library through Redis Streams (`[cluster]`).

The composition root asks this package for what depends on the backend and the node's role,
so it never asks itself: the queue (the SQLite journal, or Redis), whether this node watches
the inbox (roles `all`, `intake`) and how many jobs it runs at once (roles `all`, `worker`),
and the node's periodic cluster work (nothing for SQLite). Redis is imported only when used.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

from ..config import Config, LiveConfig
from ..events import GLOBAL_HISTORY_FACTOR, EventBus
from ..journal import Journal
from ..models import ModelCache
from ..monitor import Lifecycle
from ..outcomes import Outcomes
from ..progress import RunningJobs
from ..queue import JobQueue
from ..threads import Blocking
from ..watcher import Watcher

NODE_FILE = "cluster-node"


def node_id(state_dir: Path) -> str:
    """This node's name in the cluster, kept in its state_dir: the same across restarts, so a
    restarted node takes back at once the jobs it was running when it died. Two live daemons
    with one name are refused at start (`NodeRegistry.check_alone`)."""
    path = state_dir / NODE_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        name = f"{socket.gethostname()}-{secrets.token_hex(3)}"
        path.write_text(name + "\n", encoding="utf-8")
        return name


def open_queue(config: Config) -> JobQueue:
    """The job queue the config asks for. Redis must answer now (or, with
    `cluster.wait_for_backend`, once it does): JournalUnavailable otherwise."""
    cluster = config.cluster
    if cluster.backend == "sqlite":
        return Journal(config.paths.state_dir / "journal.sqlite3", config.jobs.max_attempts)
    from .link import Link
    from .nodes import BEATS_PER_CLAIM_TIMEOUT
    from .queue import RedisQueue

    link = Link(cluster.url)
    link.connect(cluster.wait_for_backend)
    queue = RedisQueue(link, cluster.name, node_id(config.paths.state_dir),
                       config.jobs.max_attempts, cluster.claim_timeout)
    try:  # before any job is taken: no second live daemon under this id
        queue.registry.check_alone(queue.node, queue.life, cluster.claim_timeout,
                                   cluster.claim_timeout / BEATS_PER_CLAIM_TIMEOUT)
    except BaseException:
        queue.close()
        raise
    return queue


def takes_jobs(config: Config) -> bool:
    return config.cluster.role != "intake"


def job_workers(config: Config) -> int:
    """Jobs this node runs at once: none on an intake node."""
    return config.jobs.workers if takes_jobs(config) else 0


def watch(config: Config, watcher: Watcher) -> Coroutine[Any, Any, None]:
    """The watcher's run, or on a worker node nothing: intake nodes admit the files."""
    if config.cluster.role != "worker":
        return watcher.run()
    return _not_watching(watcher)


async def _not_watching(watcher: Watcher) -> None:
    watcher.pause()
    watcher.first_scan_done.set()  # nothing to find: ready at once


class Parts(Protocol):
    """What a node's cluster work uses of the composition root (the Service has them)."""

    live: LiveConfig
    life: Lifecycle
    journal: JobQueue
    bus: EventBus
    running: RunningJobs
    cache: ModelCache
    outcomes: Outcomes
    blocking: Blocking


def cluster_work(parts: Parts, wake: asyncio.Event) -> Coroutine[Any, Any, None]:
    """The node's cluster work, a task for its whole life (nothing for SQLite). From this
    call on, the bus's events go through the cluster's stream; `wake` wakes idle workers."""
    config = parts.live.current
    if config.cluster.backend != "redis":
        return _nothing()
    from .events import ClusterEvents
    from .nodes import ClusterNode
    from .queue import RedisQueue

    queue = parts.journal
    assert isinstance(queue, RedisQueue), "open_queue makes a RedisQueue for this config"
    cap = config.http.history_size * GLOBAL_HISTORY_FACTOR
    events = ClusterEvents(queue.link, f"{queue.name}:", parts.bus, queue.node, cap)
    node = ClusterNode(config.cluster.role, job_workers(config), queue, events, parts.running,
                       parts.cache, parts.outcomes, parts.blocking, wake)
    parts.life.checks.append(node.problems)  # /healthz: events stopped, a twin under its id
    return node.run()


async def _nothing() -> None:
    return None
