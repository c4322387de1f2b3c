"""The HTTP side: health and status for monitoring. Routes only read; blocking reads go to a thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .service import Service

SERVICE = web.AppKey("service", Any)


async def healthz(request: web.Request) -> web.Response:
    service: Service = request.app[SERVICE]
    ok, reasons = service.health()
    if ok:
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "degraded", "reasons": reasons}, status=503)


async def status(request: web.Request) -> web.Response:
    service: Service = request.app[SERVICE]
    return web.json_response(await service._blocking(service.status))


async def jobs(request: web.Request) -> web.Response:
    service: Service = request.app[SERVICE]
    state = request.query.get("state") or None
    try:
        limit = max(1, min(int(request.query.get("limit", "100")), 1000))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    rows = await service._blocking(service.journal.list_jobs, state, limit)
    return web.json_response({"jobs": [j.as_dict() for j in rows], "count": len(rows)})


async def job(request: web.Request) -> web.Response:
    service: Service = request.app[SERVICE]
    found = await service._blocking(service.journal.get, request.match_info["job_id"])
    if found is None:
        raise web.HTTPNotFound(text="no such job")
    data = found.as_dict()
    running = service.running.get(found.id)
    data["progress"] = running.as_dict() if running else None
    return web.json_response(data)


def make_app(service: "Service") -> web.Application:
    app = web.Application()
    app[SERVICE] = service
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_get("/jobs", jobs)
    app.router.add_get("/jobs/{job_id}", job)
    return app


async def start_web(service: "Service") -> web.AppRunner:
    cfg = service.config.http
    runner = web.AppRunner(make_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    return runner
