"""Webhooks in: a media server says an item was added (or started playing), and its file is
queued now, ahead of the folder scan, instead of whenever a scan finds it.

- `POST /hooks/jellyfin`: the Jellyfin webhook plugin's Generic destination, a JSON body made by
  the user's template (sent as text/plain unless a Content-Type header is configured):
  `NotificationType` ("ItemAdded"; "PlaybackStart" with `on_play`), `ItemId`, `ItemType`, and
  `Path` when the template adds it.
- `POST /hooks/plex`: Plex's multipart body, field `payload`: `event` ("library.new";
  "media.play" with `on_play`), `Metadata.ratingKey`.
- `POST /hooks/emby`: Emby's webhook, JSON or the form field `data`: `Event` ("library.new";
  "playback.start" with `on_play`), `Item.Id`, `Item.Path`.

The path comes from the payload when it has one, else from the server's API (mediaservers); it
is mapped with `[[path_maps]]` and taken only when it is a media file inside a library (the
inbox or a `[[libraries]]` folder). Its job is admitted at priority 1 or, when the scan queued it
already, raised to it. An event of no interest, or a file outside every library: 204. The
http.token, or the server's `hook_secret` as `?secret=` (so the token need not be given to the
media server), is required when set.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from .config import LiveConfig
from .discovery.filters import is_candidate_name
from .intake import Intake
from .journal import Identity
from .libraries import key_for_path, library_of, media_path, media_root
from .mediaservers import ServerError, mediabrowser_paths, plex_paths, to_local
from .pipeline.opening import inside
from .queue import JobQueue
from .threads import Blocking
from .web import CREDENTIALS, FORM_PATHS, MAX_JSON_BYTES, json_object, token_ok

log = logging.getLogger(__name__)

HOOK_PRIORITY = 1  # after an upload (2), before the folder scan (0)
SERVERS = ("jellyfin", "plex", "emby")
PATHS = {f"/hooks/{server}": server for server in SERVERS}
WAITING_LOOKUP = 1000  # queued jobs looked through for the one to raise


class BadPayload(Exception):
    """A body that is not the server's webhook shape."""


@dataclass(frozen=True)
class HookEvent:
    """What a webhook says, whichever server sent it."""

    server: str
    event: str
    added: bool  # a new item
    played: bool  # playback started
    paths: tuple[str, ...]  # from the payload, when it carries them
    item_id: str  # for a look-up through the server's API


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else str(value) if value is not None else ""


def parse_jellyfin(body: dict[str, Any]) -> HookEvent:
    kind = _text(body.get("NotificationType"))
    if not kind:
        raise BadPayload("no NotificationType: is this the Jellyfin webhook plugin's JSON?")
    path = _text(body.get("Path"))
    return HookEvent("jellyfin", kind, kind == "ItemAdded", kind == "PlaybackStart",
                     (path,) if path else (), _text(body.get("ItemId")))


def parse_plex(payload: dict[str, Any]) -> HookEvent:
    event = _text(payload.get("event"))
    if not event:
        raise BadPayload("no event: is this Plex's webhook payload?")
    metadata = _obj(payload.get("Metadata"))
    return HookEvent("plex", event, event == "library.new", event == "media.play", (),
                     _text(metadata.get("ratingKey")))


def parse_emby(body: dict[str, Any]) -> HookEvent:
    event = _text(body.get("Event"))
    if not event:
        raise BadPayload("no Event: is this Emby's webhook?")
    item = _obj(body.get("Item"))
    path = _text(item.get("Path"))
    return HookEvent("emby", event, event == "library.new", event == "playback.start",
                     (path,) if path else (), _text(item.get("Id")))


async def form_field(request: web.Request, name: str) -> str | None:
    """One field of a form body (multipart or urlencoded), bounded; other parts (Plex's
    thumbnail) are read past and dropped."""
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()  # bounded by the app's client_max_size
        value = form.get(name)
        return value if isinstance(value, str) else None
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError, LookupError):
        raise BadPayload(f"expected a form with the field {name!r}") from None
    found = None
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and part.name == name and found is None:
            found = (await _read_part(part)).decode("utf-8", "replace")
        else:
            await part.release()
    return found


async def _read_part(part: BodyPartReader) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(MAX_JSON_BYTES):
        data += chunk
        if len(data) > MAX_JSON_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_JSON_BYTES, len(data))
    return bytes(data)


def _json_text(text: str | None, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text or "")
    except ValueError:
        raise BadPayload(f"the {what} is not JSON") from None
    if not isinstance(data, dict):
        raise BadPayload(f"the {what} is not a JSON object")
    return data


