"""``batchfuse report`` and ``batchfuse export`` over a real job: run against the mock through the
CLI first, then review it and compare everything with what the database says."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchfuse.review.export import write_export
from batchfuse.review.report import TEXT_LIMIT, THUMB_EXT, THUMB_SIDE, write_report
from tests.conftest import (
    TEST_KEY,
    URL_REF,
    XSS_PROMPT,
    JobDir,
    cli,
    db_counts,
    manifest,
    page_items,
    run_review_job,
)


def page_counts(html: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r'<li data-count="(\w+)"><b>(\d+)</b>', html)}


def assert_no_key(*paths: Path) -> None:
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            assert TEST_KEY.encode() not in file.read_bytes(), file


# ---------------------------------------------------------------------------- report


def test_report_shows_what_the_store_says_with_small_thumbnails(job, mock):
    run_review_job(job, mock)
    result = cli("report", job.manifest)
    assert result.exit_code == 0, result.stderr
    report_file, thumbs = job.root / "test-job.report.html", job.root / "test-job.report_thumbs"
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"report: {report_file} — 5 items: 2 succeeded, 1 failed, 2 pending, 0 running")
    html = report_file.read_text(encoding="utf-8")

    # the counts at the top are the database's
    assert page_counts(html) == db_counts(job) == {
        "total": 5, "succeeded": 2, "failed": 1, "pending": 2, "running": 0,
    }
    items = page_items(html)
    assert list(items) == ["fused", "poster", "unsafe", "later", "remote"]
    assert {k: v["state"] for k, v in items.items()} == job.state_of()
    assert {k: v["attempts"] for k, v in items.items()} == dict(job.sql("SELECT key, attempts FROM items"))

    # every output has a thumbnail, named by its sha256, that Pillow opens and that is small
    outputs = job.sql("SELECT items.key, outputs.path, outputs.sha256 FROM outputs JOIN items ON items.id = item_id")
    assert sorted(k for k, _, _ in outputs) == ["fused", "poster"]
    for key, path, sha in outputs:
        (entry,) = items[key]["outputs"]
        assert entry["name"] == path and entry["href"] == f"out/{path}"
        assert entry["thumb"] == f"test-job.report_thumbs/{sha}-{THUMB_SIDE}{THUMB_EXT}"
        file = job.root / entry["thumb"]
        with Image.open(file) as im:
            im.load()
            assert max(im.size) <= THUMB_SIDE
        assert file.stat().st_size < 32 * 1024
    assert sum(1 for _ in thumbs.iterdir()) == 2 + 3  # two outputs, three distinct reference images

    # reference images: local ones as thumbnails linked to the file, URLs as links only
    assert [r["name"] for r in items["fused"]["refs"]] == ["scene.png", "calculator.jpg"]
    assert all(r["thumb"] and (job.root / r["thumb"]).is_file() for r in items["fused"]["refs"])
    assert items["fused"]["refs"][0]["href"] == "images/scene.png"
    assert items["remote"]["refs"] == [{"url": URL_REF, "name": URL_REF}]
    assert items["later"]["outputs"] == [] and items["later"]["refs"][0]["thumb"]

    # the failed item's error is in the page data
    assert items["unsafe"]["error_class"] == "rejected"
    assert "IMAGE_SAFETY" in items["unsafe"]["error"]
    assert items["unsafe"]["outputs"] == []

    # the hostile prompt survives intact in the data and nowhere becomes markup
    assert items["fused"]["prompt"] == XSS_PROMPT
    assert html.lower().count("<script") == 2 and html.lower().count("</script>") == 2
    assert "</script><script>" not in html and "<img src=x" not in html
    assert "\\u003c/script\\u003e\\u003cscript\\u003ewindow.__pwned" in html
    assert_no_key(report_file, thumbs)


def test_report_reuses_thumbnails_and_remakes_only_changed_ones(job, mock):
    run_review_job(job, mock)
    first = cli("report", job.manifest)
    assert "thumbnails: 5 made, 0 reused" in first.stdout
    thumbs = job.root / "test-job.report_thumbs"
    before = {p.name: p.stat().st_mtime_ns for p in thumbs.iterdir()}
    (job.root / "test-job.report_thumbs" / ("0" * 64 + f"-{THUMB_SIDE}{THUMB_EXT}")).write_bytes(b"stale")  # no longer used
    (thumbs / "notes.txt").write_text("mine")  # not ours: left alone

    again = cli("report", job.manifest)
    assert "thumbnails: 0 made, 5 reused" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in thumbs.iterdir() if p.name != "notes.txt"} == before

    # an output replaced on disk (newer than its thumbnail) gets a new thumbnail; nothing else does
    poster = job.out / "poster.png"
    later = time.time() + 10
    os.utime(poster, (later, later))
    third = cli("report", job.manifest)
    assert "thumbnails: 1 made, 4 reused" in third.stdout
    ((sha,),) = job.sql("SELECT sha256 FROM outputs WHERE path = 'poster.png'")
    name = f"{sha}-{THUMB_SIDE}{THUMB_EXT}"
    assert (thumbs / name).stat().st_mtime_ns != before[name]
    assert (thumbs / "notes.txt").exists()


def test_report_to_another_path_and_with_a_missing_output(job, mock):
    run_review_job(job, mock)
    (job.out / "poster.png").unlink()
    target = job.root / "review" / "morning.html"
    target.parent.mkdir()
    result = cli("report", job.manifest, "-o", target)
    assert result.exit_code == 0, result.stderr
    assert "1 missing" in result.stdout
    assert (job.root / "review" / "morning_thumbs").is_dir() and not (job.root / "test-job.report.html").exists()
    items = page_items(target.read_text(encoding="utf-8"))
    (poster,) = items["poster"]["outputs"]
    assert poster["thumb"] is None and poster["note"] == "file missing"
    assert poster["href"] == "../out/poster.png"
    assert items["fused"]["refs"][0]["href"] == "../images/scene.png"


def test_report_finds_reference_images_whatever_folder_the_run_started_in(job, mock, monkeypatch):
    """The plan records reference paths as absolute, whatever the run's working directory."""
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "images": ["images/logo.png"]}]))
    monkeypatch.chdir(job.root.parent)
    assert cli("run", Path(job.root.name) / "job.yaml").exit_code == 0
    (spec,) = job.sql("SELECT spec FROM items")
    assert json.loads(spec[0])["images"][0]["src"] == str(job.root / "images" / "logo.png")
    monkeypatch.chdir(job.out)  # review from somewhere else entirely
    assert cli("report", job.manifest).exit_code == 0
    (ref,) = page_items((job.root / "test-job.report.html").read_text(encoding="utf-8"))["a"]["refs"]
    assert ref["thumb"] and ref["href"] == "images/logo.png"


