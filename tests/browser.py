"""Headless Debian Chromium driven over the DevTools protocol (aiohttp's websocket client).

No browser download and no extra driver: the Makefile installs Debian's chromium, the test
starts it, opens a page and reads the DOM with Runtime.evaluate.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import tempfile
from typing import Any

import aiohttp

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed (make test installs Debian's package)")
    return path


class Browser:
    def __init__(self, port: int) -> None:
        self.port = port
        self.profile = tempfile.mkdtemp(prefix="subwatch-chromium-")
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Browser:
        self.proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--remote-debugging-port={self.port}",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._session = aiohttp.ClientSession()
        for _ in range(100):
            try:
                async with self._session.get(f"http://127.0.0.1:{self.port}/json/version"):
                    return self
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
        raise RuntimeError("chromium did not open its DevTools port")

    async def open(self, url: str) -> None:
        assert self._session is not None
        async with self._session.put(f"http://127.0.0.1:{self.port}/json/new?{url}") as resp:
            target = await resp.json(content_type=None)
        self._ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        msg_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads((await self._ws.receive()).data)
            if reply.get("id") == msg_id:
                return reply["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def screenshot(self, path: str) -> None:
        import base64

        data = (await self.call("Page.captureScreenshot", format="png"))["data"]
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