class Hooks:
    """The three routes, and the queueing they share."""

    def __init__(self, live: LiveConfig, journal: JobQueue, intake: Intake,
                 blocking: Blocking) -> None:
        self._live = live
        self._journal = journal
        self._intake = intake
        self._blocking = blocking

    def register(self, app: web.Application) -> None:
        readers: dict[str, Callable[[web.Request], Awaitable[HookEvent]]] = {
            "jellyfin": self._read_jellyfin, "plex": self._read_plex, "emby": self._read_emby}
        for path, server in PATHS.items():
            app.router.add_post(path, self._route(server, readers[server]))
        app.setdefault(FORM_PATHS, set()).update(PATHS)
        app.setdefault(CREDENTIALS, []).append(self.secret_ok)

    def secret_ok(self, request: web.Request) -> bool:
        """Its server's `hook_secret`, as `?secret=`, on a hook route (stands in for the token)."""
        server = PATHS.get(request.path)
        secret = getattr(self._live.current.media_servers, server).hook_secret if server else ""
        given = request.query.get("secret", "")
        return bool(secret) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                    secret.encode())

    def _route(self, server: str, read: Callable[[web.Request], Awaitable[HookEvent]]
               ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await self._handle(request, server, read)
        return handle

    # ------------------------------------------------------------------ reading

    async def _read_jellyfin(self, request: web.Request) -> HookEvent:
        return parse_jellyfin(await json_object(request))

    async def _read_plex(self, request: web.Request) -> HookEvent:
        return parse_plex(_json_text(await form_field(request, "payload"), "payload field"))

    async def _read_emby(self, request: web.Request) -> HookEvent:
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return parse_emby(_json_text(await form_field(request, "data"), "data field"))
        return parse_emby(await json_object(request))

    # ------------------------------------------------------------------ handling

    async def _handle(self, request: web.Request, server: str,
                      read: Callable[[web.Request], Awaitable[HookEvent]]) -> web.Response:
        config = self._live.current
        settings = getattr(config.media_servers, server)
        if settings.hook_secret and not self.secret_ok(request) \
                and not (config.http.token and token_ok(request, config.http.token)):
            return web.json_response({"error": f"this hook wants ?secret= (media_servers."
                                               f"{server}.hook_secret)"}, status=401)
        try:
            event = await read(request)
        except BadPayload as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if not (event.added or (event.played and settings.on_play)):
            log.debug("%s webhook: %r is not an event subwatch acts on", server, event.event)
            return web.Response(status=204)
        try:
            paths = list(event.paths) or await self._look_up(event)
        except ServerError as exc:
            log.warning("%s webhook for item %s: cannot find its file: %s", server,
                        event.item_id, exc)
            return web.json_response({"error": f"cannot look the item up: {exc}"}, status=502)
        results = [await self._queue(server, p) for p in paths]
        outcomes = {r["outcome"] for r in results}
        if outcomes & {"queued", "prioritized"}:
            return web.json_response({"event": event.event, "files": results}, status=202)
        if "known" in outcomes:  # done already, running, or skipped: nothing new to do
            return web.json_response({"event": event.event, "files": results})
        return web.Response(status=204)

    async def _look_up(self, event: HookEvent) -> list[str]:
        servers = self._live.current.media_servers
        if not event.item_id:
            raise ServerError("the payload names no item (and no Path)")
        if event.server == "plex":
            return await plex_paths(servers.plex, event.item_id)
        return await mediabrowser_paths(getattr(servers, event.server), event.item_id,
                                        event.server)

    async def _queue(self, server: str, server_path: str) -> dict[str, str]:
        """One file named by a server: queued, raised, already known, or why not."""
        config = self._live.current
        local = to_local(server_path, config.path_maps)
        key = key_for_path(config, local)
        found = library_of(config, key) if key is not None else None
        if key is None or found is None or not is_candidate_name(found[1],
                                                                 config.watch.extensions):
            log.info("%s webhook: %r (here %r) is not a media file inside a library; not "
                     "queued (see [[path_maps]])", server, server_path, local)
            return {"path": server_path, "outcome": "outside"}
        try:
            st = await self._blocking(os.stat, media_path(config, key))
        except OSError as exc:
            log.warning("%s webhook: %r (here %r): %s; not queued (see [[path_maps]])", server,
                        server_path, local, exc.strerror)
            return {"path": server_path, "outcome": "missing"}
        if not stat.S_ISREG(st.st_mode) or not await self._blocking(
                _stays_inside, media_root(config, key), media_path(config, key)):
            log.warning("%s webhook: %r (here %r) leads outside its library through a link; "
                        "not queued", server, server_path, local)
            return {"path": server_path, "outcome": "outside"}
        return await self._admit(server, Identity(key, st.st_size, st.st_mtime_ns, st.st_ino))

    async def _admit(self, server: str, identity: Identity) -> dict[str, str]:
        job = await self._intake.admit_now(identity, priority=HOOK_PRIORITY)
        if job is not None:
            log.info("%s webhook queued %r as job %s", server, identity.rel_path, job.id)
            return {"path": identity.rel_path, "outcome": "queued", "job_id": job.id}
        waiting = await self._blocking(self._waiting_job, identity)
        if waiting is not None and await self._blocking(self._journal.prioritize, waiting,
                                                        HOOK_PRIORITY):
            log.info("%s webhook moved %r (job %s) up the queue", server, identity.rel_path,
                     waiting)
            return {"path": identity.rel_path, "outcome": "prioritized", "job_id": waiting}
        return {"path": identity.rel_path, "outcome": "known"}

    def _waiting_job(self, identity: Identity) -> str | None:
        """The queued job of this identity, if the scan queued it already (blocking)."""
        for job in self._journal.list_jobs("queued", WAITING_LOOKUP):
            if (job.rel_path, job.size, job.mtime_ns) == (identity.rel_path, identity.size,
                                                          identity.mtime_ns):
                return job.id if job.priority < HOOK_PRIORITY else None
        return None


def _stays_inside(root: Path, path: Path) -> bool:
    """Is `path`, every link on the way resolved, inside `root`? A folder in a library may be
    a link to anywhere (a share user made it): a webhook must not reach through it. The same
    test the decoder's confinement makes (`pipeline.opening.inside`)."""
    return inside(os.path.realpath(path), os.path.realpath(root))
