"""The report in a real browser: headless Chromium opens it from disk (file://) and is driven
over the DevTools protocol like a user — thumbnails really load, the counts shown are the
database's, the failed filter is one click, and 10,000 items page through.

The browser is Debian's ``chromium`` (``.ci/run`` installs it); without it these tests skip.
It gets no network: every host name resolves to nothing and every proxied request goes to a
closed port on loopback; the only connection made is DevTools' own, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from PIL import Image

from batchfuse.cli import Group
from batchfuse.review.cli_review import export, report
from batchfuse.review.report import write_report
from tests.conftest import URL_REF, XSS_PROMPT, db_counts, page_items, run_review_job

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium; .ci/run does)"
)
#: Each test's whole browser session at most: a guard against a hang (below pytest's timeout so
#: Chromium is still cleaned up), not a speed requirement; speed is a benchmark's business.
BUDGET_S = 100.0


class DevTools:
    """A minimal Chrome DevTools Protocol client over one websocket (flat sessions)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []
        self._next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        await self.ws.send_json(message)
        while True:
            reply = await self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def _receive(self) -> dict[str, Any]:
        msg = await self.ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"DevTools connection ended: {msg.type.name}")
        data = json.loads(msg.data)
        if "method" in data:
            self.events.append(data)
        return data

    async def wait_for_event(self, method: str) -> dict[str, Any]:
        while True:
            for event in self.events:
                if event["method"] == method:
                    return event
            await self._receive()

    def event_params(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.events if e["method"] == method]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_until(self, expression: str, timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.05)

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element, as a user makes it."""
        box = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1
            )

    async def open(self, path: Path) -> None:
        """Load ``path`` from disk and wait until the page has rendered its cards."""
        await self.call("Page.navigate", url=path.as_uri())
        await self.wait_for_event("Page.loadEventFired")
        await self.wait_until("Number(document.body.dataset.rendered) > 0")

    async def all_images_loaded(self) -> list[dict[str, Any]]:
        """Scroll through the page a screen at a time, as a user would (lazy images load only
        near the viewport), wait for every image, and return each one's address and natural width."""
        height = await self.evaluate("document.documentElement.scrollHeight")
        step = await self.evaluate("window.innerHeight")
        for y in range(0, height + step, step):
            await self.evaluate(f"window.scrollTo(0, {y})")
            await self.wait_until(
                "Array.from(document.images).filter((i) => { const r = i.getBoundingClientRect();"
                " return r.bottom > 0 && r.top < window.innerHeight; }).every((i) => i.complete)"
            )
        await self.wait_until("Array.from(document.images).every((i) => i.complete)")
        await self.evaluate("window.scrollTo(0, 0)")
        return await self.evaluate("Array.from(document.images).map((i) => ({src: i.src, w: i.naturalWidth}))")


def chromium_args(profile: Path) -> list[str]:
    assert CHROMIUM is not None
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-breakpad",
        "--no-pings",
        # no network: nothing resolves, and anything that does not resolve by name goes to a closed port
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "--window-size=1280,1600",
        f"--user-data-dir={profile}",
        "about:blank",
    ]


@asynccontextmanager
async def browser(tmp_path: Path) -> AsyncIterator[DevTools]:
    """Headless Chromium with a fresh profile, attached to a new blank page."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["HOME"] = str(tmp_path)
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        chromium_args(profile), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start: {(tmp_path / 'chromium.log').read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        port, ws_path = port_file.read_text().splitlines()[:2]
        async with aiohttp.ClientSession(trust_env=False) as http, http.ws_connect(
            f"ws://127.0.0.1:{port}{ws_path}", max_msg_size=0
        ) as ws:
            devtools = DevTools(ws)
            target = await devtools.call("Target.createTarget", url="about:blank")
            attached = await devtools.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)
            devtools.session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Network", "Log"):
                await devtools.call(f"{domain}.enable")
            yield devtools
            try:
                await asyncio.wait_for(devtools.call("Browser.close"), 5)
            except (RuntimeError, asyncio.TimeoutError):
                pass
    finally:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started: chromium and its helpers
            proc.wait(timeout=5)
        log.close()


def assert_quiet(devtools: DevTools) -> None:
    """Only file:// was requested, no script failed, nothing was refused or logged as an error."""
    urls = [p["request"]["url"] for p in devtools.event_params("Network.requestWillBeSent")]
    assert urls and all(u.startswith(("file://", "data:", "about:")) for u in urls), urls
    assert devtools.event_params("Runtime.exceptionThrown") == []
    errors = [p["entry"]["text"] for p in devtools.event_params("Log.entryAdded") if p["entry"]["level"] == "error"]
    console = [p for p in devtools.event_params("Runtime.consoleAPICalled") if p["type"] in ("error", "assert")]
    assert errors == [] and console == []


def run_in_budget(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, BUDGET_S))


# ---------------------------------------------------------------------------- a real job


def make_report(job: Any, mock: Any) -> dict[str, Any]:
    """Run the review job against the mock (two succeeded, one failed, two pending), write its
    report, and return what the database and the page's data say."""
    run_review_job(job, mock)
    result = CliRunner().invoke(Group(commands=[report, export]), ["report", str(job.manifest)])
    assert result.exit_code == 0, result.stderr
    shown = page_items((job.root / "test-job.report.html").read_text(encoding="utf-8"))
    return {
        "counts": db_counts(job),
        "failed": sorted(k for (k,) in job.sql("SELECT key FROM items WHERE state = 'failed'")),
        # outputs, and the local reference images (a URL reference is a link, never an image)
        "images": len(job.sql("SELECT 1 FROM outputs")) + sum(
            1 for item in shown.values() for ref in item["refs"] if ref.get("thumb")),
    }


