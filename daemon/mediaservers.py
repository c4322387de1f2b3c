"""Media servers' APIs, the little of them subwatch needs, and their paths mapped to ours.

- Where an item's file is: Jellyfin `GET /Items/{id}` (10.9 and later; older ones and Emby
  answer `GET /Items?Ids={id}&Fields=Path` instead), the `Path` field; Plex
  `GET /library/metadata/{ratingKey}` with `Accept: application/json` →
  `MediaContainer.Metadata[].Media[].Part[].file`, and for an item without files of its own (a
  show, a season) its `/allLeaves`.
- "A subtitle appeared, look again": Jellyfin and Emby `POST /Library/Media/Updated` with
  `{"Updates": [{"Path": …, "UpdateType": "Created"}]}`; Plex
  `GET /library/sections/{id}/refresh?path=<folder>` for the section whose location holds it.
- Keys: Jellyfin `Authorization: MediaBrowser Token="<key>"`, Emby `X-Emby-Token`, Plex
  `X-Plex-Token`. Each call has a timeout; a failure is ServerError with what went wrong.
- Paths: a server in a container sees `/data/tv/…` where this daemon sees `/mnt/nas/tv/…`;
  `[[path_maps]]` say so (longest `from` first), and map back for the refresh calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

import aiohttp

from .config import MediaBrowserServer, PathMap, PlexServer

LOOKUP_TIMEOUT_SECONDS = 15.0
MAX_LEAVES = 500  # files one "item added" may queue (a whole show)


class ServerError(Exception):
    """A media server could not be asked, or answered something unusable."""


# ---------------------------------------------------------------------------- paths

def _parts(path: str) -> list[str]:
    """A path's components, '/' and '\\' alike (a server may run on Windows)."""
    return re.split(r"[\\/]+", path.rstrip("/\\")) if path.strip("/\\") else [""]


def _under(path: str, root: str) -> list[str] | None:
    """The components of `path` below `root`, or None when it is not below it."""
    p, r = _parts(path), _parts(root)
    return p[len(r):] if p[:len(r)] == r else None


def to_local(server_path: str, maps: Sequence[PathMap]) -> str:
    """A server's path as this daemon sees it (unchanged when no map applies)."""
    for m in sorted(maps, key=lambda m: len(_parts(m.from_)), reverse=True):
        rest = _under(server_path, m.from_)
        if rest is not None:
            return str(PurePosixPath(m.to, *rest))
    return server_path


def to_server(local_path: str, maps: Sequence[PathMap]) -> str:
    """One of our paths as the server sees it, in its own separator."""
    for m in sorted(maps, key=lambda m: len(_parts(m.to)), reverse=True):
        rest = _under(local_path, m.to)
        if rest is not None:
            sep = "\\" if "\\" in m.from_ and "/" not in m.from_ else "/"
            return sep.join([m.from_.rstrip("/\\"), *rest]) if rest else m.from_
    return local_path


# ---------------------------------------------------------------------------- HTTP

def mediabrowser_headers(server: MediaBrowserServer, kind: str) -> dict[str, str]:
    if kind == "emby":
        return {"X-Emby-Token": server.api_key, "Accept": "application/json"}
    return {"Authorization": f'MediaBrowser Token="{server.api_key}"',
            "Accept": "application/json"}


def plex_headers(server: PlexServer) -> dict[str, str]:
    return {"X-Plex-Token": server.token, "Accept": "application/json"}


