"""The HTTP side for monitoring: health, status, jobs, events (SSE), history, metrics, a page.

Routes read from the parts they are given (journal, bus, running jobs, monitor) and ask Control
for changes (retry, cancel, reload, log levels); blocking reads go to the daemon's threads.
Access: a bearer token on every route but /healthz when `http.token` is set (compared in
constant time; the page and EventSource, which cannot set headers, may pass it as `?token=`),
and a Host check against DNS rebinding. Without a token any web page the user opens could send
requests here, so a POST must not come from another site (Origin, Sec-Fetch-Site) and must be
JSON, which a page cannot send elsewhere without a CORS preflight that is never granted.
Everything a client sends is bounded (body, logger names, history filters, open streams), and a
malformed request is a 4xx, never a traceback: most routes answer without a token.
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
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp_sse import EventSourceResponse
from yarl import URL

from .config import LOG_LEVELS, HttpConfig, LiveConfig, LoggingConfig
from .control import Control
from .events import Event, EventBus, EventType, Subscriber
from .journal import Job, JournalUnavailable
from .logs import THIRD_PARTY, unknown_loggers
from .metrics import CONTENT_TYPE, Metrics
from .monitor import Monitor
from .progress import RunningJobs
from .queue import JobQueue
from .threads import Blocking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Api:
    """Everything the routes use, passed in (the web layer knows no daemon class)."""

    live: LiveConfig
    journal: JobQueue
    bus: EventBus
    running: RunningJobs
    monitor: Monitor
    control: Control
    metrics: Metrics
    blocking: Blocking
    # more routes, added to the app by parts the web layer does not know (daemon.integrations)
    extensions: tuple[Callable[[web.Application], None], ...] = ()


API = web.AppKey("api", Api)
PAGE = web.AppKey("page", str)
# Routes other programs call in their own formats (Bazarr's multipart upload, a media server's
# webhook): their POST body need not be JSON; the Origin check still applies.
FORM_PATHS = web.AppKey("form_paths", set)
# Checks that may stand in for http.token on their own routes (a webhook's own secret).
CREDENTIALS = web.AppKey("credentials", list)
HEARTBEAT_SECONDS = 15.0
JOB_ID_CHARS = frozenset("0123456789abcdef")
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_JSON_BYTES = 64 * 1024  # a request body: far more than any route here takes
MAX_LOGGERS = 64  # per-logger levels in one POST /logging
MAX_TYPES, MAX_TYPE_CHARS = 32, 100  # `types=` filters in one history query
STREAM_RETRY_AFTER_SECONDS = 10
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _api(request: web.Request) -> Api:
    return request.app[API]


class QuietBadRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a URL over 8 KB, a broken header) at ERROR with
    a traceback: anyone who can connect could fill the log. One warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = f"{record.getMessage()}: bad request ({exc.message})"
            record.args, record.exc_info, record.exc_text = None, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


QUIET_BAD_REQUESTS = QuietBadRequests()  # one instance: adding it again is a no-op


# ---------------------------------------------------------------------------- access

def allowed_hosts(host: str, extra: tuple[str, ...]) -> set[str]:
    """Host header names accepted: the bound address, localhost, and configured names."""
    return {"localhost", "127.0.0.1", "::1", host.lower(), *(h.lower() for h in extra)}


def _split_host(header: str) -> tuple[str, int | None]:
    """A Host header's name and port ("[::1]:8750" → ("::1", 8750)); port None when absent."""
    host, port = header.strip().lower(), ""
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            host, port = host[1:end], host[end + 1:].lstrip(":")
    elif host.count(":") == 1:
        host, port = host.rsplit(":", 1)
    return host, int(port) if port.isdigit() else None


