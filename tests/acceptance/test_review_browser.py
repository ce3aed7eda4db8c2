"""The review page in a real browser: ``batchfuse review`` runs as its own process, headless
Chromium (Debian's, driven by Playwright) clicks and types like a user, and the verdicts land in
the database; ``batchfuse run`` then regenerates exactly the rejected items (counted at the mock),
the page shows both versions, picking the earlier one puts it back under the stable name, and
while a run is going the page updates itself.  The token check refuses a script without the header
and a form posted from another origin; 10,000 items filter and page.
"""

from __future__ import annotations

import getpass
import hashlib
import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

from tests.acceptance.browser import all_images_loaded, chromium, keys_of_cards, needs_chromium, rendered
from tests.conftest import cli, cli_process, generation_requests, items, manifest, wait_for
from tests.integration.test_review_server import review_url

pytestmark = needs_chromium


def open_review(page: Page, url: str) -> None:
    page.goto(url)
    rendered(page)


def verdict_rows(job: Any) -> list[tuple]:
    return job.sql(
        "SELECT i.key, v.verdict, v.note, v.prompt_extra, v.reviewer FROM verdicts v JOIN items i ON i.id = v.item_id "
        "ORDER BY v.id"
    )


def card(page: Page, key: str) -> Any:
    return page.locator(f"[data-key={key}]")


def sha(path: Any) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_approve_by_click_and_key_reject_with_a_note_then_run_regenerates_only_that(job, mock, tmp_path):
    job.write(manifest(mock.url, items(4)))
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 4
    first = sha(job.out / "i002.png")
    me = getpass.getuser()

    with review_url(job) as url:
        with chromium(tmp_path, loopback=True) as (page, _seen):
            open_review(page, url)
            expect(page.locator("#cards .card")).to_have_count(4)
            assert re.search(r'<meta name="batchfuse-token" content="[\w-]{20,}">', page.content())
            # approve with a click
            card(page, "i000").locator(".act-approve").click()
            expect(card(page, "i000")).to_have_attribute("data-verdict", "approve")
            # and undo: the verdict stays on record, marked undone
            card(page, "i003").locator(".act-approve").click()
            expect(card(page, "i003")).to_have_attribute("data-verdict", "approve")
            card(page, "i003").locator(".act-clear").click()
            expect(card(page, "i003")).to_have_attribute("data-verdict", "none")
            expect(card(page, "i003").locator(".history .undone")).to_have_count(1)
            # approve with the keyboard: the first card is selected, → moves, a approves
            page.keyboard.press("ArrowRight")
            expect(page.locator(".card.selected")).to_have_attribute("data-key", "i001")
            page.keyboard.press("a")
            expect(card(page, "i001")).to_have_attribute("data-verdict", "approve")
            # reject with a note and an added prompt line: r opens the form, Enter sends it
            page.keyboard.press("ArrowRight")
            page.keyboard.press("r")
            expect(card(page, "i002").locator(".note")).to_be_focused()
            page.keyboard.insert_text("the logo is misspelt")
            card(page, "i002").locator(".prompt-extra").click()
            page.keyboard.insert_text("spell the logo ACME")
            page.keyboard.press("Enter")
            expect(card(page, "i002")).to_have_attribute("data-verdict", "reject")
            expect(card(page, "i002").locator(".history")).to_contain_text("the logo is misspelt")
            expect(page.locator("#verdicts [data-verdict=approved] span")).to_have_text("2")
            expect(page.locator("#verdicts [data-verdict=rejected] span")).to_have_text("1")

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
        second = sha(job.out / "i002.png")
        assert second != first

        (tmp_path / "again").mkdir()
        with chromium(tmp_path / "again", loopback=True) as (page, _seen):
            open_review(page, url)
            expect(card(page, "i002").locator(".versions figure")).to_have_count(1)
            images = all_images_loaded(page)
            i002 = [i for i in images if "/i002." in i["src"]]
            assert len(i002) == 2 and all(i["w"] > 0 for i in i002), images
            assert any(".batchfuse-versions/i002.v1.png" in i["src"] for i in i002)
            # the full image on a click, closed with Esc
            card(page, "i002").locator(".outputs a").first.click()
            viewer = page.locator("#viewer img")
            expect(viewer).to_have_js_property("complete", True)
            assert viewer.evaluate("(i) => i.naturalWidth") > 0
            expect(viewer).to_have_attribute("src", re.compile(r"/file/out/i002\.png\?v="))
            page.keyboard.press("Escape")
            expect(page.locator("#viewer")).to_be_hidden()
            # pick the earlier version with its number key: an approve that names it, and the
            # earlier image is the item's output again, under its stable name
            page.keyboard.press("ArrowRight")
            page.keyboard.press("ArrowRight")
            expect(page.locator(".card.selected")).to_have_attribute("data-key", "i002")
            page.keyboard.press("2")
            expect(card(page, "i002")).to_have_attribute("data-verdict", "approve")
            expect(card(page, "i002").locator("figure.picked")).to_have_count(1)
            assert sha(job.out / "i002.png") == first
            assert sha(job.out / ".batchfuse-versions/i002.v2.png") == second  # the displaced one, kept
            expect(card(page, "i002").locator(".outputs img").first).to_have_attribute("src", re.compile(f"v={first[:16]}"))
            # / goes to the search box
            page.keyboard.press("/")
            expect(page.locator("#q")).to_be_focused()
            expect(card(page, "i002").locator(":scope > .facts")).to_contain_text("revision 1")

    assert job.sql("SELECT verdict, pick FROM reviews r JOIN items i ON i.id = r.item_id WHERE i.key = 'i002'") == [
        ("approve", ".batchfuse-versions/i002.v1.png")
    ]
    assert job.sql("SELECT o.sha256 FROM outputs o JOIN items i ON i.id = o.item_id WHERE i.key = 'i002'") == [(first,)]


