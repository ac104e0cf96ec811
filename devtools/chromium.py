"""Debian's Chromium, headless, driven over the DevTools protocol (no chromedriver).

The talk page's browser test needs a real browser with a microphone: Chromium's fake
capture device plays a WAV file as the microphone (``--use-file-for-fake-audio-capture``)
and the permission prompt is answered by ``--use-fake-ui-for-media-stream``. The protocol
is JSON over one websocket (aiohttp's client): ``Page.navigate``, ``Runtime.evaluate``,
``Page.captureScreenshot`` are all a test needs. Chromium prints the browser's websocket
address on stderr (``--remote-debugging-port=0`` picks a free port); the page target's
address comes from ``/json/list``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
    "--window-size=1100,760",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserError(RuntimeError):
    """Chromium did not start, or a protocol command failed (the message says which)."""


class Chromium:
    """One headless Chromium with a fresh profile; ``aclose`` stops it and deletes the profile."""

    def __init__(self, process: subprocess.Popen[str], profile: str, lines: list[str]) -> None:
        self._process = process
        self._profile = profile
        self._lines = lines
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self.console: list[str] = []
        """The page's console messages and uncaught exceptions, for failure reports."""

    @classmethod
    async def start(cls, *, microphone_wav: Path | None = None, start_seconds: float = 60) -> Chromium:
        """A running browser attached to its blank page; ``BrowserError`` if it does not start."""
        process, profile, lines, found = await asyncio.to_thread(_launch, microphone_wav)
        browser = cls(process, profile, lines)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + start_seconds
        while not found.is_set():
            if process.poll() is not None or loop.time() > deadline:
                await browser.aclose()
                raise BrowserError("chromium did not start:\n" + "\n".join(lines[-20:]))
            await asyncio.sleep(0.05)
        await browser._attach(lines)
        return browser

    async def _attach(self, lines: list[str]) -> None:
        address = next(m.group(1) for line in lines if (m := _LISTENING.search(line)))
        origin = address.split("/devtools/", 1)[0].replace("ws://", "http://")
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"{origin}/json/list") as response:
            targets = await response.json()
        page = next((t for t in targets if t.get("type") == "page"), None)
        if page is None:
            raise BrowserError(f"chromium has no page target: {targets}")
        self._ws = await self._http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            future = self._pending.pop(data["id"], None) if "id" in data else None
            if future is not None and not future.done():
                future.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
                self.console.append(f"{data['params'].get('type')}: {text}"[:500])
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"].get("exceptionDetails", {})
                self.console.append(f"exception: {details.get('exception', {}).get('description', details)}"[:500])
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the DevTools connection closed"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One protocol command; its ``result``, or ``BrowserError`` with the protocol's error."""
        if self._ws is None:
            raise BrowserError("not attached to a page")
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return dict(answer.get("result", {}))

    async def navigate(self, url: str, *, load_seconds: float = 30) -> None:
        """Open ``url`` and return once its document has loaded (scripts ran)."""
        await self.send("Page.navigate", url=url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + load_seconds
        check = f"document.readyState === 'complete' && location.href === {json.dumps(url)}"
        while True:
            try:
                if await self.evaluate(check):
                    return
            except BrowserError:  # the old document went away mid-evaluation
                pass
            if loop.time() > deadline:
                raise BrowserError(f"{url} did not load in {load_seconds:.0f} s")
            await asyncio.sleep(0.05)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (awaited if it is a promise)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"page threw: {result['exceptionDetails'].get('text')} in {expression[:120]}")
        return result.get("result", {}).get("value")

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(_write, path, base64.b64decode(data["data"]))
        return path

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self._process.wait, 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                await asyncio.to_thread(self._process.wait, 5)
        shutil.rmtree(self._profile, ignore_errors=True)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _launch(microphone_wav: Path | None) -> tuple[subprocess.Popen[str], str, list[str], threading.Event]:
    """Start Chromium on a fresh profile; its stderr lines, and an event set once it listens."""
    if not Path(CHROMIUM).exists():
        raise BrowserError(f"{CHROMIUM} is missing (make system-deps installs chromium)")
    profile = tempfile.mkdtemp(prefix="talk-chromium-")
    args = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    if microphone_wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone_wav}")
    args.append("about:blank")
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    lines: list[str] = []
    found = threading.Event()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line.rstrip())
            del lines[:-200]
            if _LISTENING.search(line):
                found.set()

    threading.Thread(target=pump, name="chromium-stderr", daemon=True).start()
    return process, profile, lines, found
