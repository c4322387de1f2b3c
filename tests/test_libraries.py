"""Media libraries (issue 13) on real folders: journal keys, sidecar output that adds one file
and touches nothing else, error records kept out of the library, outbox libraries, reload,
health, and a 2 000-file library scanned by a real daemon process while /healthz answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from daemon.config import LiveConfig, config_from_dict, load_config
from daemon.errors import InputError
from daemon.events import EventBus
from daemon.libraries import (
    LibraryWatchers,
    key_for_path,
    language_for_path,
    library_of,
    media_path,
)
from daemon.monitor import Lifecycle
from daemon.naming import label, parse_subtitle_name
from daemon.progress import Degradations
from daemon.service import Service
from daemon.writer import outbox_for, write_beside
from testkit.daemon import ROOT, free_port, wait_for, wait_until
from testkit.library_media import (
    AudioSpec,
    build_media,
    build_tree,
    library_config,
    serve,
    tree_digest,
)
from testkit.scripted import ScriptedPipeline

TV = {"name": "tv", "path": "lib", "output": "sidecar", "language": "en"}
EPISODE = "Show/Season 1/Show - S01E02.mkv"


@pytest.fixture(scope="module")
def plain_mkv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_media(tmp_path_factory.mktemp("media") / "plain.mkv",
                       [AudioSpec(seconds=0.5, language="eng")], video_seconds=0.5)


def put(root: Path, rel: str, source: Path) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return path


def states(service: Service) -> dict[str, str]:
    return {j.rel_path: j.state for j in service.journal.list_jobs(limit=10000)}


# ---------------------------------------------------------------------------- keys

def test_inbox_files_keep_todays_identities_and_places(tmp_path: Path) -> None:
    cfg = library_config(tmp_path, [TV])
    lib, inner = library_of(cfg, "Show/a.mkv") or (None, "")
    assert lib is not None and lib.default and inner == "Show/a.mkv"
    assert media_path(cfg, "Show/a.mkv") == tmp_path / "inbox/Show/a.mkv"
    assert key_for_path(cfg, tmp_path / "inbox/Show/a.mkv") == "Show/a.mkv"
    assert outbox_for(cfg, "Show/a.mkv").target("Show/a.mkv", "en", "srt") == \
        tmp_path / "outbox/Show/a.en.srt"


def test_library_files_are_namespaced_keys_that_read_back(tmp_path: Path) -> None:
    cfg = library_config(tmp_path, [TV])
    key = key_for_path(cfg, tmp_path / "lib" / EPISODE)
    assert key == f".libraries/tv/{EPISODE}"
    lib, inner = library_of(cfg, key) or (None, "")
    assert lib is not None and (lib.name, lib.output, lib.language, inner) == \
        ("tv", "sidecar", "en", EPISODE)
    assert media_path(cfg, key) == tmp_path / "lib" / EPISODE
    assert key_for_path(cfg, tmp_path / "elsewhere/x.mkv") is None
    assert key_for_path(cfg, tmp_path / "lib/../inbox/x.mkv") == "x.mkv"


def test_a_files_library_language_is_found_from_its_path(tmp_path: Path) -> None:
    """What the pipeline asks (it holds the absolute path): the library's language, given in
    any spelling and kept as ISO 639-1; none for the inbox or a library without one."""
    anime = {"name": "anime", "path": "anime", "language": "Japanese"}
    cfg = library_config(tmp_path, [TV, anime, {"name": "x", "path": "x"}])
    assert language_for_path(cfg, tmp_path / "anime/Show/e1.mkv") == "ja"
    assert language_for_path(cfg, tmp_path / "lib" / EPISODE) == "en"
    assert language_for_path(cfg, tmp_path / "x/e1.mkv") is None
    assert language_for_path(cfg, tmp_path / "inbox/e1.mkv") is None


def test_a_removed_librarys_key_names_no_file(tmp_path: Path) -> None:
    """Jobs queued for a library the config no longer has: no library, and a path that does
    not exist, so the worker cancels them as vanished (revived if the library returns)."""
    cfg = library_config(tmp_path)
    key = f".libraries/tv/{EPISODE}"
    assert library_of(cfg, key) is None
    assert not media_path(cfg, key).exists()


# ---------------------------------------------------------------------------- sidecar

async def test_sidecar_library_gets_the_subtitle_beside_the_media_and_nothing_else(
        tmp_path: Path, plain_mkv: Path) -> None:
    lib = tmp_path / "lib"
    put(lib, EPISODE, plain_mkv)
    put(lib, "Show/Season 1/Show - S01E01.mkv", plain_mkv)
    (lib / "Show/Season 1/Show - S01E01.en.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\n"
                                                           "Somebody else's.\n")
    (lib / "Show/tvshow.nfo").write_text("<tvshow/>")
    (lib / "Show/poster.jpg").write_bytes(os.urandom(2000))
    (lib / "Show/Season 1/Show - S01E02.nfo").write_text("<episodedetails/>")
    before = tree_digest(lib)
    async with serve(library_config(tmp_path, [TV]), ScriptedPipeline()) as service:
        key = f".libraries/tv/{EPISODE}"
        await wait_until(lambda: states(service).get(key) == "done", what="episode 2")
        job = service.journal.list_jobs("done")[0]
    after = tree_digest(lib)
    added = {name: digest for name, digest in after.items() if name not in before}
    assert list(added) == ["Show/Season 1/Show - S01E02.en.srt"]
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed
    srt = lib / "Show/Season 1/Show - S01E02.en.srt"
    assert srt.read_text().startswith("1\n00:00:00,500 --> ")
    assert job.outputs == [str(srt)]
    assert not (tmp_path / "outbox/tv").exists()  # no error, so nothing in the outbox
    assert (tmp_path / "state/journal.sqlite3").exists()


def test_a_sidecar_write_never_makes_a_folder_in_the_library(tmp_path: Path) -> None:
    """A show deleted while its episode was transcribed stays deleted: the write fails
    (transient: the next attempt finds the input gone and cancels it) and creates nothing."""
    (tmp_path / "lib").mkdir()
    with pytest.raises(FileNotFoundError):
        write_beside(tmp_path / "lib/Show/Season 1/e.en.srt", "x")
    assert list((tmp_path / "lib").iterdir()) == []
    write_beside(tmp_path / "lib/e.en.srt", "one\n")
    write_beside(tmp_path / "lib/e.en.srt", "two\n")
    assert [p.name for p in (tmp_path / "lib").iterdir()] == ["e.en.srt"]
    assert (tmp_path / "lib/e.en.srt").read_text() == "two\n"


async def test_an_error_in_a_sidecar_library_goes_to_the_outbox_and_the_journal(
        tmp_path: Path, plain_mkv: Path) -> None:
    lib = tmp_path / "lib"
    put(lib, EPISODE, plain_mkv)
    before = tree_digest(lib)
    failing = ScriptedPipeline(failures=[InputError("not_media", "not a readable media file")])
    async with serve(library_config(tmp_path, [TV]), failing) as service:
        key = f".libraries/tv/{EPISODE}"
        await wait_until(lambda: states(service).get(key) == "failed", what="failure")
        url = f"http://127.0.0.1:{service.http_port}/jobs?state=failed"
        listed = json.loads(await service.blocking(_get, url))
        error = tmp_path / "outbox/tv/Show/Season 1/Show - S01E02.error.json"
        await wait_until(error.exists, what="error file")
    assert tree_digest(lib) == before  # nothing beside the media
    record = json.loads(error.read_text())
    assert (record["input"], record["error"]) == (key, "not_media")
    jobs = listed["jobs"] if isinstance(listed, dict) else listed
    assert [(j["rel_path"], j["error"]) for j in jobs] == [(key, "not_media")]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


async def test_an_outbox_library_writes_under_its_name_and_keeps_its_media(
        tmp_path: Path, plain_mkv: Path) -> None:
    """on_success = delete is for the drop folder: a library's media is never moved or
    deleted. Its subtitles go to outbox/<name>/, mirroring its folders."""
    movies = {"name": "movies", "path": "films", "output": "outbox"}
    media = put(tmp_path / "films", "Film (1999)/Film (1999).mkv", plain_mkv)
    put(tmp_path / "inbox", "Film (1999)/Film (1999).mkv", plain_mkv)  # same relative path
    cfg = library_config(tmp_path, [movies], jobs={"on_success": "delete"})
    async with serve(cfg, ScriptedPipeline()) as service:
        await wait_until(lambda: list(states(service).values()) == ["done", "done"],
                         what="both files")
    assert (tmp_path / "outbox/movies/Film (1999)/Film (1999).en.srt").is_file()
    assert (tmp_path / "outbox/Film (1999)/Film (1999).en.srt").is_file()
    assert media.is_file()  # the library's copy stays
    assert not (tmp_path / "inbox/Film (1999)/Film (1999).mkv").exists()  # the inbox's went


# ---------------------------------------------------------------------------- README

def readme_configs() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use with Jellyfin / Plex / Emby / Kodi", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```toml\n(.*?)```", section, re.S)


@pytest.mark.parametrize("player, text", list(zip(["Jellyfin", "Plex", "Emby", "Kodi"],
                                                  readme_configs(), strict=True)))
async def test_each_readme_player_config_puts_a_named_subtitle_beside_the_media(
        tmp_path: Path, plain_mkv: Path, player: str, text: str) -> None:
    """The README's config for each player, with its folders moved under a temp folder (and no
    minimum duration: the test file lasts half a second): every library gets the subtitle
    beside its episode under a name that reads back as the language, in the style asked."""
    raw = tomllib.loads(text)
    raw["paths"]["state_dir"] = str(tmp_path / "state")
    raw.setdefault("skip", {})["min_duration"] = 0
    raw["watch"], raw["http"] = {"settle_seconds": 0.3, "poll_interval": 0.5}, {"port": 0}
    for lib in raw["libraries"]:
        lib["path"] = str(tmp_path / lib["name"])
        put(tmp_path / lib["name"], EPISODE, plain_mkv)
    (tmp_path / "inbox").mkdir()
    config = config_from_dict(raw, base=tmp_path)
    async with serve(config, ScriptedPipeline()) as service:
        await wait_until(lambda: service.journal.counts()["done"] == len(raw["libraries"]),
                         what=f"{player}'s libraries")
    style = raw.get("output", {}).get("lang_style", "iso639-1")
    for lib in raw["libraries"]:
        folder = tmp_path / lib["name"] / "Show/Season 1"
        (subtitle,) = [p.name for p in folder.iterdir() if p.suffix == ".srt"]
        assert subtitle == f"Show - S01E02.{label('en', style)}.srt"
        parsed = parse_subtitle_name("Show - S01E02", subtitle)
        assert parsed is not None and parsed.language == "en"


# ---------------------------------------------------------------------------- reload, health

def write_config(path: Path, libraries: list[dict[str, Any]]) -> Path:
    lines = ["[watch]", "settle_seconds = 0.3", "poll_interval = 0.5", "[http]", "port = 0"]
    for lib in libraries:
        lines.append("[[libraries]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in lib.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_a_library_added_on_reload_is_watched_and_one_removed_is_not(
        tmp_path: Path, plain_mkv: Path) -> None:
    (tmp_path / "inbox").mkdir()
    put(tmp_path / "lib", EPISODE, plain_mkv)
    put(tmp_path / "films", "Film.mkv", plain_mkv)
    config_file = write_config(tmp_path / "config.toml", [])
    async with serve(load_config(config_file), ScriptedPipeline()) as service:
        write_config(config_file, [TV])
        result = await service.control.reload()
        assert "libraries" in result["applied"] and not result["restart_needed"]
        await wait_until(lambda: states(service).get(f".libraries/tv/{EPISODE}") == "done",
                         what="the added library's file")
        write_config(config_file, [{"name": "films", "path": "films"}])
        await service.control.reload()
        await wait_until(lambda: states(service).get(".libraries/films/Film.mkv") == "done",
                         what="the second library's file")
        assert list(service.libraries.watchers) == ["films"]
        put(tmp_path / "lib", "Show/Season 1/Show - S01E03.mkv", plain_mkv)  # tv is not watched
        put(tmp_path / "films", "Film 2.mkv", plain_mkv)
        await wait_until(lambda: ".libraries/films/Film 2.mkv" in states(service),
                         what="a new file in the watched library")
        assert ".libraries/tv/Show/Season 1/Show - S01E03.mkv" not in states(service)


async def test_an_unavailable_library_is_degraded_in_healthz_until_it_is_back(
        tmp_path: Path, plain_mkv: Path) -> None:
    cfg = library_config(tmp_path, [TV])  # lib/ does not exist yet
    async with serve(cfg, ScriptedPipeline()) as service:
        await wait_until(lambda: "library tv unavailable" in
                         service.monitor.public_health()[1], what="degraded")
        assert service.monitor.public_health()[0] is False
        put(tmp_path / "lib", EPISODE, plain_mkv)
        await wait_until(lambda: service.monitor.public_health() == (True, []), what="healthy")
        await wait_until(lambda: states(service).get(f".libraries/tv/{EPISODE}") == "done",
                         what="its file, once it is back")


async def test_a_library_whose_share_is_away_does_not_hold_up_the_inbox(
        tmp_path: Path, plain_mkv: Path) -> None:
    """Its job steps aside (waiting, no attempt charged) and the inbox's newer job runs; once
    the share is back, its job is done too."""
    cfg = library_config(tmp_path, [TV])
    (tmp_path / "lib").mkdir()
    put(tmp_path / "inbox", "first.mkv", plain_mkv)
    pipeline = ScriptedPipeline(hold_after=1)
    async with serve(cfg, pipeline) as service:
        await wait_until(pipeline.held.is_set, 30, "the first job running")
        put(tmp_path / "lib", EPISODE, plain_mkv)
        key = f".libraries/tv/{EPISODE}"
        await wait_until(lambda: states(service).get(key) == "queued", what="library job")
        put(tmp_path / "inbox", "second.mkv", plain_mkv)
        await wait_until(lambda: states(service).get("second.mkv") == "queued", what="second")
        (tmp_path / "lib").rename(tmp_path / "lib-away")  # the share goes away
        pipeline.release.set()
        await wait_until(lambda: states(service).get("second.mkv") == "done", 30,
                         "the inbox job while the library is away")
        away = next(j for j in service.journal.list_jobs(limit=100) if j.rel_path == key)
        assert (away.state, away.attempts) == ("retry_wait", 0)
        (tmp_path / "lib-away").rename(tmp_path / "lib")
        await wait_until(lambda: states(service).get(key) == "done", 60, "it, once back")


async def test_a_librarys_watch_mode_is_chosen_off_the_event_loop(
        tmp_path: Path, plain_mkv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """watch.mode = "auto" looks the library's filesystem up (realpath, /proc/mounts), which a
    NAS that hangs can block: it runs in the daemon's threads, not on the loop that serves
    every request, and its answer (a network filesystem: poll) is the watcher's mode."""
    from daemon.discovery import mode as mode_module

    real, root = mode_module.filesystem_type, tmp_path / "lib"
    asked_on: dict[Path, threading.Thread] = {}

    def looked_up(path: Path) -> str:
        asked_on[Path(path)] = threading.current_thread()
        return "nfs4" if Path(path) == root else real(path)

    monkeypatch.setattr(mode_module, "filesystem_type", looked_up)
    put(root, EPISODE, plain_mkv)
    async with serve(library_config(tmp_path, [TV]), ScriptedPipeline()) as service:
        await wait_until(lambda: "tv" in service.libraries.watchers, what="the tv watcher")
        assert asked_on[root] is not threading.current_thread()  # the loop's thread
        assert service.libraries.watchers["tv"].mode == "poll"
        await wait_until(lambda: states(service).get(f".libraries/tv/{EPISODE}") == "done",
                         what="its file, found by polling")