async def _request(method: str, url: str, headers: dict[str, str], timeout: float,
                   **kwargs: Any) -> Any:
    """One call; the JSON answer (None for an empty one). Anything else: ServerError."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.request(method, url, headers=headers, **kwargs) as resp:
            if resp.status >= 300:
                raise ServerError(f"{method} {_shown(url)}: HTTP {resp.status}")
            body = await resp.read()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ServerError(f"{method} {_shown(url)}: {type(exc).__name__} {exc}") from None
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        raise ServerError(f"{method} {_shown(url)}: not JSON") from None


def _shown(url: str) -> str:
    """A URL for a log line, without a token in its query."""
    return url.split("?", 1)[0]


# ---------------------------------------------------------------------------- look-ups

async def mediabrowser_paths(server: MediaBrowserServer, item_id: str, kind: str,
                             timeout: float = LOOKUP_TIMEOUT_SECONDS) -> list[str]:
    """The file of a Jellyfin or Emby item, by id (no user needed with an API key)."""
    if not server.url:
        raise ServerError(f"[media_servers.{kind}] url is not set: cannot look the item up")
    headers, base = mediabrowser_headers(server, kind), server.url.rstrip("/")
    if kind == "jellyfin":
        try:
            # the id comes from a webhook's body: one path segment, whatever it holds
            item = await _request("GET", f"{base}/Items/{quote(item_id, safe='')}", headers,
                                  timeout)
            return [item["Path"]] if isinstance(item, dict) and item.get("Path") else []
        except ServerError:
            pass  # before 10.9 there is no /Items/{id}: the query below answers
    found = await _request("GET", f"{base}/Items", headers, timeout,
                           params={"Ids": item_id, "Fields": "Path", "Recursive": "true"})
    items = found.get("Items", []) if isinstance(found, dict) else []
    return [i["Path"] for i in items if isinstance(i, dict) and i.get("Path")]


def plex_files(container: Any) -> list[str]:
    """Every `Part.file` in a Plex MediaContainer answer."""
    metadata = (container or {}).get("MediaContainer", {}).get("Metadata", []) or []
    return [part["file"] for item in metadata for media in item.get("Media", []) or []
            for part in media.get("Part", []) or [] if part.get("file")]


async def plex_paths(server: PlexServer, rating_key: str,
                     timeout: float = LOOKUP_TIMEOUT_SECONDS) -> list[str]:
    """The files of a Plex item; for a show or a season, those of its episodes."""
    if not server.url:
        raise ServerError("[media_servers.plex] url is not set: cannot look the item up")
    if not rating_key.isdigit():
        raise ServerError(f"not a Plex ratingKey: {rating_key!r}")
    base = f"{server.url.rstrip('/')}/library/metadata/{rating_key}"
    files = plex_files(await _request("GET", base, plex_headers(server), timeout))
    if not files:
        files = plex_files(await _request("GET", f"{base}/allLeaves", plex_headers(server),
                                          timeout))
    return files[:MAX_LEAVES]


# ---------------------------------------------------------------------------- refreshes

async def mediabrowser_refresh(server: MediaBrowserServer, kind: str, paths: Iterable[str],
                               timeout: float) -> None:
    """Tell Jellyfin or Emby that files appeared (it rescans the folders that hold them)."""
    updates = [{"Path": p, "UpdateType": "Created"} for p in paths]
    await _request("POST", f"{server.url.rstrip('/')}/Library/Media/Updated",
                   mediabrowser_headers(server, kind), timeout, json={"Updates": updates})


def plex_section_for(sections: Any, folder: str) -> str | None:
    """The key of the Plex library section whose location holds `folder`."""
    directories = (sections or {}).get("MediaContainer", {}).get("Directory", []) or []
    best: tuple[int, str] | None = None
    for d in directories:
        for location in d.get("Location", []) or []:
            root = location.get("path", "")
            if root and _under(folder, root) is not None:
                depth = len(_parts(root))
                if best is None or depth > best[0]:
                    best = (depth, str(d.get("key")))
    return best[1] if best else None


async def plex_refresh(server: PlexServer, folders: Iterable[str], timeout: float) -> None:
    """A partial scan of each folder, in the section that holds it."""
    base, headers = server.url.rstrip("/"), plex_headers(server)
    sections = await _request("GET", f"{base}/library/sections", headers, timeout)
    for folder in dict.fromkeys(folders):
        key = plex_section_for(sections, folder)
        if key is None:
            raise ServerError(f"no Plex library section holds {folder!r}")
        await _request("GET", f"{base}/library/sections/{key}/refresh", headers, timeout,
                       params={"path": folder})