def _host_ok(header: str, names: set[str], wildcard: bool) -> bool:
    host = _split_host(header)[0]
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
    if cfg.token and request.path != "/healthz" and not token_ok(request, cfg.token) \
            and not any(check(request) for check in request.app.get(CREDENTIALS, ())):
        return web.json_response({"error": "unauthorized"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    return _cross_site_refusal(request, cfg) or await handler(request)


@web.middleware
async def journal_trouble(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A journal that cannot be read or written just now (locked by another process, its disk
    full) is the daemon's state, not a server error: 503 with the reason, retry later."""
    try:
        return await handler(request)
    except JournalUnavailable as exc:
        return web.json_response({"error": "journal unavailable", "reason": str(exc)},
                                 status=503, headers={"Retry-After": "5"})


def token_ok(request: web.Request, token: str) -> bool:
    """`Authorization: Bearer <token>` (the scheme in any case, RFC 9110) or `?token=`."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else request.query.get("token", "")
    try:  # header bytes that are not UTF-8 arrive surrogate-escaped: compare them as sent
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())
    except UnicodeError:
        return False


def _cross_site_refusal(request: web.Request, cfg: HttpConfig) -> web.Response | None:
    """Why a request that changes something is refused: sent by another site (a browser
    sends Origin with every POST), or not declared JSON, even when empty (`{}` will do): a
    page can send text/plain or a form to any address without asking, never JSON."""
    if request.method in SAFE_METHODS:
        return None
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site" \
            or not _origin_ok(request.headers.get("Origin"), request.host or "", cfg):
        return web.json_response({"error": "refused: sent from another site"}, status=403)
    if request.content_type != "application/json" and not _takes_forms(request):
        return web.json_response({"error": "Content-Type must be application/json"},
                                 status=415)
    return None


def _takes_forms(request: web.Request) -> bool:
    """A route in FORM_PATHS, by its path or by its pattern (/token/{token}/asr)?"""
    forms = request.app.get(FORM_PATHS, ())
    resource = request.match_info.route.resource
    return request.path in forms or (resource is not None and resource.canonical in forms)


def _origin_ok(origin: str | None, host_header: str, cfg: HttpConfig) -> bool:
    """No Origin, or this daemon itself: the Host it was reached by or a loopback name on the
    same port, or a configured `http.allowed_hosts` name (a reverse proxy's)."""
    if origin is None:
        return True
    try:
        url = URL(origin)
        name, port = (url.host or "").lower(), url.port
    except (ValueError, TypeError):
        return False
    if url.scheme not in ("http", "https") or not name:
        return False  # "null" (a sandboxed page, a file), or junk
    if name in {h.lower() for h in cfg.allowed_hosts}:
        return True
    own_name, own_port = _split_host(host_header)
    return port == (own_port or 80) and name in LOOPBACK | {own_name}


# ---------------------------------------------------------------------------- plain routes

async def healthz(request: web.Request) -> web.Response:
    """Without a token: reasons only, never the exception text behind them (see /status)."""
    ok, reasons = _api(request).monitor.public_health()
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
    if types and (len(types) > MAX_TYPES or max(map(len, types)) > MAX_TYPE_CHARS):
        raise web.HTTPBadRequest(text=f"types: at most {MAX_TYPES} names of at most "
                                      f"{MAX_TYPE_CHARS} characters")
    events = api.bus.history(job_id, after_id=after, since=since, types=types)
    return web.json_response({"job_id": job_id, "events": [e.history_item() for e in events],
                              "count": len(events)})


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, bounded; a 4xx for anything else (an unknown charset, bytes
    that are not text, nesting deeper than the parser's recursion, a list)."""
    if (request.content_length or 0) > MAX_JSON_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_JSON_BYTES, request.content_length or 0)
    raw = await request.read()
    if len(raw) > MAX_JSON_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_JSON_BYTES, len(raw))
    try:
        body = json.loads(raw.decode(request.charset or "utf-8"))
    except LookupError:
        raise web.HTTPUnsupportedMediaType(text=f"unknown charset {request.charset!r}") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


def _log_levels(body: dict[str, Any], current: LoggingConfig) -> tuple[str, dict[str, str]]:
    """The root level and per-logger levels asked for: known loggers only, a bounded count."""
    raw = body.get("levels") or {}
    if not isinstance(raw, dict):
        raise web.HTTPBadRequest(text="levels: expected an object of logger names")
    if len(raw) > MAX_LOGGERS:
        raise web.HTTPBadRequest(text=f"levels: at most {MAX_LOGGERS} loggers at once")
    level = str(body.get("level", current.level)).upper()
    levels = {str(k): str(v).upper() for k, v in raw.items()}
    bad = [v for v in (level, *levels.values()) if v not in LOG_LEVELS]
    if bad:
        raise web.HTTPBadRequest(text=f"unknown level {bad[0]!r}; one of {', '.join(LOG_LEVELS)}")
    unknown = unknown_loggers(levels, current.levels)
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown logger {unknown[0]!r}: the daemon's own "
                                      f"(daemon, daemon.<module>) or {', '.join(THIRD_PARTY)}")
    return level, levels


async def set_logging(request: web.Request) -> web.Response:
    """POST /logging {"level": "DEBUG", "levels": {"faster_whisper": "INFO"}}: live, no restart."""
    api = _api(request)
    level, levels = _log_levels(await json_object(request), api.live.current.logging)
    new = (await api.control.set_log_levels(level, levels)).logging
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
    """Replay history after Last-Event-ID, then live events, with heartbeats between. Each
    reader holds a descriptor, so there are at most `http.max_event_streams` of them: past
    that, a 503 (and the connection closed) rather than a daemon that cannot open its files."""
    api = _api(request)
    after = _last_event_id(request)
    limit = api.live.current.http.max_event_streams
    if api.bus.subscriber_count >= limit:
        busy = web.json_response({"error": f"too many event streams (at most {limit})"},
                                 status=503,
                                 headers={"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)})
        busy.force_close()
        return busy
    sub, replay = api.bus.subscribe(job_id, after)
    try:
        return await _serve(request, sub, replay, after if after is not None else -1)
    finally:
        api.bus.unsubscribe(sub)


async def _serve(request: web.Request, sub: Subscriber, replay: list[Event],
                 last: int) -> web.StreamResponse:
    transport = request.transport
    if transport is None or transport.is_closing():
        return web.Response(status=204)  # the reader left before the stream began
    resp = EventSourceResponse(ping_interval=HEARTBEAT_SECONDS)
    try:
        await resp.prepare(request)
        async with resp:
            last = await _send(resp, replay, last)
            while resp.is_connected() and not sub.closed:
                batch = await sub.next_batch(timeout=HEARTBEAT_SECONDS)
                last = await _send(resp, batch, last)
            if sub.closed and resp.is_connected():
                await resp.send(json.dumps({"reason": sub.reason}),
                                event=EventType.STREAM_CLOSED)
    except (ConnectionError, TimeoutError, RuntimeError):
        pass  # the reader went away (or stalled past the send timeout)
    return resp


async def _send(resp: Any, events: list[Event], last: int) -> int:
    for event in events:
        if event.id <= last:
            continue  # never a duplicate, even if replay and live overlap
        await resp.send(json.dumps(event.data()), id=str(event.id),
                        event=event.type)
        last = event.id
    return last


# ---------------------------------------------------------------------------- app

def make_app(api: Api) -> web.Application:
    app = web.Application(middlewares=[access, journal_trouble])
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
    for extend in api.extensions:
        extend(app)
    return app


class WebServer:
    """The HTTP server's lifetime: bind at start-up (port 0 picks a free one), close at stop."""

    def __init__(self, api: Api) -> None:
        self._runner = web.AppRunner(make_app(api), access_log=None, shutdown_timeout=2.0)
        self._http = api.live.current.http
        self._set_up = False
        self.port: int | None = None

    async def start(self) -> int:
        logging.getLogger("aiohttp.server").addFilter(QUIET_BAD_REQUESTS)
        await self._runner.setup()
        self._set_up = True
        site = web.TCPSite(self._runner, self._http.host, self._http.port)
        await site.start()
        self.port = _bound_port(self._runner) or self._http.port
        log.info("HTTP on http://%s:%d/", self._http.host, self.port)
        if not self._http.token and not is_loopback(self._http.host):
            log.warning("HTTP on %s:%d without http.token: anyone who can reach it can read "
                        "the status and the subtitles and cancel or retry jobs; set http.token "
                        "or bind to 127.0.0.1", self._http.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._set_up:
            await self._runner.cleanup()


def is_loopback(host: str) -> bool:
    try:
        return host.lower() in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bound_port(runner: web.AppRunner) -> int | None:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return None
