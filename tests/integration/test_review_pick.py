"""Picking an earlier version through the review's JSON API (``batchfuse review`` as a process):
the picked image becomes the item's output under its stable name, the displaced one is kept as a
version and recorded, the outputs row follows, ``export`` and ``report`` show the picked image,
and undo puts the attempt's own image back — nothing is ever destroyed."""

from __future__ import annotations

import csv
import hashlib
import io
import json

from PIL import Image

from tests.conftest import cli, items, manifest, page_items
from tests.integration.test_review_server import request, review_server, token_of


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(job, table: str) -> list[tuple]:
    cols = "path, sha256, width, height, bytes" if table == "outputs" else "name, path, sha256, width, height, bytes"
    return job.sql(f"SELECT {cols} FROM {table} t JOIN items i ON i.id = t.item_id WHERE i.key = 'i001' ORDER BY t.id")


def test_pick_an_earlier_version_makes_it_the_output_keeps_the_displaced_one_and_undo_restores(job, mock):
    job.write(manifest(mock.url, items(2)))
    assert cli("run", job.manifest).exit_code == 0
    first = sha(job.out / "i001.png")
    assert cli("review", "--help").exit_code == 0
    with review_server(job) as server:
        token = {"X-Batchfuse-Token": token_of(server)}
        assert request(server, "POST", "/api/items/i001/verdict", {"verdict": "reject", "note": "again"}, token)[0] == 200
    assert cli("run", job.manifest).exit_code == 0
    second = sha(job.out / "i001.png")
    assert second != first
    assert rows(job, "output_versions") == [("i001.png", ".batchfuse-versions/i001.v1.png", first, 64, 64,
                                             (job.out / ".batchfuse-versions/i001.v1.png").stat().st_size)]

    with review_server(job) as server:
        token = {"X-Batchfuse-Token": token_of(server)}
        # a pick of a path the item does not have, or of another item's, is refused and moves nothing
        for bad in ("nope.png", ".batchfuse-versions/i000.v1.png", "i000.png"):
            status, _, _ = request(server, "POST", "/api/items/i001/verdict", {"verdict": "approve", "pick": bad}, token)
            assert status == 400
        assert sha(job.out / "i001.png") == second

        status, body, _ = request(server, "POST", "/api/items/i001/verdict",
                                  {"verdict": "approve", "pick": ".batchfuse-versions/i001.v1.png"}, token)
        assert status == 200, body
        # the stable name holds the picked image; the displaced one is kept, on disk and in the store
        assert sha(job.out / "i001.png") == first
        assert sha(job.out / ".batchfuse-versions/i001.v2.png") == second
        size = {n: (job.out / n).stat().st_size for n in ("i001.png", ".batchfuse-versions/i001.v2.png")}
        assert rows(job, "outputs") == [("i001.png", first, 64, 64, size["i001.png"])]
        assert [r[:3] for r in rows(job, "output_versions")] == [
            ("i001.png", ".batchfuse-versions/i001.v1.png", first),
            ("i001.png", ".batchfuse-versions/i001.v2.png", second),
        ]
        with Image.open(job.out / "i001.png") as im:
            assert im.size == (64, 64)
        # the API shows the item's output as the picked image
        status, body, _ = request(server, "GET", "/api/items?q=i001")
        (item,) = [i for i in json.loads(body)["items"] if i["key"] == "i001"]
        assert item["outputs"][0]["sha256"] == first and item["pick"] == ".batchfuse-versions/i001.v1.png"

        # export and report show the picked image
        export = cli("export", job.manifest, "--approved", "--format", "csv")
        assert export.exit_code == 0, export.stderr
        (line,) = list(csv.DictReader(io.StringIO(export.stdout)))
        assert (line["key"], line["outputs"], line["sha256"]) == ("i001", "i001.png", first), line
        assert cli("report", job.manifest).exit_code == 0
        shown = page_items((job.root / "test-job.report.html").read_text(encoding="utf-8"))["i001"]
        assert [o["name"] for o in shown["outputs"]] == ["i001.png"] and first in shown["outputs"][0]["thumb"]

        # undo: the attempt's own image comes back under the name; both stay kept
        status, body, _ = request(server, "POST", "/api/items/i001/verdict", {"verdict": "clear"}, token)
        assert status == 200, body
        assert sha(job.out / "i001.png") == second
        assert rows(job, "outputs")[0][:2] == ("i001.png", second)
        assert sha(job.out / ".batchfuse-versions/i001.v1.png") == first
        assert sha(job.out / ".batchfuse-versions/i001.v2.png") == second
        assert len(rows(job, "output_versions")) == 2

    # a run after all this sends nothing (the item is done under its spec) and moves nothing
    before = len(mock.requests())
    assert cli("run", job.manifest).exit_code == 0
    assert len(mock.requests()) == before and sha(job.out / "i001.png") == second


def test_pick_again_after_a_pick_and_a_reject_after_a_pick_lose_nothing(job, mock):
    job.write(manifest(mock.url, items(1)))
    assert cli("run", job.manifest).exit_code == 0
    made = [sha(job.out / "i000.png")]
    with review_server(job) as server:
        token = {"X-Batchfuse-Token": token_of(server)}
        assert request(server, "POST", "/api/items/i000/verdict", {"verdict": "reject"}, token)[0] == 200
    assert cli("run", job.manifest).exit_code == 0
    made.append(sha(job.out / "i000.png"))
    with review_server(job) as server:
        token = {"X-Batchfuse-Token": token_of(server)}
        pick = {"verdict": "approve", "pick": ".batchfuse-versions/i000.v1.png"}
        assert request(server, "POST", "/api/items/i000/verdict", pick, token)[0] == 200
        assert request(server, "POST", "/api/items/i000/verdict", pick, token)[0] == 200  # twice: no change
        assert sha(job.out / "i000.png") == made[0]
        # picking the current output's name again puts the attempt's own image back
        status, body, _ = request(server, "POST", "/api/items/i000/verdict", {"verdict": "approve", "pick": "i000.png"}, token)
        assert status == 200, body
        assert sha(job.out / "i000.png") == made[1]
        assert request(server, "POST", "/api/items/i000/verdict", pick, token)[0] == 200
        assert request(server, "POST", "/api/items/i000/verdict", {"verdict": "reject"}, token)[0] == 200
    assert cli("run", job.manifest).exit_code == 0
    made.append(sha(job.out / "i000.png"))
    assert len(set(made)) == 3
    kept = {sha(p) for p in (job.out / ".batchfuse-versions").iterdir()}
    assert kept == set(made[:2])  # every earlier image kept, the newest under the stable name
    assert len(job.sql("SELECT 1 FROM output_versions")) == 2
