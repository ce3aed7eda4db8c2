"""``batchfuse review`` as a process, over real HTTP: only the job's own files are served (no path
trick reaches anything else), every change needs the token, the API answers as documented, the
key is nowhere, thumbnails are made once, and a host that is not loopback needs a token."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import TEST_KEY, cli, cli_process, items, manifest, wait_for


@contextmanager
def review_url(job: Any, *extra: str) -> Iterator[str]:
    """``batchfuse review`` as its own process on a free loopback port; yields its URL."""
    proc = cli_process("review", job.manifest, "--port", "0", *extra)
    try:
        yield wait_for(lambda: re.search(r"http://127\.0\.0\.1:\d+/", proc.out()), "the review URL", proc=proc).group(0)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@contextmanager
def review_server(job: Any, *extra: str) -> Iterator[tuple[str, int]]:
    """:func:`review_url` as the (host, port) :func:`request` takes."""
    with review_url(job, *extra) as url:
        parts = urlsplit(url)
        yield parts.hostname or "", parts.port or 0


def request(server: tuple[str, int], method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """One request with ``path`` sent exactly as written (no client-side normalizing)."""
    conn = http.client.HTTPConnection(*server, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


@pytest.fixture
def judged_job(job, mock):
    job.write(manifest(mock.url, [*items(2), {"id": "ref", "prompt": "with a ref", "images": ["images/logo.png"]}]))
    assert cli("run", job.manifest).exit_code == 0
    (job.root / "secret.png").write_bytes((job.out / "i000.png").read_bytes())
    return job


def token_of(server: tuple[str, int]) -> str:
    status, page, _ = request(server, "GET", "/")
    assert status == 200
    return re.search(rb'<meta name="batchfuse-token" content="([^"]+)">', page).group(1).decode()


def test_only_the_jobs_own_files_are_served(judged_job):
    job = judged_job
    with review_server(job) as server:
        assert request(server, "GET", "/file/out/i000.png")[0] == 200
        status, body, headers = request(server, "GET", "/thumb/out/i000.png?v=1")
        assert status == 200 and headers["Content-Type"] in ("image/webp", "image/jpeg") and body
        assert request(server, "GET", "/file/ref/ref/0")[0] == 200
        refused = [
            "/file/out/../job.yaml", "/file/out/%2e%2e/job.yaml", "/file/out/%2E%2E/%2E%2E/etc/passwd",
            "/file/out//etc/passwd", "/file/out/%2Fetc%2Fpasswd", "/file/out/..%2Fjob.yaml", "/file/out/./i000.png",
            "/file/out/batchfuse.db", "/file/out/../batchfuse.db", "/../job.yaml", "/job.yaml", "/batchfuse.db",
            "/file/out/.batchfuse-tmp/x.png", "/file/ref/ref/1", "/file/ref/nope/0", "/file/ref/i000/0",
            "/thumb/out/../secret.png", "/file/out/secret.png", "/static/../../etc/passwd",
        ]
        assert {p: request(server, "GET", p)[0] for p in refused} == dict.fromkeys(refused, 404)
        # a recorded output replaced by a symlink pointing out of the folder is not followed
        (job.out / "i001.png").unlink()
        (job.out / "i001.png").symlink_to(job.root / "secret.png")
        assert request(server, "GET", "/file/out/i001.png")[0] == 404
        assert request(server, "GET", "/thumb/out/i001.png")[0] == 404


def test_every_change_needs_the_token_and_the_api_answers_as_documented(judged_job):
    job = judged_job
    with review_server(job) as server:
        token = token_of(server)
        approve = {"verdict": "approve"}
        for headers in ({}, {"X-Batchfuse-Token": "wrong"}, {"X-Batchfuse-Token": token[:-1]}):
            assert request(server, "POST", "/api/items/i000/verdict", approve, headers)[0] == 403
        # a form post (no custom header can be set by one) changes nothing either
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert request(server, "POST", "/api/items/i000/verdict", b"verdict=approve", form)[0] == 403
        assert job.sql("SELECT count(*) FROM verdicts") == [(0,)]

        ok = {"X-Batchfuse-Token": token}
        assert request(server, "POST", "/api/items/nope/verdict", approve, ok)[0] == 404
        assert request(server, "POST", "/api/items/i000/verdict", {"verdict": "love"}, ok)[0] == 400
        assert request(server, "POST", "/api/items/i000/verdict", {"verdict": "approve", "x": 1}, ok)[0] == 400
        assert request(server, "POST", "/api/items/i000/verdict", b"not json", ok)[0] == 400
        assert request(server, "POST", "/api/items/i000/verdict", {"verdict": "approve", "pick": "other.png"}, ok)[0] == 400
        assert request(server, "POST", "/api/items/i000/verdict", {"verdict": "clear"}, ok)[0] == 409
        assert job.sql("SELECT count(*) FROM verdicts") == [(0,)]

        status, body, _ = request(
            server, "POST", "/api/items/i001/verdict",
            {"verdict": "reject", "note": "off-brand", "prompt_extra": "use the brand blue", "new_seed": True}, ok,
        )
        assert status == 200
        review = json.loads(body)["review"]
        assert review["verdict"] == "reject" and review["revision"] == 1 and review["seed_salt"]
        assert request(server, "POST", "/api/items/i000/verdict", {"verdict": "approve", "pick": "i000.png"}, ok)[0] == 200

        status, body, _ = request(server, "GET", "/api/items?verdict=rejected")
        data = json.loads(body)
        assert status == 200 and data["total"] == 1 and data["verdicts"] == {"approved": 1, "rejected": 1, "unjudged": 1}
        (item,) = data["items"]
        assert item["key"] == "i001" and item["history"][0]["note"] == "off-brand" and item["revision"] == 1
        assert item["outputs"][0]["href"].startswith("/file/out/i001.png?v=")
        status, body, _ = request(server, "GET", "/api/items?q=REF&state=succeeded")
        assert [i["key"] for i in json.loads(body)["items"]] == ["ref"]
        assert json.loads(body)["items"][0]["refs"][0]["href"] == "/file/ref/ref/0"
        assert request(server, "GET", "/api/items?state=bogus")[0] == 400
        assert request(server, "GET", "/api/items?page=x")[0] == 400

        # nothing the server says carries the key
        for path in ("/", "/api/items", "/api/items?verdict=approved"):
            assert TEST_KEY.encode() not in request(server, "GET", path)[1]

    # the verdicts are data: status and export show them
    status = cli("status", job.manifest)
    assert "review: 1 approved, 1 rejected, 1 not judged" in status.stdout
    assert json.loads(cli("status", job.manifest, "--json").stdout)["verdicts"]["rejected"] == 1
    approved = cli("export", job.manifest, "--format", "jsonl", "--approved")
    assert [(r["key"], r["verdict"], r["pick"]) for r in map(json.loads, approved.stdout.splitlines())] == [
        ("i000", "approve", "i000.png")
    ]
    rejected = cli("export", job.manifest, "--format", "csv", "--rejected").stdout.splitlines()
    assert len(rejected) == 2 and rejected[1].startswith("i001,") and rejected[1].endswith(",reject,")


def test_thumbnails_are_made_once_and_cached_beside_the_job(judged_job):
    job = judged_job
    with review_server(job) as server:
        first = request(server, "GET", "/thumb/out/i000.png")[1]
        (thumb,) = (job.root / "test-job.report_thumbs").iterdir()
        made = thumb.stat().st_mtime_ns
        assert request(server, "GET", "/thumb/out/i000.png")[1] == first
        assert thumb.stat().st_mtime_ns == made


def test_a_host_that_is_not_loopback_needs_a_token_and_is_warned_about(judged_job):
    job = judged_job
    refused = cli("review", job.manifest, "--host", "192.0.2.1")
    assert refused.exit_code == 2 and "--token" in refused.stderr
    # with a token it says so loudly (and here cannot bind that address: one line, exit 2)
    warned = cli("review", job.manifest, "--host", "192.0.2.1", "--token", "t0k3n-for-the-lan", "--port", "0")
    assert "warning: serving on 192.0.2.1" in warned.stderr
    assert warned.exit_code == 2 and "cannot listen on 192.0.2.1" in warned.stderr


def test_reviewing_a_job_never_run_is_one_line(job, mock):
    job.write(manifest(mock.url, items(1)))
    result = cli("review", job.manifest)
    assert result.exit_code == 2 and "has not been run yet" in result.stderr
    assert not job.db.exists()


def test_the_static_report_shows_the_verdicts_too(judged_job):
    from batchfuse.review.reading import reading_job
    from batchfuse.store.verdicts import record_verdict
    from tests.conftest import page_items

    job = judged_job
    with reading_job(job.manifest, None, writable=True) as (_, store, j):
        record_verdict(store, j, "i000", "approve", reviewer="t")
        record_verdict(store, j, "i001", "reject", reviewer="t")
    assert cli("report", job.manifest).exit_code == 0
    shown = page_items((job.root / "test-job.report.html").read_text(encoding="utf-8"))
    assert {k: v["verdict"] for k, v in shown.items()} == {"i000": "approve", "i001": "reject", "ref": None}
