"""Headless Chromium for the browser tests, through Playwright's sync API.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), launched by path: Playwright's own
browser download is never used (CI reaches nothing but package registries).  Without the binary
the browser tests skip.  The browser gets no network beyond what a test allows: every host name
resolves to nothing, and with ``loopback=False`` (the report, opened from disk) every proxied
request goes to a closed port, so only ``file://`` can load; the review server on 127.0.0.1 is
reached directly with ``loopback=True``.

Waiting is Playwright's: locators wait for their element, ``expect(...)`` retries an assertion
until it holds (up to :data:`WAIT_MS`, a guard against a hang, not a speed requirement).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium; .ci/run does)"
)
#: Longest wait for any one condition (a loaded 2-core machine is slow; a hang still ends).
WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)
_POSITIVE = re.compile(r"^[1-9][0-9]*$")


@dataclass
class Seen:
    """What the page did: every request's URL, uncaught errors, console errors, failed loads."""

    urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def assert_quiet(self, *, only: tuple[str, ...] = ("file://", "data:", "about:")) -> None:
        """Only ``only`` URLs were requested, no script failed, nothing was refused or logged as an error."""
        assert self.urls and all(u.startswith(only) for u in self.urls), self.urls
        assert self.errors == [] and self.console == [] and self.failed == []


@contextmanager
def chromium(tmp_path: Path, *, loopback: bool = False) -> Iterator[tuple[Page, Seen]]:
    """A fresh headless Chromium (its own profile and HOME under ``tmp_path``) with one page."""
    assert CHROMIUM is not None
    home = tmp_path / "chromium-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["HOME"] = str(home)
    args = [
        "--disable-gpu",
        "--disable-quic",
        "--no-pings",
        "--disable-domain-reliability",
        "--disable-component-update",
        # no network: nothing resolves but 127.0.0.1
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]
    if loopback:
        args.append("--no-proxy-server")
    else:  # and anything that does not go by name goes to a closed port
        args += ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args, env=env, chromium_sandbox=False)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1600})
            context.set_default_timeout(WAIT_MS)
            page = context.new_page()
            seen = Seen()
            page.on("request", lambda r: seen.urls.append(r.url))
            page.on("pageerror", lambda e: seen.errors.append(str(e)))
            page.on("console", lambda m: seen.console.append(m.text) if m.type in ("error", "assert") else None)
            page.on("requestfailed", lambda r: seen.failed.append(f"{r.url}: {r.failure}"))
            yield page, seen
        finally:
            browser.close()


def rendered(page: Page) -> None:
    """Wait until the page's script has rendered its cards at least once."""
    expect(page.locator("body")).to_have_attribute("data-rendered", _POSITIVE)


def all_images_loaded(page: Page) -> list[dict[str, Any]]:
    """Bring every image into view, as a user scrolling would (lazy images load only near the
    viewport), wait until each has loaded, and return each one's address and natural width."""
    # one check in the page per poll, so a live update that re-renders the cards meanwhile
    # (new elements) cannot leave us holding an image that is no longer in the page
    page.wait_for_function(
        """() => {
            const waiting = Array.from(document.images).find((i) => !i.complete);
            if (waiting) { waiting.scrollIntoView({block: "center"}); return false; }
            return document.images.length > 0;
        }""",
        timeout=60_000,
    )
    page.evaluate("window.scrollTo(0, 0)")
    return page.evaluate("Array.from(document.images).map((i) => ({src: i.src, w: i.naturalWidth}))")


def keys_of_cards(page: Page) -> list[str]:
    return page.locator("#cards .card").evaluate_all("(cards) => cards.map((c) => c.dataset.key)")