def test_report_of_odd_rows_never_fails_and_never_emits_markup(tmp_path):
    """Rows no run should produce, straight into the writer: an undecodable output, a
    reference image gone from disk, a non-http URL, a prompt far too long for a card."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "broken.png").write_bytes(b"not a png")
    long_prompt = "<b>x</b>" * 2000
    rows = [
        {
            "key": "<odd & key>", "state": "succeeded", "attempts": 1, "tokens": 0, "error_class": None,
            "last_error": None,
            "spec": {"prompt": long_prompt, "images": [
                {"src": str(tmp_path / "gone.png"), "digest": "f" * 64},
                {"src": "javascript://%0Aalert(1)", "digest": "url:javascript://%0Aalert(1)"},
            ]},
            "outputs": [{"path": "broken.png", "sha256": "e" * 64, "width": 1, "height": 1}],
        }
    ]
    counts = {"succeeded": 1, "failed": 0, "pending": 0, "running": 0, "total": 1}
    result = write_report(rows, counts=counts, job_name="<job>", output_dir=out, manifest_dir=tmp_path,
                          dest=tmp_path / "report.html", workers=1)
    assert result.thumbnails == {"unreadable": 1, "missing": 1}
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<b>x</b>" not in html and "<odd" not in html and "<title>&lt;job&gt; — batchfuse report</title>" in html
    (item,) = page_items(html).values()
    assert item["key"] == "<odd & key>"
    assert item["outputs"][0]["thumb"] is None and item["outputs"][0]["note"] == "cannot read image"
    assert item["refs"][0] == {"thumb": None, "note": "file missing", "href": "gone.png", "name": "gone.png"}
    assert item["refs"][1] == {"url": None, "name": "javascript://%0Aalert(1)"}  # text, never a link
    assert item["prompt"].startswith(long_prompt[:TEXT_LIMIT]) and len(item["prompt"]) < TEXT_LIMIT + 50
    assert list((tmp_path / "report_thumbs").iterdir()) == []


# ---------------------------------------------------------------------------- export


def expected_rows(job: JobDir) -> dict[str, dict[str, Any]]:
    """What the database says about each item, in the export's terms (plain queries, no
    parameters: they run on whichever backend the job fixture uses)."""
    outputs: dict[str, list[tuple[str, str]]] = {}
    for key, path, sha in job.sql(
        "SELECT items.key, outputs.path, outputs.sha256 FROM outputs JOIN items ON items.id = outputs.item_id "
        "ORDER BY items.key, outputs.idx"
    ):
        outputs.setdefault(key, []).append((path, sha))
    tokens = dict(
        job.sql(
            "SELECT items.key, coalesce(sum(attempts.total_tokens), 0) FROM attempts "
            "JOIN items ON items.id = attempts.item_id GROUP BY items.key"
        )
    )
    rows: dict[str, dict[str, Any]] = {}
    for key, state, attempts, error_class, last_error in job.sql(
        "SELECT key, state, attempts, error_class, last_error FROM items ORDER BY ordinal"
    ):
        outs = outputs.get(key, [])
        rows[key] = {
            "key": key, "state": state, "attempts": attempts, "output_dir": str(job.out),
            "outputs": [p for p, _ in outs], "urls": [(job.out / p).absolute().as_uri() for p, _ in outs],
            "sha256": [s for _, s in outs],
            "error_class": error_class, "last_error": last_error, "tokens": int(tokens.get(key, 0)),
            "verdict": None, "pick": None,  # not judged in the review
        }
    return rows


def test_export_csv_to_standard_output(job, mock):
    run_review_job(job, mock)
    result = cli("export", job.manifest, "--format", "csv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["key", "state", "attempts", "output_dir", "outputs", "urls", "sha256", "error_class",
                             "last_error", "tokens", "verdict", "pick"]
    expected = expected_rows(job)
    assert [r["key"] for r in rows] == list(expected) == ["fused", "poster", "unsafe", "later", "remote"]
    for row in rows:
        want = expected[row["key"]]
        assert row["state"] == want["state"] and int(row["attempts"]) == want["attempts"]
        assert row["output_dir"] == str(job.out)
        assert row["outputs"] == ";".join(want["outputs"]) and row["sha256"] == ";".join(want["sha256"])
        assert row["urls"] == ";".join(want["urls"])
        assert row["error_class"] == (want["error_class"] or "")
        assert row["last_error"] == (want["last_error"] or "")
        assert int(row["tokens"]) == want["tokens"]
    assert rows[0]["outputs"] == "fused.png" and int(rows[0]["tokens"]) > 0
    assert "IMAGE_SAFETY" in rows[2]["last_error"] and rows[2]["outputs"] == ""
    assert TEST_KEY not in result.stdout


def test_export_jsonl_to_a_file(job, mock):
    run_review_job(job, mock)
    target = job.root / "items.jsonl"
    result = cli("export", job.manifest, "--format", "jsonl", "-o", target)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    lines = target.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert records == list(expected_rows(job).values())
    assert records[0]["outputs"] == ["fused.png"] and len(records[0]["sha256"][0]) == 64
    assert records[3]["outputs"] == [] and records[3]["last_error"] is None
    assert not list(job.root.glob(".items.jsonl.*"))  # no temp file left behind
    assert_no_key(target)
    # '-' is standard output
    dash = cli("export", job.manifest, "--format", "jsonl", "-o", "-")
    assert [json.loads(line) for line in dash.stdout.splitlines()] == records


def test_export_joins_several_outputs_per_item(job, mock, monkeypatch):
    monkeypatch.setenv("RELAY_KEY", "relay-test-key-123")
    data = manifest(mock.url, [{"id": "pair", "prompt": "two of them"}], network={"allow_private": True})
    data["provider"] = {"kind": "openai_images", "base_url": mock.url, "model": "gemini-3-pro-image-preview-2k",
                        "api_key_env": "RELAY_KEY"}
    data["defaults"] = {"size": "1:1", "response_format": "b64_json", "n": 2}
    job.write(data)
    assert cli("run", job.manifest).exit_code == 0
    (row,) = csv.DictReader(io.StringIO(cli("export", job.manifest, "--format", "csv").stdout))
    assert row["outputs"] == "pair-1.png;pair-2.png"
    assert row["sha256"].count(";") == 1
    (record,) = map(json.loads, cli("export", job.manifest, "--format", "jsonl").stdout.splitlines())
    assert record["outputs"] == ["pair-1.png", "pair-2.png"]
    html_result = cli("report", job.manifest)
    assert "2 made" in html_result.stdout
    assert len(page_items((job.root / "test-job.report.html").read_text(encoding="utf-8"))["pair"]["outputs"]) == 2


def test_export_streams_rows_as_it_reads_them():
    """Each row is written before the next one is read: a 100k-item job never sits in memory."""
    pulled: list[int] = []
    pulled_at_write: list[int] = []

    def rows():
        for i in range(3):
            pulled.append(i)
            yield {"key": f"k{i}", "state": "pending", "attempts": 0, "outputs": [], "tokens": 0}

    class Out(io.StringIO):
        def write(self, s: str) -> int:
            pulled_at_write.append(len(pulled))
            return super().write(s)

    assert write_export(rows(), "jsonl", "/x", Out()) == 3
    assert pulled_at_write == [1, 2, 3]


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("command", [["report"], ["export", "--format", "csv"]])
def test_a_job_never_run_is_bad_input(job, mock, command):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    result = cli(command[0], job.manifest, *command[1:])
    assert result.exit_code == 2
    not_run = f"error: {job.manifest}: job 'test-job' has not been run yet"
    if os.environ.get("BATCHFUSE_DB"):  # the job fixture's PostgreSQL backend
        assert result.stderr == f"{not_run} (no such job in the database)\n"
    else:  # no empty SQLite file is created just to say so
        assert result.stderr == f"{not_run} (no database at {job.db})\n"
        assert not job.db.exists()
    assert not (job.root / "test-job.report.html").exists()

    # a database that holds other jobs but not this one
    other = manifest(mock.url, [{"id": "a", "prompt": "p"}], job="other-job")
    (job.root / "other.yaml").write_text(json.dumps(other), encoding="utf-8")
    assert cli("run", job.root / "other.yaml").exit_code == 0
    result = cli(command[0], job.manifest, *command[1:])
    assert result.exit_code == 2
    assert "job 'test-job' has not been run yet (no such job in the database)" in result.stderr


def test_a_missing_manifest_or_output_folder_is_bad_input(job, mock):
    assert cli("report", job.root / "nope.yaml").exit_code == 2
    run_review_job(job, mock)
    result = cli("export", job.manifest, "--format", "csv", "-o", job.root / "no" / "such" / "x.csv")
    assert result.exit_code == 2 and "does not exist" in result.stderr