def test_report_in_chromium_loads_thumbnails_shows_the_counts_and_filters_failed(job, mock, tmp_path):
    expected = make_report(job, mock)
    assert expected["counts"] == {"total": 5, "succeeded": 2, "failed": 1, "pending": 2, "running": 0}

    async def session() -> None:
        async with browser(tmp_path) as page:
            await page.open(job.root / "test-job.report.html")

            # every thumbnail really loads: no broken image
            images = await page.all_images_loaded()
            assert len(images) == expected["images"]
            assert [i for i in images if not i["w"] > 0] == []
            assert all(re.search(r"/test-job\.report_thumbs/[0-9a-f]{64}-256\.(webp|jpg)$", i["src"]) for i in images)

            # the counts shown are the database's, at the top and on the filter buttons
            shown = await page.evaluate(
                "Object.fromEntries(Array.from(document.querySelectorAll('#counts [data-count]'), "
                "(li) => [li.dataset.count, Number(li.querySelector('b').textContent)]))"
            )
            assert shown == expected["counts"]
            on_buttons = await page.evaluate(
                "Object.fromEntries(Array.from(document.querySelectorAll('#filters button'), "
                "(b) => [b.dataset.state, Number(b.querySelector('span').textContent)]))"
            )
            assert on_buttons == {"all": 5, **{s: expected["counts"][s] for s in ("failed", "succeeded", "pending", "running")}}
            assert await page.evaluate("document.querySelectorAll('#cards .card').length") == 5

            # the hostile prompt is text, not markup
            assert await page.evaluate("typeof window.__pwned") == "undefined"
            assert await page.evaluate("document.querySelector('[data-key=fused] .prompt').textContent") == XSS_PROMPT
            # a URL reference is a link, never fetched
            assert await page.evaluate("document.querySelector('[data-key=remote] .refs a').href") == URL_REF

            # one click on "failed" shows the failed items only, with their errors
            await page.click('#filters button[data-state="failed"]')
            await page.wait_until(
                "document.querySelector('#filters button[data-state=failed]').getAttribute('aria-pressed') === 'true'"
            )
            cards = await page.evaluate(
                "Array.from(document.querySelectorAll('#cards .card'), (c) => [c.dataset.key, c.dataset.state])"
            )
            assert sorted(k for k, _ in cards) == expected["failed"]
            assert {s for _, s in cards} == {"failed"}
            assert "IMAGE_SAFETY" in await page.evaluate("document.querySelector('#cards .card .error').textContent")
            assert await page.evaluate("location.hash") == "#state=failed"

            # and the search box narrows the view as one types
            await page.click('#filters button[data-state="all"]')
            await page.click("#q")
            await page.call("Input.insertText", text="poster")
            await page.wait_until("document.querySelectorAll('#cards .card').length === 1")
            assert await page.evaluate("document.querySelector('#cards .card').dataset.key") == "poster"
            assert_quiet(page)

    run_in_budget(session())


# ---------------------------------------------------------------------------- 10,000 items


def test_ten_thousand_items_page_through_without_freezing(tmp_path):
    """A page of 100 cards at a time: opening, filtering and paging work on 10,000 items."""
    out = tmp_path / "out"
    out.mkdir()
    palette = []
    for i in range(8):
        file = out / f"shade-{i}.png"
        Image.new("RGB", (512, 512), (30 * i, 120, 255 - 30 * i)).save(file)
        palette.append((file.name, hashlib.sha256(file.read_bytes()).hexdigest()))
    n = 10_000
    states = ["succeeded"] * 7 + ["failed", "pending", "succeeded"]

    def rows() -> Any:
        for i in range(n):
            state = states[i % len(states)]
            name, sha = palette[i % len(palette)]
            yield {
                "key": f"item-{i:05d}",
                "state": state,
                "attempts": 1 if state != "pending" else 0,
                "tokens": 1290,
                "error_class": "rejected" if state == "failed" else None,
                "last_error": f"blocked </script> #{i}" if state == "failed" else None,
                "spec": {"prompt": f"catalog shot {i}: <b>product</b> on a table, soft light", "images": []},
                "outputs": [{"path": name, "sha256": sha, "width": 512, "height": 512}] if state == "succeeded" else [],
            }

    counts = {"succeeded": 8000, "failed": 1000, "pending": 1000, "running": 0, "total": n}
    dest = tmp_path / "report.html"
    result = write_report(rows(), counts=counts, job_name="big", output_dir=out, manifest_dir=tmp_path, dest=dest)
    assert result.items == counts and result.thumbnails["made"] == len(palette)

    async def session() -> None:
        async with browser(tmp_path) as page:
            await page.open(dest)
            assert await page.evaluate("document.querySelectorAll('#cards .card').length") == 100
            assert await page.evaluate("document.getElementById('shown').textContent") == "showing 1–100 of 10000"

            await page.evaluate(
                "(() => { document.querySelector('#filters button[data-state=failed]').click();"
                " document.querySelectorAll('.pager')[0].lastChild.click(); })()"
            )
            assert await page.evaluate("document.getElementById('shown').textContent") == (
                "showing 101–200 of 1000 (10000 in all)"
            )
            keys = await page.evaluate("Array.from(document.querySelectorAll('#cards .card'), (c) => c.dataset.state)")
            assert len(keys) == 100 and set(keys) == {"failed"}
            await page.click('#filters button[data-state="succeeded"]')
            await page.wait_until("document.querySelector('#cards .card').dataset.state === 'succeeded'")
            images = await page.all_images_loaded()
            assert len(images) == 100 and all(i["w"] > 0 for i in images)
            assert_quiet(page)

    run_in_budget(session())