class _NoIntake:
    """Nothing may be admitted on a worker node: any call fails the test."""

    def is_known(self, rel_path: str, st: os.stat_result) -> bool:
        raise AssertionError("a worker node looked at a library file")

    async def admit(self, item: object) -> None:
        raise AssertionError("a worker node admitted a library file")


async def test_a_cluster_worker_node_does_not_watch_libraries(tmp_path: Path,
                                                              plain_mkv: Path) -> None:
    """cluster.role = "worker" runs jobs only: the intake nodes watch the libraries. Its
    config still names them (it resolves their files), but no watcher starts, on start or
    on reload."""
    put(tmp_path / "lib", EPISODE, plain_mkv)
    cfg = library_config(tmp_path, [TV], cluster={"backend": "redis", "role": "worker"})
    live = LiveConfig(cfg)
    watchers = LibraryWatchers(live, _NoIntake(), asyncio.to_thread)
    life = Lifecycle()
    watchers.start(life, Degradations(EventBus()))
    live.replace(library_config(tmp_path, [TV, {"name": "b", "path": "b"}],
                                cluster={"backend": "redis", "role": "worker"}))
    await asyncio.sleep(0.5)
    assert watchers.watchers == {} and watchers.describe() == []
    assert library_of(cfg, f".libraries/tv/{EPISODE}") is not None
    life.stopping.set()
    await asyncio.gather(*life.tasks)


