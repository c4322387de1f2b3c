"""The live page in headless Chromium, as an operator uses it: opened in the middle of a job it
shows what was said before it opened, a failed job can be retried and a running one canceled
from it, and a job has a view of its own. The daemon is real; the recognition is scripted so
the job can be held mid-way on purpose."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

from browser import Browser

from daemon.errors import InputError
from testkit.daemon import ROOT, base_url, free_port, running_service, wait_until
from testkit.scripted import LINES, ScriptedPipeline


def drop(root: Path, name: str) -> None:
    (root / "inbox" / name).write_bytes(b"\x01" * 4096)


async def until_page(browser: Browser, condition: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await browser.evaluate(condition)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"the page never satisfied: {condition}")


def shown_text(selector: str) -> str:
    return f"[...document.querySelectorAll('{selector}')].map(e => e.textContent).join(' | ')"


async def test_opened_mid_job_it_shows_what_was_said_before_and_can_cancel(
        tmp_path: Path) -> None:
    pipeline = ScriptedPipeline(hold_after=2)
    async with running_service(tmp_path, transcribe=pipeline) as service, \
            Browser(free_port()) as browser:
        drop(tmp_path, "talk.wav")
        await wait_until(pipeline.held.is_set, 30, "two lines said")
        (job_id,) = list(service.running)
        await browser.open(base_url(service) + "/")  # only now: the first lines are history
        text = await until_page(browser, f"(t => t.includes({LINES[1]!r}) && t)("
                                         f"{shown_text('#subs .cue .x')})")
        assert text.count(LINES[0]) == 1  # history and stream overlap: shown once
        await page_picture(browser, tmp_path)
        await until_page(browser, "!!document.querySelector('#running button.cancel')")
        await browser.evaluate("document.querySelector('#running button.cancel').click()")
        await wait_until(lambda: service.journal.get(job_id).state == "canceled", 30, "cancel")
    assert pipeline.emitted == 2


async def test_a_failed_job_is_retried_from_the_page(tmp_path: Path) -> None:
    failure = InputError("corrupt", "the media cannot be decoded")
    pipeline = ScriptedPipeline(failures=[failure])
    async with running_service(tmp_path, transcribe=pipeline) as service, \
            Browser(free_port()) as browser:
        drop(tmp_path, "broken.wav")
        await wait_until(lambda: service.journal.counts()["failed"] == 1, 30, "failed")
        await browser.open(base_url(service) + "/")
        line = await until_page(browser, f"(t => t.includes('corrupt') && t)("
                                         f"{shown_text('#recent .failed')})")
        assert "cannot be decoded" in line
        await browser.evaluate("document.querySelector('#recent .failed button.retry').click()")
        await wait_until(lambda: service.journal.counts()["done"] == 1, 30, "retried and done")
    assert (tmp_path / "outbox" / "broken.en.srt").is_file()


async def test_the_job_view_shows_its_subtitles_outputs_and_events(tmp_path: Path) -> None:
    async with running_service(tmp_path, transcribe=ScriptedPipeline()) as service, \
            Browser(free_port()) as browser:
        drop(tmp_path, "clip.wav")
        await wait_until(lambda: service.journal.counts()["done"] == 1, 30, "done")
        (job,) = service.journal.list_jobs("done")
        await browser.open(base_url(service) + "/")
        await until_page(browser, "document.getElementById('health').textContent === 'live'")
        await browser.evaluate(f"location.hash = '#job/{job.id}'")
        subs = await until_page(browser, f"(t => t.includes({LINES[-1]!r}) && t)("
                                         f"{shown_text('#jobsubs .final .x')})")
        assert LINES[0] in subs and not await browser.evaluate(
            "!!document.querySelector('#jobsubs .draft')")
        outputs = await browser.evaluate("document.getElementById('joboutputs').textContent")
        assert outputs.endswith("clip.en.srt")
        events = await browser.evaluate("document.getElementById('jobevents').textContent")
        assert "signal.job_done" in events
        assert await browser.evaluate("!!document.querySelector('#jobactions button.retry')")


async def page_picture(browser: Browser, tmp_path: Path) -> None:
    """The README's picture of the page: written here; copied into docs/ on request."""
    picture = tmp_path / "page.png"
    await browser.screenshot(str(picture))
    assert picture.stat().st_size > 10_000
    if os.environ.get("SUBWATCH_UPDATE_DOCS") == "1":
        shutil.copy(picture, ROOT / "docs" / "page.png")
