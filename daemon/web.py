"""The HTTP side for monitoring: health, status, jobs, events (SSE), history, metrics, a page.

Routes read from the parts they are given (journal, bus, running jobs, monitor) and ask Control
for changes (retry, cancel, reload, log levels); blocking reads go to the daemon's threads.
Access: a bearer token on every route but /healthz when `http.token` is set (compared in
constant time; the page and EventSource, which cannot set headers, may pass it as `?token=`),
and a Host check against DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from .config import LOG_LEVELS, LiveConfig
from .control import Control
from .events import Event, EventBus, EventType
from .journal import Job, Journal
from .metrics import CONTENT_TYPE, Metrics
from .monitor import Monitor
from .progress import RunningJobs
from .threads import Blocking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Api:
    """Everything the routes use, passed in (the web layer knows no daemon class)."""

    live: LiveConfig
    journal: Journal
    bus: EventBus
    running: RunningJobs
    monitor: Monitor
    control: Control
    metrics: Metrics
    blocking: Blocking


API = web.AppKey("api", Api)
PAGE = web.AppKey("page", str)
HEARTBEAT_SECONDS = 15.0
JOB_ID_CHARS = frozenset("0123456789abcdef")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _api(request: web.Request) -> Api:
    return request.app[API]


# ---------------------------------------------------------------------------- access

def allowed_hosts(host: str, extra: tuple[str, ...]) -> set[str]:
    """Host header names accepted: the bound address, localhost, and configured names."""
    return {"localhost", "127.0.0.1", "::1", host.lower(), *(h.lower() for h in extra)}


def _host_ok(header: str, names: set[str], wildcard: bool) -> bool:
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host in names:
        return True
    if wildcard:  # bound to every interface: the machine's own addresses are fine, names not
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return False
    return False


@web.middleware
async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
    cfg = _api(request).live.current.http
    wildcard = cfg.host in ("0.0.0.0", "::", "")
    if not _host_ok(request.host or "", allowed_hosts(cfg.host, cfg.allowed_hosts), wildcard):
        return web.json_response({"error": "host not allowed"}, status=421)
    if cfg.token and request.path != "/healthz" and not _token_ok(request, cfg.token):
        return web.json_response({"error": "unauthorized"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


def _token_ok(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())


# ---------------------------------------------------------------------------- plain routes

async def healthz(request: web.Request) -> web.Response:
    ok, reasons = _api(request).monitor.health()
    if ok:
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "degraded", "reasons": reasons}, status=503)


async def status(request: web.Request) -> web.Response:
    api = _api(request)
    return web.json_response(await api.blocking(api.monitor.status))


async def jobs(request: web.Request) -> web.Response:
    api = _api(request)
    state = request.query.get("state") or None
    try:
        limit = max(1, min(int(request.query.get("limit", "100")), 1000))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    rows = await api.blocking(api.journal.list_jobs, state, limit)
    return web.json_response({"jobs": [j.as_dict() for j in rows], "count": len(rows)})


def _job_id(request: web.Request) -> str:
    """Job ids are 16 hex characters; anything else (traversal, junk) is a plain 404."""
    job_id = request.match_info["job_id"]
    if len(job_id) != 16 or not set(job_id) <= JOB_ID_CHARS:
        raise web.HTTPNotFound(text="no such job")
    return job_id


async def _known_job_id(request: web.Request) -> str:
    """A job id with events in memory or a record in the journal; 404 otherwise."""
    api = _api(request)
    job_id = _job_id(request)
    if not api.bus.has_job(job_id) and await api.blocking(api.journal.get, job_id) is None:
        raise web.HTTPNotFound(text="no such job")
    return job_id


async def _existing_job(request: web.Request) -> Job:
    api = _api(request)
    found = await api.blocking(api.journal.get, _job_id(request))
    if found is None:
        raise web.HTTPNotFound(text="no such job")
    return found


async def job(request: web.Request) -> web.Response:
    found = await _existing_job(request)
    data = found.as_dict()
    running = _api(request).running.get(found.id)
    data["progress"] = running.as_dict() if running else None
    data["last_error"] = ({"error": found.error, "message": found.message}
                          if found.error else None)
    return web.json_response(data)


async def retry(request: web.Request) -> web.Response:
    found = await _existing_job(request)
    state = await _api(request).control.retry(found.id)
    if state != "queued":
        return web.json_response({"id": found.id, "state": state,
                                  "error": f"a {state} job cannot be retried"}, status=409)
    return web.json_response({"id": found.id, "state": state})


async def cancel(request: web.Request) -> web.Response:
    found = await _existing_job(request)
    state = await _api(request).control.cancel(found.id)
    if state not in ("canceled", "canceling"):
        return web.json_response({"id": found.id, "state": state,
                                  "error": f"a {state} job cannot be canceled"}, status=409)
    return web.json_response({"id": found.id, "state": state})


async def history(request: web.Request) -> web.Response:
    """GET /jobs/{id}/events/history?since=&after_id=&types= (design §8.3)."""
    api = _api(request)
    job_id = await _known_job_id(request)
    try:
        since = float(request.query["since"]) if "since" in request.query else None
        after = int(request.query["after_id"]) if "after_id" in request.query else None
    except ValueError:
        raise web.HTTPBadRequest(text="since must be a number, after_id an integer") from None
    types = [t for t in request.query.get("types", "").split(",") if t] or None
    events = api.bus.history(job_id, after_id=after, since=since, types=types)
    return web.json_response({"job_id": job_id, "events": [e.history_item() for e in events],
                              "count": len(events)})


async def set_logging(request: web.Request) -> web.Response:
    """POST /logging {"level": "DEBUG", "levels": {"faster_whisper": "INFO"}}: live, no restart."""
    api = _api(request)
    try:
        body = await request.json()
        level = str(body.get("level", api.live.current.logging.level)).upper()
        levels = {str(k): str(v).upper() for k, v in (body.get("levels") or {}).items()}
    except (ValueError, AttributeError):
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    bad = [v for v in (level, *levels.values()) if v not in LOG_LEVELS]
    if bad:
        raise web.HTTPBadRequest(text=f"unknown level {bad[0]!r}; one of {', '.join(LOG_LEVELS)}")
    new = api.control.set_log_levels(level, levels).logging
    return web.json_response({"level": new.level, "levels": new.levels})


async def reload(request: web.Request) -> web.Response:
    return web.json_response(await _api(request).control.reload())


async def metrics(request: web.Request) -> web.Response:
    api = _api(request)
    body = await api.blocking(api.metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def page(request: web.Request) -> web.Response:
    return web.Response(text=request.app[PAGE], content_type="text/html",
                        headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------------- SSE

def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text="Last-Event-ID must be an integer") from None


async def events_all(request: web.Request) -> web.StreamResponse:
    return await _stream(request, None)


async def events_job(request: web.Request) -> web.StreamResponse:
    return await _stream(request, await _known_job_id(request))


async def _stream(request: web.Request, job_id: str | None) -> web.StreamResponse:
    """Replay history after Last-Event-ID, then live events, with heartbeats between."""
    bus = _api(request).bus
    after = _last_event_id(request)
    sub, replay = bus.subscribe(job_id, after)
    resp: Any = None
    try:
        async with sse_response(request, ping_interval=HEARTBEAT_SECONDS,
                                headers={"X-Accel-Buffering": "no"}) as resp:
            last = await _send(resp, replay, after if after is not None else -1)
            while resp.is_connected() and not sub.closed:
                batch = await sub.next_batch(timeout=HEARTBEAT_SECONDS)
                last = await _send(resp, batch, last)
            if sub.closed and resp.is_connected():
                await resp.send(json.dumps({"reason": sub.reason}),
                                event=EventType.STREAM_CLOSED)
    except (ConnectionResetError, TimeoutError, RuntimeError):
        pass  # the reader went away (or stalled past the send timeout)
    finally:
        bus.unsubscribe(sub)
    return resp


async def _send(resp: Any, events: list[Event], last: int) -> int:
    for event in events:
        if event.id <= last:
            continue  # never a duplicate, even if replay and live overlap
        await resp.send(json.dumps(event.data(), ensure_ascii=False), id=str(event.id),
                        event=event.type)
        last = event.id
    return last


# ---------------------------------------------------------------------------- app

def make_app(api: Api) -> web.Application:
    app = web.Application(middlewares=[access])
    app[API] = api
    app[PAGE] = resources.files("daemon").joinpath("static/index.html").read_text("utf-8")
    r = app.router
    r.add_get("/", page)
    r.add_get("/healthz", healthz)
    r.add_get("/status", status)
    r.add_get("/metrics", metrics)
    r.add_post("/logging", set_logging)
    r.add_post("/reload", reload)
    r.add_get("/events", events_all)
    r.add_get("/jobs", jobs)
    r.add_get("/jobs/{job_id}", job)
    r.add_post("/jobs/{job_id}/retry", retry)
    r.add_post("/jobs/{job_id}/cancel", cancel)
    r.add_get("/jobs/{job_id}/events", events_job)
    r.add_get("/jobs/{job_id}/events/history", history)
    return app


class WebServer:
    """The HTTP server's lifetime: bind at start-up (port 0 picks a free one), close at stop."""

    def __init__(self, api: Api) -> None:
        self._runner = web.AppRunner(make_app(api), access_log=None, shutdown_timeout=2.0)
        self._http = api.live.current.http
        self._set_up = False
        self.port: int | None = None

    async def start(self) -> int:
        await self._runner.setup()
        self._set_up = True
        site = web.TCPSite(self._runner, self._http.host, self._http.port)
        await site.start()
        self.port = _bound_port(self._runner) or self._http.port
        log.info("HTTP on http://%s:%d/", self._http.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._set_up:
            await self._runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int | None:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return None
