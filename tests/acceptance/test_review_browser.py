"""The review page in a real browser: ``batchfuse review`` runs as its own process, headless
Chromium (Debian's, driven over the DevTools protocol like the report's tests) clicks and types
like a user, and the verdicts land in the database; ``batchfuse run`` then regenerates exactly the
rejected items (counted at the mock), the page shows both versions, and while a run is going the
page updates itself.  The token check refuses a script without the header and a form posted from
another origin; 10,000 items filter and page.
"""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import tests.acceptance.test_report_browser as report_browser
from tests.acceptance.test_report_browser import CHROMIUM, DevTools, browser, run_in_budget
from tests.conftest import cli, cli_process, generation_requests, items, manifest, wait_for

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium; .ci/run does)"
)


@pytest.fixture(autouse=True)
def loopback_browser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The report tests' Chromium, but reaching loopback directly (the review server is there):
    no proxy at all, and still every host name but 127.0.0.1 resolves to nothing."""
    plain = report_browser.chromium_args

    def args(profile: Any) -> list[str]:
        return [a for a in plain(profile) if not a.startswith(("--proxy-server", "--proxy-bypass-list"))] + [
            "--no-proxy-server"
        ]

    monkeypatch.setattr(report_browser, "chromium_args", args)


@contextmanager
def review_server(job: Any, *extra: str) -> Iterator[tuple[str, Any]]:
    """``batchfuse review`` on a free loopback port; yields its URL and the process."""
    proc = cli_process("review", job.manifest, "--port", "0", *extra)
    try:
        line = wait_for(lambda: re.search(r"http://127\.0\.0\.1:\d+/", proc.out()), "the review URL", proc=proc)
        yield line.group(0), proc
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


async def key(page: DevTools, name: str) -> None:
    """One key pressed and released, as a keyboard sends it."""
    codes = {"ArrowRight": 39, "ArrowLeft": 37, "ArrowDown": 40, "ArrowUp": 38, "Enter": 13, "Escape": 27}
    down: dict[str, Any] = {"type": "keyDown", "key": name}
    if name in codes:
        down.update(code=name, windowsVirtualKeyCode=codes[name])
        if name == "Enter":
            down["text"] = "\r"
    else:
        down.update(text=name, code=f"Key{name.upper()}" if name.isalpha() else f"Digit{name}",
                    windowsVirtualKeyCode=ord(name.upper()))
    await page.call("Input.dispatchKeyEvent", **down)
    await page.call("Input.dispatchKeyEvent", type="keyUp", key=name)


async def open_review(page: DevTools, url: str) -> None:
    await page.call("Page.navigate", url=url)
    await page.wait_until("document.body !== null && Number(document.body.dataset.rendered) > 0")


def verdict_rows(job: Any) -> list[tuple]:
    return job.sql(
        "SELECT i.key, v.verdict, v.note, v.prompt_extra, v.reviewer FROM verdicts v JOIN items i ON i.id = v.item_id "
        "ORDER BY v.id"
    )


def card_verdict(key_: str) -> str:
    return f"document.querySelector('[data-key={key_}]').dataset.verdict"


def test_approve_by_click_and_key_reject_with_a_note_then_run_regenerates_only_that(job, mock, tmp_path):
    job.write(manifest(mock.url, items(4)))
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 4
    me = getpass.getuser()

    with review_server(job) as (url, _proc):

        async def judge() -> None:
            async with browser(tmp_path) as page:
                await open_review(page, url)
                assert await page.evaluate("document.querySelectorAll('#cards .card').length") == 4
                html = await page.evaluate("document.documentElement.outerHTML")
                assert re.search(r'<meta name="batchfuse-token" content="[\w-]{20,}">', html)
                # approve with a click
                await page.click("[data-key=i000] .act-approve")
                await page.wait_until(f"{card_verdict('i000')} === 'approve'")
                # and undo: the verdict stays on record, marked undone
                await page.click("[data-key=i003] .act-approve")
                await page.wait_until(f"{card_verdict('i003')} === 'approve'")
                await page.click("[data-key=i003] .act-clear")
                await page.wait_until(f"{card_verdict('i003')} === 'none'")
                assert await page.evaluate("document.querySelectorAll('[data-key=i003] .history .undone').length") == 1
                # approve with the keyboard: the first card is selected, → moves, a approves
                await key(page, "ArrowRight")
                await page.wait_until("document.querySelector('.card.selected').dataset.key === 'i001'")
                await key(page, "a")
                await page.wait_until(f"{card_verdict('i001')} === 'approve'")
                # reject with a note and an added prompt line: r opens the form, Enter sends it
                await key(page, "ArrowRight")
                await key(page, "r")
                await page.wait_until("document.activeElement.classList.contains('note')")
                await page.call("Input.insertText", text="the logo is misspelt")
                await page.click("[data-key=i002] .prompt-extra")
                await page.call("Input.insertText", text="spell the logo ACME")
                await key(page, "Enter")
                await page.wait_until(f"{card_verdict('i002')} === 'reject'")
                assert "the logo is misspelt" in await page.evaluate(
                    "document.querySelector('[data-key=i002] .history').textContent")
                await page.wait_until("document.querySelector('#verdicts [data-verdict=approved] span').textContent === '2'"
                                      " && document.querySelector('#verdicts [data-verdict=rejected] span').textContent === '1'")

        run_in_budget(judge())
        assert verdict_rows(job) == [
            ("i000", "approve", None, None, me),
            ("i003", "approve", None, None, me),
            ("i003", "clear", None, None, me),
            ("i001", "approve", None, None, me),
            ("i002", "reject", "the logo is misspelt", "spell the logo ACME", me),
        ]

        result = cli("run", job.manifest)
        assert result.exit_code == 0, result.stderr
        sent = [r["prompt"] for r in generation_requests(mock)[4:]]
        assert sent == ["prompt 2\n\nspell the logo ACME"]  # exactly the rejected item, once

        async def both_versions() -> None:
            async with browser(tmp_path / "again") as page:
                await open_review(page, url)
                await page.wait_until("document.querySelectorAll('[data-key=i002] .versions figure').length === 1")
                images = await page.all_images_loaded()
                i002 = [i for i in images if "/i002." in i["src"]]
                assert len(i002) == 2 and all(i["w"] > 0 for i in i002), images
                assert any(".batchfuse-versions/i002.v1.png" in i["src"] for i in i002)
                # the full image on a click, closed with Esc
                await page.click("[data-key=i002] .outputs a")
                await page.wait_until("(document.querySelector('#viewer img') || {}).complete === true")
                full = await page.evaluate("[document.querySelector('#viewer img').naturalWidth, "
                                           "document.querySelector('#viewer img').src]")
                assert full[0] > 0 and "/file/out/i002.png?v=" in full[1]
                await key(page, "Escape")
                await page.wait_until("document.getElementById('viewer').hidden")
                # pick the earlier version with its number key: an approve that names it
                await key(page, "ArrowRight")
                await key(page, "ArrowRight")
                await page.wait_until("document.querySelector('.card.selected').dataset.key === 'i002'")
                await key(page, "2")
                await page.wait_until(f"{card_verdict('i002')} === 'approve'")
                await page.wait_until("document.querySelector('[data-key=i002] figure.picked') !== null")
                # / goes to the search box
                await key(page, "/")
                assert await page.evaluate("document.activeElement.id") == "q"
                facts = await page.evaluate("document.querySelector('[data-key=i002] .card > .facts, [data-key=i002] > .facts')"
                                            ".textContent")
                assert "revision 1" in facts

        (tmp_path / "again").mkdir()
        run_in_budget(both_versions())
    assert job.sql("SELECT verdict, pick FROM reviews r JOIN items i ON i.id = r.item_id WHERE i.key = 'i002'") == [
        ("approve", ".batchfuse-versions/i002.v1.png")
    ]


def test_the_page_updates_live_while_a_run_regenerates(job, mock, tmp_path):
    job.write(manifest(mock.url, items(3), limits={"concurrency": 1, "timeout_s": 120}))
    assert cli("run", job.manifest).exit_code == 0
    old = dict(job.sql("SELECT i.key, o.sha256 FROM outputs o JOIN items i ON i.id = o.item_id"))

    with review_server(job) as (url, _proc):
        async def session() -> None:
            async with browser(tmp_path) as page:
                await open_review(page, url)
                for k in ("i000", "i002"):
                    await page.click(f"[data-key={k}] .act-reject")
                    await page.click(f"[data-key={k}] .prompt-extra")
                    await page.call("Input.insertText", text="at dusk")
                    await key(page, "Enter")
                    await page.wait_until(f"{card_verdict(k)} === 'reject'")
                mock.faults(hold_after=1)  # the first regeneration goes through, the second waits
                run = cli_process("run", job.manifest)
                try:
                    wait_for(lambda: mock.faults()["held"] >= 1, "the second request held at the mock", proc=run)
                    # mid-run, without a reload: the first regenerated item's new image and its kept version appear
                    shas = "SELECT i.key, o.sha256 FROM outputs o JOIN items i ON i.id = o.item_id"
                    done = wait_for(lambda: [k for k, v in job.sql(shas) if v != old[k]], "one item regenerated", proc=run)
                    assert len(done) == 1
                    first, other = done[0], ({"i000", "i002"} - set(done)).pop()
                    new = dict(job.sql(shas))[first]
                    await page.wait_until(
                        f"(document.querySelector('[data-key={first}] .outputs img') || {{}}).src.includes('v={new[:16]}')")
                    await page.wait_until(f"document.querySelectorAll('[data-key={first}] .versions figure').length === 1")
                    assert await page.evaluate(f"document.querySelector('[data-key={other}] .badge').textContent") in (
                        "pending", "running")
                    assert run.poll() is None  # the run was still going
                    assert int(await page.evaluate("document.body.dataset.events || 0")) >= 1
                    mock.faults(hold=False)
                    run.communicate(timeout=60)
                    assert run.returncode == 0, run.err()
                finally:
                    mock.faults(hold=False)
                    if run.poll() is None:
                        run.kill()
                latest = dict(job.sql(shas))[other]
                assert latest != old[other]
                await page.wait_until(
                    f"(document.querySelector('[data-key={other}] .outputs img') || {{}}).src.includes('v={latest[:16]}')")
                assert await page.evaluate("document.location.href") == url  # never reloaded

        run_in_budget(session())
    assert len(generation_requests(mock)) == 5


def test_the_token_refuses_a_request_without_it_and_a_form_from_another_origin(job, mock, tmp_path):
    job.write(manifest(mock.url, items(2)))
    assert cli("run", job.manifest).exit_code == 0

    with review_server(job) as (url, _proc):
        async def session() -> None:
            async with browser(tmp_path) as page:
                await open_review(page, url)
                # a script on the page itself, without the header or with a wrong one: 403
                statuses = await page.evaluate(
                    "Promise.all([{}, {'X-Batchfuse-Token': 'wrong'}].map((h) => fetch('/api/items/i000/verdict', "
                    "{method: 'POST', headers: {'Content-Type': 'application/json', ...h}, "
                    "body: JSON.stringify({verdict: 'approve'})}).then((r) => r.status)))"
                )
                assert statuses == [403, 403]

                # another local origin posts a form at the API (the classic CSRF): refused
                async def attacker(_request: web.Request) -> web.Response:
                    return web.Response(content_type="text/html", text=(
                        f'<form method="post" enctype="text/plain" action="{url}api/items/i001/verdict">'
                        '<input name=\'{"verdict": "approve", "x": "\' value=\'"}\'></form>'
                        "<script>document.forms[0].submit()</script>"))

                app = web.Application()
                app.router.add_get("/", attacker)
                runner = web.AppRunner(app)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = site._server.sockets[0].getsockname()[1]
                try:
                    await page.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
                    await page.wait_until(f"location.href.startsWith({json.dumps(url + 'api/')})")
                    await page.wait_until("document.readyState === 'complete'")
                    assert "X-Batchfuse-Token" in await page.evaluate("document.body.textContent")
                finally:
                    await runner.cleanup()
                # and a script from that origin cannot even ask (no CORS): the fetch fails
                preflight = {"Origin": f"http://127.0.0.1:{port}", "Access-Control-Request-Method": "POST",
                             "Access-Control-Request-Headers": "x-batchfuse-token"}
                async with aiohttp.ClientSession() as http, http.options(
                    f"{url}api/items/i001/verdict", headers=preflight
                ) as r:
                    assert "Access-Control-Allow-Origin" not in r.headers

        run_in_budget(session())
    assert verdict_rows(job) == []  # nothing changed


def test_filtering_and_paging_ten_thousand_items(job, mock, tmp_path):
    from batchfuse.plan.preview import load
    from batchfuse.review.reading import reading_job
    from batchfuse.run.job import open_store, sync
    from batchfuse.store.verdicts import record_verdict

    n = 10_000
    (job.root / "catalog.csv").write_text(
        "sku,product\n" + "".join(f"item-{i:05d},{'lamp' if i % 10 == 0 else 'chair'} {i}\n" for i in range(n)),
        encoding="utf-8",
    )
    data = manifest(mock.url, [], prompt="a {product} on a table")
    del data["items"]
    data["items_from"] = {"file": "catalog.csv", "key": "{sku}"}
    job.write(data)
    loaded = load(job.manifest)
    store = open_store(loaded, None)
    try:
        sync(store, loaded)  # the plan, through the library, as a run makes it (nothing sent)
    finally:
        store.close()
    with reading_job(job.manifest, None, writable=True) as (_, store, j):
        for i in range(0, n, 50):  # 200 rejected, 100 approved
            record_verdict(store, j, f"item-{i:05d}", "reject", reviewer="t", note="n")
        for i in range(25, n, 100):
            record_verdict(store, j, f"item-{i:05d}", "approve", reviewer="t")
    assert generation_requests(mock) == []

    with review_server(job) as (url, _proc):
        async def session() -> None:
            async with browser(tmp_path) as page:
                await open_review(page, url)
                shown = "document.getElementById('shown').textContent"
                assert await page.evaluate(shown) == f"showing 1–100 of {n}"
                assert await page.evaluate("document.querySelectorAll('#cards .card').length") == 100
                await page.click("#verdicts button[data-verdict=rejected]")
                await page.wait_until(f"{shown} === 'showing 1–100 of 200 (10000 in all)'")
                await page.click(".pager button:last-child")
                await page.wait_until(f"{shown} === 'showing 101–200 of 200 (10000 in all)'")
                keys = await page.evaluate("Array.from(document.querySelectorAll('#cards .card'), (c) => c.dataset.key)")
                assert keys[0] == "item-05000" and keys[-1] == "item-09950" and len(keys) == 100
                assert await page.evaluate("location.hash") == "#verdict=rejected&page=2"
                # search narrows in the database: lamps among the rejected (every 50th is a multiple of 10)
                await page.click("#q")
                await page.call("Input.insertText", text="lamp 99")
                await page.wait_until(f"{shown} === 'showing 1–2 of 2 (10000 in all)'")
                assert await page.evaluate(
                    "Array.from(document.querySelectorAll('#cards .card'), (c) => c.dataset.key)"
                ) == ["item-09900", "item-09950"]
                await page.click("#verdicts button[data-verdict=approved]")
                await page.wait_until(f"{shown} === 'no items match'")
                await page.click("#verdicts button[data-verdict=all]")
                await page.wait_until(f"{shown} === 'showing 1–11 of 11 (10000 in all)'")  # 'lamp 99…'
                # the API pages in the database and counts the verdicts
                async with aiohttp.ClientSession() as http, http.get(
                    f"{url}api/items?verdict=none&page=97&state=pending"
                ) as r:
                    data = await r.json()
                assert data["total"] == n - 300 and len(data["items"]) == 100
                assert data["items"][-1]["key"] == "item-09999"
                assert data["verdicts"] == {"approved": 100, "rejected": 200, "unjudged": n - 300}

        run_in_budget(session())