def test_the_page_updates_live_while_a_run_regenerates(job, mock, tmp_path):
    job.write(manifest(mock.url, items(3), limits={"concurrency": 1, "timeout_s": 120}))
    assert cli("run", job.manifest).exit_code == 0
    old = dict(job.sql("SELECT i.key, o.sha256 FROM outputs o JOIN items i ON i.id = o.item_id"))

    with review_url(job) as url, chromium(tmp_path, loopback=True) as (page, _seen):
        open_review(page, url)
        for k in ("i000", "i002"):
            card(page, k).locator(".act-reject").click()
            card(page, k).locator(".prompt-extra").click()
            page.keyboard.insert_text("at dusk")
            page.keyboard.press("Enter")
            expect(card(page, k)).to_have_attribute("data-verdict", "reject")
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
            expect(card(page, first).locator(".outputs img").first).to_have_attribute("src", re.compile(f"v={new[:16]}"))
            expect(card(page, first).locator(".versions figure")).to_have_count(1)
            assert card(page, other).locator(".badge").text_content() in ("pending", "running")
            assert run.poll() is None  # the run was still going
            expect(page.locator("body")).to_have_attribute("data-events", re.compile(r"^[1-9][0-9]*$"))
            mock.faults(hold=False)
            run.communicate(timeout=60)
            assert run.returncode == 0, run.err()
        finally:
            mock.faults(hold=False)
            if run.poll() is None:
                run.kill()
                run.communicate(timeout=30)
        latest = dict(job.sql(shas))[other]
        assert latest != old[other]
        expect(card(page, other).locator(".outputs img").first).to_have_attribute("src", re.compile(f"v={latest[:16]}"))
        assert page.url == url  # never reloaded
    assert len(generation_requests(mock)) == 5


@contextmanager
def attacker_site(target: str) -> Iterator[str]:
    """Another local origin whose page posts a form at the review API (the classic CSRF)."""
    page = (
        f'<form method="post" enctype="text/plain" action="{target}">'
        '<input name=\'{"verdict": "approve", "x": "\' value=\'"}\'></form>'
        "<script>document.forms[0].submit()</script>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def test_the_token_refuses_a_request_without_it_and_a_form_from_another_origin(job, mock, tmp_path):
    job.write(manifest(mock.url, items(2)))
    assert cli("run", job.manifest).exit_code == 0

    with review_url(job) as url, chromium(tmp_path, loopback=True) as (page, _seen):
        open_review(page, url)
        # a script on the page itself, without the header or with a wrong one: 403
        statuses = page.evaluate(
            "Promise.all([{}, {'X-Batchfuse-Token': 'wrong'}].map((h) => fetch('/api/items/i000/verdict', "
            "{method: 'POST', headers: {'Content-Type': 'application/json', ...h}, "
            "body: JSON.stringify({verdict: 'approve'})}).then((r) => r.status)))"
        )
        assert statuses == [403, 403]

        # another local origin posts a form at the API: refused
        with attacker_site(f"{url}api/items/i001/verdict") as evil:
            page.goto(evil)
            page.wait_for_url(f"{url}api/**")
            expect(page.locator("body")).to_contain_text("X-Batchfuse-Token")
            origin = evil.rstrip("/")
        # and a script from that origin cannot even ask (no CORS): the preflight is not allowed
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request("OPTIONS", "/api/items/i001/verdict", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-batchfuse-token"})
            response = conn.getresponse()
            response.read()
            assert response.getheader("Access-Control-Allow-Origin") is None
        finally:
            conn.close()
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

    with review_url(job) as url, chromium(tmp_path, loopback=True) as (page, _seen):
        open_review(page, url)
        shown = page.locator("#shown")
        expect(shown).to_have_text(f"showing 1–100 of {n}")
        expect(page.locator("#cards .card")).to_have_count(100)
        page.locator("#verdicts button[data-verdict=rejected]").click()
        expect(shown).to_have_text("showing 1–100 of 200 (10000 in all)")
        page.locator(".pager").first.locator("button").last.click()
        expect(shown).to_have_text("showing 101–200 of 200 (10000 in all)")
        keys = keys_of_cards(page)
        assert keys[0] == "item-05000" and keys[-1] == "item-09950" and len(keys) == 100
        assert page.evaluate("location.hash") == "#verdict=rejected&page=2"
        # search narrows in the database: lamps among the rejected (every 50th is a multiple of 10)
        page.locator("#q").click()
        page.keyboard.insert_text("lamp 99")
        expect(shown).to_have_text("showing 1–2 of 2 (10000 in all)")
        assert keys_of_cards(page) == ["item-09900", "item-09950"]
        page.locator("#verdicts button[data-verdict=approved]").click()
        expect(shown).to_have_text("no items match")
        page.locator("#verdicts button[data-verdict=all]").click()
        expect(shown).to_have_text("showing 1–11 of 11 (10000 in all)")  # 'lamp 99…'
        # the API pages in the database and counts the verdicts
        answer = page.request.get(f"{url}api/items?verdict=none&page=97&state=pending")
        assert answer.status == 200
        data = answer.json()
        assert data["total"] == n - 300 and len(data["items"]) == 100
        assert data["items"][-1]["key"] == "item-09999"
        assert data["verdicts"] == {"approved": 100, "rejected": 200, "unjudged": n - 300}
