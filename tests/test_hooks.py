"""Webhooks in (issue 14): each server's payload, replayed in its recorded shape, queues the
right file through a path map, ahead of the folder scan; the API look-ups are answered by local
servers that answer like Jellyfin, Emby and Plex. A real daemon in-process (real journal, real
aiohttp server), a scripted pipeline: these tests are about queueing, not transcription."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from daemon.config import PathMap
from daemon.hooks import BadPayload, parse_emby, parse_jellyfin, parse_plex
from daemon.journal import Identity
from daemon.mediaservers import plex_section_for, to_local, to_server
from testkit.daemon import base_url, running_service, wait_until
from testkit.fake_servers import FakeMediaBrowser, FakePlex
from testkit.media import write_wav
from testkit.scripted import ScriptedPipeline

# The servers see the library at /data/tv (in their containers); this daemon at <inbox>/tv.
SERVER_ROOT = "/data/tv"
EPISODE = "Firefly/Season 1/Firefly - S01E01.mkv"
JELLYFIN_ID = "8c3a1b2f-6d0e-4c5a-9b7e-1f2a3c4d5e6f"
SLOW_SCAN = {"settle_seconds": 600}  # the watcher never admits within a test: only hooks do

# Recorded shapes. Jellyfin: the webhook plugin's Generic destination with the README's
# template, sent as text/plain (the plugin's default Content-Type).
JELLYFIN_ITEM_ADDED = {
    "ServerId": "e5b6a1d9c8f74e2b9a1c3d5e7f9a1b2c", "ServerName": "living-room",
    "ServerVersion": "10.9.11", "ServerUrl": "http://jellyfin:8096",
    "NotificationType": "ItemAdded", "Timestamp": "2024-05-01T10:00:00.0000000+02:00",
    "UtcTimestamp": "2024-05-01T08:00:00.0000000Z", "Name": "Serenity",
    "ItemId": JELLYFIN_ID, "ItemType": "Episode", "RunTimeTicks": 50000000,
    "RunTime": "00:00:05", "SeriesName": "Firefly", "SeasonNumber": 1,
    "SeasonNumber00": "01", "EpisodeNumber": 1, "EpisodeNumber00": "01",
    "Provider_tvdb": "297999",
}
# Plex (docs' example of a library.new): multipart, the JSON in the field `payload`, and a
# `thumb` part (a JPEG) beside it.
PLEX_LIBRARY_NEW = {
    "event": "library.new", "user": True, "owner": True,
    "Account": {"id": 1, "thumb": "https://plex.tv/users/1022b120ffbaa/avatar", "title": "elan"},
    "Server": {"title": "Office", "uuid": "54664a3d8acc39983675640ec9ce00b70af9cc36"},
    "Metadata": {"librarySectionType": "show", "ratingKey": "1936545",
                 "key": "/library/metadata/1936545", "parentRatingKey": "1936544",
                 "grandparentRatingKey": "1936543", "librarySectionID": 2, "type": "episode",
                 "title": "Serenity", "grandparentTitle": "Firefly", "parentTitle": "Season 1",
                 "index": 1, "parentIndex": 1, "addedAt": 1469296118},
}
# Emby's webhook (Notifications → Webhooks): the JSON, as the form field `data` or the body.
EMBY_LIBRARY_NEW = {
    "Title": "Serenity has been added to Office", "Date": "2024-05-01T08:00:00.0000000Z",
    "Event": "library.new", "Severity": "Info",
    "Item": {"Name": "Serenity", "ServerId": "4b5c", "Id": "123456",
             "Path": f"{SERVER_ROOT}/{EPISODE}", "FileName": "Firefly - S01E01.mkv",
             "Type": "Episode", "IsFolder": False, "MediaType": "Video",
             "SeriesName": "Firefly", "IndexNumber": 1, "ParentIndexNumber": 1},
    "Server": {"Name": "Office", "Id": "4b5c", "Version": "4.8.8.0"},
}


def library_file(root: Path, rel: str = EPISODE) -> Path:
    path = root / "inbox" / "tv" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, np.zeros(8000, dtype=np.float32))  # a WAV by content, whatever its name
    return path


def maps(root: Path) -> list[dict[str, str]]:
    return [{"from": SERVER_ROOT, "to": str(root / "inbox" / "tv")}]


def plex_form(payload: dict[str, Any]) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("payload", json.dumps(payload), content_type="application/json")
    form.add_field("thumb", b"\xff\xd8\xff\xe0" + b"\0" * 2048, filename="image.jpg",
                   content_type="image/jpeg")
    return form


async def jobs_now(service: Any) -> list[Any]:
    return await service.blocking(service.journal.list_jobs, None, 100)


# ---------------------------------------------------------------------------- each server

async def test_jellyfin_item_added_is_looked_up_by_id_and_queued_through_the_path_map(
        tmp_path: Path) -> None:
    library_file(tmp_path)
    async with FakeMediaBrowser({JELLYFIN_ID: f"{SERVER_ROOT}/{EPISODE}"}, "jf-key") as jf, \
            running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                            path_maps=maps(tmp_path),
                            media_servers={"jellyfin": {"url": jf.url, "api_key": "jf-key"}}
                            ) as service, aiohttp.ClientSession() as http:
        resp = await http.post(base_url(service) + "/hooks/jellyfin",
                               data=json.dumps(JELLYFIN_ITEM_ADDED),
                               headers={"Content-Type": "text/plain; charset=utf-8",
                                        "User-Agent": "Jellyfin-Server/10.9.11"})
        assert resp.status == 202, await resp.text()
        body = await resp.json()
        assert body["files"][0]["outcome"] == "queued"
        lookup = jf.requests_to(f"/Items/{JELLYFIN_ID}")
        assert lookup and lookup[0].headers["Authorization"] == 'MediaBrowser Token="jf-key"'
        job = service.journal.get(body["files"][0]["job_id"])
        assert (job.rel_path, job.kind, job.priority) == (f"tv/{EPISODE}", "file", 1)
        await wait_until(lambda: service.journal.get(job.id).state == "done", 30, "done")


async def test_jellyfin_template_with_path_needs_no_look_up(tmp_path: Path) -> None:
    library_file(tmp_path)
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                               path_maps=maps(tmp_path)) as service, \
            aiohttp.ClientSession() as http:
        payload = {**JELLYFIN_ITEM_ADDED, "Path": f"{SERVER_ROOT}/{EPISODE}"}
        resp = await http.post(base_url(service) + "/hooks/jellyfin", json=payload)
        assert resp.status == 202
        assert [j.rel_path for j in await jobs_now(service)] == [f"tv/{EPISODE}"]


async def test_relative_path_map_to_is_taken_from_the_config_folder(tmp_path: Path) -> None:
    library_file(tmp_path)  # make_config's folder is tmp_path: `to` = <tmp_path>/inbox/tv
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                               path_maps=[{"from": SERVER_ROOT, "to": "inbox/tv"}]) as service, \
            aiohttp.ClientSession() as http:
        payload = {**JELLYFIN_ITEM_ADDED, "Path": f"{SERVER_ROOT}/{EPISODE}"}
        resp = await http.post(base_url(service) + "/hooks/jellyfin", json=payload)
        assert resp.status == 202, await resp.text()
        assert [j.rel_path for j in await jobs_now(service)] == [f"tv/{EPISODE}"]


async def test_older_jellyfin_without_items_by_id_is_asked_by_query(tmp_path: Path) -> None:
    library_file(tmp_path)
    async with FakeMediaBrowser({JELLYFIN_ID: f"{SERVER_ROOT}/{EPISODE}"}, "k",
                                legacy=True) as jf, \
            running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                            path_maps=maps(tmp_path),
                            media_servers={"jellyfin": {"url": jf.url, "api_key": "k"}}
                            ) as service, aiohttp.ClientSession() as http:
        resp = await http.post(base_url(service) + "/hooks/jellyfin", json=JELLYFIN_ITEM_ADDED)
        assert resp.status == 202, await resp.text()
        asked = jf.requests_to("/Items")[-1]
        assert asked.query["Ids"] == JELLYFIN_ID and asked.query["Fields"] == "Path"


async def test_plex_library_new_is_looked_up_by_rating_key(tmp_path: Path) -> None:
    library_file(tmp_path)
    async with FakePlex("plex-token", {"1936545": f"{SERVER_ROOT}/{EPISODE}"}, {}, {}) as plex, \
            running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                            path_maps=maps(tmp_path),
                            media_servers={"plex": {"url": plex.url, "token": "plex-token"}}
                            ) as service, aiohttp.ClientSession() as http:
        resp = await http.post(base_url(service) + "/hooks/plex", data=plex_form(PLEX_LIBRARY_NEW),
                               headers={"User-Agent": "PlexMediaServer/1.40.2.8395"})
        assert resp.status == 202, await resp.text()
        asked = plex.requests_to("/library/metadata/1936545")[0]
        assert asked.headers["X-Plex-Token"] == "plex-token"
        assert "application/json" in asked.headers["Accept"]
        assert [(j.rel_path, j.priority) for j in await jobs_now(service)] == \
            [(f"tv/{EPISODE}", 1)]


async def test_plex_show_added_queues_its_episodes(tmp_path: Path) -> None:
    episodes = {str(k): f"Firefly/Season 1/Firefly - S01E0{k - 10}.mkv" for k in (11, 12)}
    for rel in episodes.values():
        library_file(tmp_path, rel)
    show = {**PLEX_LIBRARY_NEW, "Metadata": {"ratingKey": "10", "type": "show"}}
    async with FakePlex("t", {k: f"{SERVER_ROOT}/{v}" for k, v in episodes.items()},
                        {"10": list(episodes)}, {}) as plex, \
            running_service(tmp_path, transcribe=ScriptedPipeline(hold_after=1), watch=SLOW_SCAN,
                            path_maps=maps(tmp_path),
                            media_servers={"plex": {"url": plex.url, "token": "t"}}
                            ) as service, aiohttp.ClientSession() as http:
        resp = await http.post(base_url(service) + "/hooks/plex", data=plex_form(show))
        assert resp.status == 202, await resp.text()
        assert plex.requests_to("/library/metadata/10/allLeaves")
        assert sorted(j.rel_path for j in await jobs_now(service)) == \
            sorted(f"tv/{rel}" for rel in episodes.values())


@pytest.mark.parametrize("as_form", [True, False], ids=["form-data", "json"])
async def test_emby_library_new_takes_the_path_from_the_payload(tmp_path: Path,
                                                               as_form: bool) -> None:
    library_file(tmp_path)
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                               path_maps=maps(tmp_path)) as service, \
            aiohttp.ClientSession() as http:
        if as_form:
            form = aiohttp.FormData(default_to_multipart=True)  # as Emby sends it
            form.add_field("data", json.dumps(EMBY_LIBRARY_NEW))
            resp = await http.post(base_url(service) + "/hooks/emby", data=form,
                                   headers={"User-Agent": "Emby Server/4.8.8.0"})
        else:
            resp = await http.post(base_url(service) + "/hooks/emby", json=EMBY_LIBRARY_NEW)
        assert resp.status == 202, await resp.text()
        assert [j.rel_path for j in await jobs_now(service)] == [f"tv/{EPISODE}"]


async def test_emby_item_without_path_is_looked_up_with_its_key(tmp_path: Path) -> None:
    library_file(tmp_path)
    no_path = {**EMBY_LIBRARY_NEW, "Item": {"Id": "123456", "Type": "Episode"}}
    async with FakeMediaBrowser({"123456": f"{SERVER_ROOT}/{EPISODE}"}, "emby-key",
                                emby=True) as emby, \
            running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                            path_maps=maps(tmp_path),
                            media_servers={"emby": {"url": emby.url, "api_key": "emby-key"}}
                            ) as service, aiohttp.ClientSession() as http:
        resp = await http.post(base_url(service) + "/hooks/emby", json=no_path)
        assert resp.status == 202, await resp.text()
        assert emby.requests_to("/Items")[0].headers["X-Emby-Token"] == "emby-key"


# ---------------------------------------------------------------------------- refusals

async def test_a_file_outside_every_library_is_204_and_nothing_queued(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "movie.mkv"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"\0" * 4096)
    library_file(tmp_path)
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                               path_maps=maps(tmp_path)) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service)
        for path in (f"/data/movies/{elsewhere.name}", str(elsewhere),  # unmapped; outside
                     f"{SERVER_ROOT}/../../etc/passwd",  # mapped, then out by ..
                     f"{SERVER_ROOT}/Firefly/cover.jpg",  # inside, not media
                     f"{SERVER_ROOT}/Firefly/missing.mkv"):  # inside, not there
            resp = await http.post(url + "/hooks/jellyfin",
                                   json={**JELLYFIN_ITEM_ADDED, "Path": path})
            assert resp.status == 204, (path, resp.status)
        assert await jobs_now(service) == []


@pytest.mark.parametrize("route, payload", [
    ("jellyfin", {**JELLYFIN_ITEM_ADDED, "NotificationType": "PlaybackStop"}),
    ("jellyfin", {**JELLYFIN_ITEM_ADDED, "NotificationType": "PlaybackStart"}),  # no on_play
    ("emby", {**EMBY_LIBRARY_NEW, "Event": "system.notificationtest"}),
    ("emby", {**EMBY_LIBRARY_NEW, "Event": "playback.start"}),
    ("plex", {**PLEX_LIBRARY_NEW, "event": "media.pause"}),
])
async def test_events_of_no_interest_are_204(tmp_path: Path, route: str,
                                             payload: dict[str, Any]) -> None:
    library_file(tmp_path)
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                               path_maps=maps(tmp_path)) as service, \
            aiohttp.ClientSession() as http:
        data: Any = plex_form(payload) if route == "plex" else json.dumps(payload)
        resp = await http.post(f"{base_url(service)}/hooks/{route}", data=data)
        assert resp.status == 204
        assert await jobs_now(service) == []


async def test_playback_start_queues_when_on_play_is_set(tmp_path: Path) -> None:
    library_file(tmp_path)
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                               path_maps=maps(tmp_path),
                               media_servers={"emby": {"on_play": True}}) as service, \
            aiohttp.ClientSession() as http:
        resp = await http.post(base_url(service) + "/hooks/emby",
                               json={**EMBY_LIBRARY_NEW, "Event": "playback.start"})
        assert resp.status == 202


@pytest.mark.parametrize("route, body", [
    ("jellyfin", b"not json"), ("jellyfin", b"[1, 2]"), ("emby", b'{"Item": {}}'),
])
async def test_a_body_that_is_not_the_servers_shape_is_a_4xx(tmp_path: Path, route: str,
                                                            body: bytes) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN) \
            as service, aiohttp.ClientSession() as http:
        resp = await http.post(f"{base_url(service)}/hooks/{route}", data=body,
                               headers={"Content-Type": "application/json"})
        assert resp.status == 400


async def test_plex_without_payload_field_is_400(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN) \
            as service, aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("other", "x")
        assert (await http.post(base_url(service) + "/hooks/plex", data=form)).status == 400


async def test_hook_secret_stands_in_for_the_token_on_its_own_route_only(
        tmp_path: Path) -> None:
    library_file(tmp_path)
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                               path_maps=maps(tmp_path), http={"token": "main-token"},
                               media_servers={"emby": {"hook_secret": "s3cret"}}) as service, \
            aiohttp.ClientSession() as http:
        url = base_url(service)
        hook = url + "/hooks/emby"
        assert (await http.post(hook, json=EMBY_LIBRARY_NEW)).status == 401
        assert (await http.post(hook + "?secret=wrong", json=EMBY_LIBRARY_NEW)).status == 401
        assert (await http.post(url + "/jobs?secret=s3cret")).status == 401  # only its route
        assert (await http.post(url + "/hooks/jellyfin?secret=s3cret", json={})).status == 401
        resp = await http.post(hook + "?secret=s3cret", json=EMBY_LIBRARY_NEW)
        assert resp.status == 202, await resp.text()
        token = {"Authorization": "Bearer main-token"}
        assert (await http.post(hook, json=EMBY_LIBRARY_NEW, headers=token)).status == 200


async def test_hook_secret_is_required_even_without_a_token(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                               media_servers={"plex": {"hook_secret": "p"}}) as service, \
            aiohttp.ClientSession() as http:
        resp = await http.post(base_url(service) + "/hooks/plex",
                               data=plex_form(PLEX_LIBRARY_NEW))
        assert resp.status == 401


# ---------------------------------------------------------------------------- priority

async def test_a_hooked_file_the_scan_queued_is_moved_ahead_of_the_scan(tmp_path: Path) -> None:
    """One worker held on a first file; three scan-queued files wait (priority 0); a hook names
    the last of them: it runs next, before the two queued before it."""
    names = [f"show/e{i}.mkv" for i in range(4)]
    for name in names:
        library_file(tmp_path, name)
    pipeline = ScriptedPipeline(hold_after=1)
    async with running_service(tmp_path, transcribe=pipeline, watch=SLOW_SCAN,
                               path_maps=maps(tmp_path)) as service, \
            aiohttp.ClientSession() as http:
        for name in names:  # as the scan admits them, oldest first
            st = (tmp_path / "inbox" / "tv" / name).stat()
            await service.intake.admit_now(Identity(f"tv/{name}", st.st_size, st.st_mtime_ns))
            await asyncio.sleep(0.01)
        await asyncio.to_thread(pipeline.held.wait, 30)
        resp = await http.post(base_url(service) + "/hooks/jellyfin",
                               json={**JELLYFIN_ITEM_ADDED, "Path": f"{SERVER_ROOT}/{names[3]}"})
        assert resp.status == 202 and (await resp.json())["files"][0]["outcome"] == "prioritized"
        pipeline.release.set()
        await wait_until(lambda: service.journal.counts()["done"] == 4, 60, "all done")
        order = [j.rel_path for j in sorted(await jobs_now(service), key=lambda j: j.finished_at)]
        assert order == [f"tv/{n}" for n in (names[0], names[3], names[1], names[2])]


# ---------------------------------------------------------------------------- pure parts

def test_payloads_parse_to_one_event_shape() -> None:
    jf = parse_jellyfin({**JELLYFIN_ITEM_ADDED, "Path": "/p"})
    assert (jf.event, jf.added, jf.paths, jf.item_id) == ("ItemAdded", True, ("/p",), JELLYFIN_ID)
    plex = parse_plex(PLEX_LIBRARY_NEW)
    assert (plex.added, plex.paths, plex.item_id) == (True, (), "1936545")
    emby = parse_emby(EMBY_LIBRARY_NEW)
    assert (emby.added, emby.paths, emby.item_id) == (True, (f"{SERVER_ROOT}/{EPISODE}",),
                                                      "123456")
    assert parse_plex({**PLEX_LIBRARY_NEW, "event": "media.play"}).played
    for parse, bad in ((parse_jellyfin, {"ItemId": "x"}), (parse_plex, {"Metadata": {}}),
                       (parse_emby, {"Item": {"Path": "/x"}})):
        with pytest.raises(BadPayload):
            parse(bad)


def test_path_maps_take_the_longest_prefix_both_ways() -> None:
    path_maps = (PathMap("/data", "/mnt/nas"), PathMap("/data/tv", "/srv/tv"),
                 PathMap("D:\\Media", "/mnt/win"))
    assert to_local("/data/tv/a/b.mkv", path_maps) == "/srv/tv/a/b.mkv"
    assert to_local("/data/movies/c.mkv", path_maps) == "/mnt/nas/movies/c.mkv"
    assert to_local("/database/x.mkv", path_maps) == "/database/x.mkv"  # not a component
    assert to_local("D:\\Media\\Films\\x.mkv", path_maps) == "/mnt/win/Films/x.mkv"
    assert to_server("/srv/tv/a/b.en.srt", path_maps) == "/data/tv/a/b.en.srt"
    assert to_server("/mnt/win/Films/x.en.srt", path_maps) == "D:\\Media\\Films\\x.en.srt"
    assert to_server("/elsewhere/y.srt", path_maps) == "/elsewhere/y.srt"


def test_plex_section_is_the_deepest_location_holding_the_folder() -> None:
    sections = {"MediaContainer": {"Directory": [
        {"key": "1", "Location": [{"path": "/data"}]},
        {"key": "2", "Location": [{"path": "/data/tv"}, {"path": "/other"}]}]}}
    assert plex_section_for(sections, "/data/tv/Firefly") == "2"
    assert plex_section_for(sections, "/data/films") == "1"
    assert plex_section_for(sections, "/nowhere") is None


async def test_an_item_id_is_one_path_segment_of_the_look_up_whatever_it_holds(
        tmp_path: Path) -> None:
    """A webhook body is not trusted: an ItemId of `../System/Configuration` must not turn the
    daemon's look-up (made with the admin API key) into a request of the sender's choosing."""
    library_file(tmp_path)
    async with FakeMediaBrowser({}, "jf-key") as jf, \
            running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                            path_maps=maps(tmp_path),
                            media_servers={"jellyfin": {"url": jf.url, "api_key": "jf-key"}}
                            ) as service, aiohttp.ClientSession() as http:
        payload = {**JELLYFIN_ITEM_ADDED, "ItemId": "../System/Configuration"}
        await http.post(base_url(service) + "/hooks/jellyfin", json=payload)
        assert not [s for s in jf.seen if s.path.startswith("/System")], jf.seen
        assert jf.requests_to("/Items/../System/Configuration")


async def test_a_hook_cannot_reach_through_a_folder_link_out_of_the_library(
        tmp_path: Path) -> None:
    """A share user links a folder of the library to somewhere private; a webhook naming a
    file under that link is refused (nothing queued), and the decoder, confined to the
    library, would not read it either."""
    private = tmp_path / "private"
    private.mkdir()
    write_wav(private / "secret.wav", np.zeros(8000, dtype=np.float32))
    (tmp_path / "inbox" / "tv").mkdir(parents=True)
    (tmp_path / "inbox" / "tv" / "x").symlink_to(private)
    async with running_service(tmp_path, transcribe=ScriptedPipeline(), watch=SLOW_SCAN,
                               path_maps=maps(tmp_path)) as service, \
            aiohttp.ClientSession() as http:
        payload = {**JELLYFIN_ITEM_ADDED, "Path": f"{SERVER_ROOT}/x/secret.wav"}
        resp = await http.post(base_url(service) + "/hooks/jellyfin", json=payload)
        assert resp.status in (202, 204)
        assert await jobs_now(service) == []
