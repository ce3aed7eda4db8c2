"""The report in a real browser: headless Chromium (Debian's, driven by Playwright) opens it from
disk (file://) like a user — thumbnails really load, the counts shown are the database's, the
failed filter is one click, and 10,000 items page through.  The browser gets no network
(:mod:`tests.acceptance.browser`): only file:// may load, and the tests check that nothing else was
asked for.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from click.testing import CliRunner
from PIL import Image
from playwright.sync_api import expect

from batchfuse.cli import Group
from batchfuse.review.cli_review import export, report
from batchfuse.review.report import write_report
from tests.acceptance.browser import all_images_loaded, chromium, keys_of_cards, needs_chromium, rendered
from tests.conftest import URL_REF, XSS_PROMPT, db_counts, page_items, run_review_job

pytestmark = needs_chromium


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

    with chromium(tmp_path) as (page, seen):
        page.goto((job.root / "test-job.report.html").as_uri())
        rendered(page)

        # every thumbnail really loads: no broken image
        images = all_images_loaded(page)
        assert len(images) == expected["images"]
        assert [i for i in images if not i["w"] > 0] == []
        assert all(re.search(r"/test-job\.report_thumbs/[0-9a-f]{64}-256\.(webp|jpg)$", i["src"]) for i in images)

        # the counts shown are the database's, at the top and on the filter buttons
        shown = page.locator("#counts [data-count]").evaluate_all(
            "(lis) => Object.fromEntries(lis.map((li) => [li.dataset.count, Number(li.querySelector('b').textContent)]))"
        )
        assert shown == expected["counts"]
        on_buttons = page.locator("#filters button").evaluate_all(
            "(bs) => Object.fromEntries(bs.map((b) => [b.dataset.state, Number(b.querySelector('span').textContent)]))"
        )
        assert on_buttons == {"all": 5, **{s: expected["counts"][s] for s in ("failed", "succeeded", "pending", "running")}}
        expect(page.locator("#cards .card")).to_have_count(5)

        # the hostile prompt is text, not markup
        assert page.evaluate("typeof window.__pwned") == "undefined"
        expect(page.locator("[data-key=fused] .prompt")).to_have_text(XSS_PROMPT)
        # a URL reference is a link, never fetched
        expect(page.locator("[data-key=remote] .refs a")).to_have_attribute("href", URL_REF)

        # one click on "failed" shows the failed items only, with their errors
        page.locator('#filters button[data-state="failed"]').click()
        expect(page.locator("#filters button[data-state=failed]")).to_have_attribute("aria-pressed", "true")
        cards = page.locator("#cards .card").evaluate_all("(cs) => cs.map((c) => [c.dataset.key, c.dataset.state])")
        assert sorted(k for k, _ in cards) == expected["failed"]
        assert {s for _, s in cards} == {"failed"}
        expect(page.locator("#cards .card .error").first).to_contain_text("IMAGE_SAFETY")
        assert page.evaluate("location.hash") == "#state=failed"

        # and the search box narrows the view as one types
        page.locator('#filters button[data-state="all"]').click()
        page.locator("#q").click()
        page.keyboard.insert_text("poster")
        expect(page.locator("#cards .card")).to_have_count(1)
        assert keys_of_cards(page) == ["poster"]
        seen.assert_quiet()


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

    with chromium(tmp_path) as (page, seen):
        page.goto(dest.as_uri())
        rendered(page)
        expect(page.locator("#cards .card")).to_have_count(100)
        expect(page.locator("#shown")).to_have_text("showing 1–100 of 10000")

        page.locator("#filters button[data-state=failed]").click()
        page.locator(".pager").first.locator("button").last.click()
        expect(page.locator("#shown")).to_have_text("showing 101–200 of 1000 (10000 in all)")
        states = page.locator("#cards .card").evaluate_all("(cs) => cs.map((c) => c.dataset.state)")
        assert len(states) == 100 and set(states) == {"failed"}
        page.locator('#filters button[data-state="succeeded"]').click()
        expect(page.locator("#cards .card").first).to_have_attribute("data-state", "succeeded")
        images = all_images_loaded(page)
        assert len(images) == 100 and all(i["w"] > 0 for i in images)
        seen.assert_quiet()
