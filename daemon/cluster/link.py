"""The daemon's connection to Redis, with Redis's failures spoken as the journal's.

Every part of a cluster node (queue, events, node records) talks to Redis through one Link, so
one place knows whether Redis answers: a refused connection, a timeout, a Redis still loading
its AOF or refusing writes (MISCONF: it cannot persist; OOM; a read-only replica) becomes
JournalUnavailable, which every caller already waits out, and `problem` says so to /healthz
until a call works again. Anything else Redis refuses is a bug and raised as it is.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..journal import JournalUnavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3.0
COMMAND_TIMEOUT_SECONDS = 10.0
WAIT_RETRY_SECONDS = 2.0
# Replies that mean "Redis cannot do this just now", not "this call is wrong".
UNAVAILABLE_REPLIES = ("MISCONF", "OOM", "READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS",
                       "TRYAGAIN", "BUSY ")


def shown_url(url: str) -> str:
    """The URL for logs and /status: a password in it is never shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def unavailable(exc: redis.RedisError) -> bool:
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(UNAVAILABLE_REPLIES)


def detail(exc: redis.RedisError) -> str:
    return str(exc).rstrip(".")


class Link:
    """A connection pool to one Redis and what using it last met."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = shown_url(url)
        # One quick retry: a pooled connection Redis dropped (a restart) is reconnected, and
        # only on a refused send, never after a reply went missing (a claim must not run twice).
        # Any: redis-py types each reply as the union of every shape (sync and async, RESP2
        # and 3); the replies used here are bytes, lists and dicts of bytes (RESP2)
        self.client: Any = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=COMMAND_TIMEOUT_SECONDS, health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1,
                        supported_errors=(redis.ConnectionError,)))
        self._lock = threading.Lock()
        self._problem: str | None = None
        self._up_since: float | None = None

    @property
    def problem(self) -> str | None:
        return self._problem

    def connected_for(self) -> float:
        """Seconds Redis has answered without a failure between (0 while it does not)."""
        since = self._up_since
        return 0.0 if since is None else time.monotonic() - since

    def blocking_client(self, block_seconds: float) -> Any:
        """A client of its own for a blocking read (XREAD BLOCK), which would hold a pooled
        connection and trip the command timeout."""
        return redis.Redis.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                                    socket_timeout=block_seconds + COMMAND_TIMEOUT_SECONDS)

    def connect(self, wait: bool) -> None:
        """At start: Redis answers, or one line that says what to do (or, with `wait`, a
        line and then a wait until it answers)."""
        said = False
        while True:
            try:
                with self.guard():
                    self.client.ping()
                return
            except JournalUnavailable as exc:
                if not wait:
                    raise JournalUnavailable(
                        f"{exc}; start it, or set cluster.wait_for_backend = true to wait for"
                        " it", "queue_unavailable") from None
                if not said:
                    log.warning("%s; waiting for it (cluster.wait_for_backend)", exc)
                    said = True
            time.sleep(WAIT_RETRY_SECONDS)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Redis's failures as JournalUnavailable; a success after trouble clears it."""
        try:
            yield
        except redis.RedisError as exc:
            if not unavailable(exc):
                raise
            self._failed(exc)
            raise JournalUnavailable(f"cannot reach Redis at {self.shown} (cluster.url): "
                                     f"{detail(exc)}", "queue_unavailable") from exc
        with self._lock:
            if self._up_since is None:
                self._up_since = time.monotonic()
            if self._problem is not None:
                log.info("Redis at %s answers again", self.shown)
                self._problem = None

    def _failed(self, exc: redis.RedisError) -> None:
        with self._lock:
            # once per spell, not every retry; at start `connect` says it in its own line
            if self._problem is None and self._up_since is not None:
                log.error("cannot reach Redis at %s: %s; tried again until it works",
                          self.shown, detail(exc))
            self._up_since = None
            self._problem = f"cannot reach Redis at {self.shown}: {detail(exc)}"

    def close(self) -> None:
        self.client.close()