# ---------------------------------------------------------------------------- scale

HELD_DAEMON = """
import asyncio, sys
sys.path[:0] = [sys.argv[2]]
from daemon.config import LiveConfig, config_from_dict, load_config
from daemon.events import EventBus
from daemon.logs import setup_logging
from daemon.service import Service
from testkit.scripted import ScriptedPipeline

config = load_config(sys.argv[1])
setup_logging(config.logging)
# the first job holds after one line until the stop: nothing else is transcribed
asyncio.run(Service(config, pipeline=ScriptedPipeline(hold_after=1)).run())
"""
FILES = 2000


def test_a_2000_file_library_is_admitted_while_healthz_answers(tmp_path: Path,
                                                               plain_mkv: Path) -> None:
    """A real daemon process (the service with a held scripted pipeline) starts on a nested
    library of 2 000 media files: its first scan admits them all while /healthz keeps answering
    ok. Prints the scan time and /healthz latencies (p50, p99, max) taken during it."""
    build_tree(tmp_path / "lib", FILES, plain_mkv, per_folder=20, depth=3)
    port = free_port()
    config_file = write_config(tmp_path / "config.toml", [TV])
    config_file.write_text(config_file.read_text().replace("port = 0", f"port = {port}"))
    (tmp_path / "inbox").mkdir()
    log = (tmp_path / "daemon.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", HELD_DAEMON, str(config_file), str(ROOT)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        # ready: /healthz says "starting" (503) from the HTTP server's start until the inbox's
        # first scan is done; the library's scan runs on meanwhile and after
        wait_for(lambda: _healthz(base) == 200, 60, "the daemon ready")
        ready = time.monotonic()
        latencies, polls = [], 0
        while True:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            t0 = time.perf_counter()
            status = _healthz(base)
            latencies.append(time.perf_counter() - t0)
            assert status == 200, status  # never degraded, never refused, during the scan
            polls += 1
            if polls % 20 == 0 and _admitted(base) >= FILES:
                break
            assert time.monotonic() - ready < 600, "the scan did not end in 10 minutes"
        done = time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    latencies.sort()
    p = [1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]
         for q in (0.5, 0.99)]
    print(f"\n{FILES} files: ready after {ready - started:.2f} s, all admitted "
          f"{done - ready:.2f} s after ready ({done - started:.2f} s after start); /healthz "
          f"during the scan: {len(latencies)} requests, p50 {p[0]:.1f} ms, p99 {p[1]:.1f} ms, "
          f"max {1000 * latencies[-1]:.1f} ms")


def _healthz(base: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def _admitted(base: str) -> int:
    with urllib.request.urlopen(f"{base}/status", timeout=30) as resp:
        queue = json.load(resp)["queue"]
    return int(sum(queue.values()))
