"""Local HTTP servers that answer like Jellyfin, Emby and Plex do for the few calls subwatch
makes, and a notification receiver; each records what it was sent.

Shapes follow the servers' API documentation: Jellyfin/Emby `GET /Items/{id}` (Jellyfin 10.9+)
and `GET /Items?Ids=&Fields=Path` → `{"Items": [...], "TotalRecordCount", "StartIndex"}`, the
key in `Authorization: MediaBrowser Token="…"` (Jellyfin) or `X-Emby-Token` / `api_key` (Emby),
`POST /Library/Media/Updated` → 204; Plex `GET /library/metadata/{ratingKey}` (JSON only with
`Accept: application/json`, XML otherwise), `/allLeaves`, `/library/sections` and
`/library/sections/{key}/refresh?path=`, the token in `X-Plex-Token` (header or query).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeServer:
    """An aiohttp app on 127.0.0.1 that records every request."""

    def __init__(self, port: int = 0) -> None:
        self.app = web.Application(middlewares=[self._record])
        self.seen: list[Seen] = []
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.query),
                              dict(request.headers), body))
        return await handler(request)

    async def start(self) -> FakeServer:
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


def _guid(item_id: str) -> str:
    """Jellyfin accepts an id with or without dashes."""
    return item_id.replace("-", "").lower()


class FakeMediaBrowser(FakeServer):
    """Jellyfin (`emby=False`) or Emby: items by id, each with a Path; library updates."""

    def __init__(self, items: dict[str, str], api_key: str, emby: bool = False,
                 legacy: bool = False) -> None:
        super().__init__()
        self.items = {_guid(k): v for k, v in items.items()}
        self.api_key = api_key
        self.emby = emby
        if not (emby or legacy):  # /Items/{id} exists from Jellyfin 10.9 on
            self.app.router.add_get("/Items/{item_id}", self._item)
        self.app.router.add_get("/Items", self._items)
        self.app.router.add_post("/Library/Media/Updated", self._updated)

    def _authorized(self, request: web.Request) -> bool:
        if self.emby:
            return self.api_key in (request.headers.get("X-Emby-Token"),
                                    request.query.get("api_key"))
        match = re.fullmatch(r'MediaBrowser\s+Token="([^"]*)"',
                             request.headers.get("Authorization", "").strip())
        return bool(match) and match.group(1) == self.api_key

    def _dto(self, item_id: str) -> dict[str, Any]:
        path = self.items[item_id]
        return {"Name": path.rsplit("/", 1)[-1], "ServerId": "f00d", "Id": item_id,
                "Path": path, "Type": "Episode", "IsFolder": False, "MediaType": "Video",
                "LocationType": "FileSystem"}

    async def _item(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        item_id = _guid(request.match_info["item_id"])
        if item_id not in self.items:
            return web.Response(status=404)
        return web.json_response(self._dto(item_id))

    async def _items(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        ids = [_guid(i) for i in request.query.get("Ids", "").split(",") if i]
        found = [self._dto(i) for i in ids if i in self.items]
        return web.json_response({"Items": found, "TotalRecordCount": len(found),
                                  "StartIndex": 0})

    async def _updated(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        return web.Response(status=204)


class FakePlex(FakeServer):
    """Plex: items by ratingKey (files of episodes and films; a show lists its leaves), library
    sections with their locations, partial scans."""

    def __init__(self, token: str, files: dict[str, str], shows: dict[str, list[str]],
                 sections: dict[str, list[str]]) -> None:
        super().__init__()
        self.token, self.files, self.shows, self.sections = token, files, shows, sections
        r = self.app.router
        r.add_get("/library/metadata/{key}", self._metadata)
        r.add_get("/library/metadata/{key}/allLeaves", self._leaves)
        r.add_get("/library/sections", self._sections)
        r.add_get("/library/sections/{key}/refresh", self._refresh)

    def _check(self, request: web.Request) -> web.Response | None:
        given = request.headers.get("X-Plex-Token") or request.query.get("X-Plex-Token")
        if given != self.token:
            return web.Response(status=401)
        if "application/json" not in request.headers.get("Accept", ""):
            return web.Response(text='<?xml version="1.0"?><MediaContainer size="0"/>',
                                content_type="text/xml")
        return None

    def _episode(self, key: str) -> dict[str, Any]:
        part = {"id": int(key) * 10, "key": f"/library/parts/{key}/file.mkv",
                "file": self.files[key], "size": 1234, "container": "mkv"}
        return {"ratingKey": key, "key": f"/library/metadata/{key}", "type": "episode",
                "librarySectionID": 2, "title": "Serenity",
                "Media": [{"id": int(key), "duration": 5000, "Part": [part]}]}

    async def _metadata(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        refused = self._check(request)
        if refused is not None:
            return refused
        if key in self.files:
            meta = [self._episode(key)]
        elif key in self.shows:
            meta = [{"ratingKey": key, "key": f"/library/metadata/{key}/children",
                     "type": "show", "title": "Firefly", "librarySectionID": 2}]
        else:
            return web.Response(status=404)
        return web.json_response({"MediaContainer": {"size": 1, "Metadata": meta}})

    async def _leaves(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        keys = self.shows.get(request.match_info["key"], [])
        meta = [self._episode(k) for k in keys]
        return web.json_response({"MediaContainer": {"size": len(meta), "Metadata": meta}})

    async def _sections(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        dirs = [{"key": key, "type": "show", "title": f"Section {key}",
                 "Location": [{"id": i, "path": p} for i, p in enumerate(paths)]}
                for key, paths in self.sections.items()]
        return web.json_response({"MediaContainer": {"size": len(dirs), "Directory": dirs}})

    async def _refresh(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None and refused.status == 401:
            return refused
        return web.Response(status=200)


class Receiver(FakeServer):
    """A notification endpoint: answers each POST with the next scripted status (200 when the
    script is used up); while `hold` is clear it answers nothing at all."""

    def __init__(self, statuses: list[int] | None = None, port: int = 0) -> None:
        super().__init__(port)
        self.statuses = list(statuses or [])
        self.hold = asyncio.Event()
        self.hold.set()
        self.waiting = 0
        self.app.router.add_post("/notify", self._notify)

    async def _notify(self, request: web.Request) -> web.Response:
        self.waiting += 1
        try:
            await self.hold.wait()
        finally:
            self.waiting -= 1
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [s.json() for s in self.requests_to("/notify")]
