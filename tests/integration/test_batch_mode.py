"""Batch mode through the CLI against the mock's Batch and Files APIs over loopback: results
matched by key under shuffled lines, per-line errors, ended batches, unknown and repeated keys,
reference images uploaded once, budgets, status and cancel."""

from __future__ import annotations

import json
import random
from typing import Any

from PIL import Image

from tests.conftest import TEST_KEY, cli, manifest
from tests.conftest import items as numbered
from tests.test_mock_server import http

KEY = {"x-goog-api-key": TEST_KEY}
RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9"]


def batch_manifest(url: str, items: list[dict[str, Any]], **batch: Any) -> dict[str, Any]:
    data = manifest(url, items, batch={"poll_s": 0.05, **batch})
    data["provider"]["mode"] = "batch"
    return data


def creates(mock: Any) -> list[dict[str, Any]]:
    return [r for r in mock.requests() if r["path"].endswith(":batchGenerateContent")]


def batch_rows(job: Any) -> list[tuple]:
    return job.sql("SELECT display_name, remote_name, state, request_count FROM batches ORDER BY id")


def test_items_of_several_ratios_come_back_each_to_its_own_item(job, mock):
    items = [{**it, "aspect_ratio": RATIOS[i % len(RATIOS)]} for i, it in enumerate(numbered(18))]
    job.write(batch_manifest(mock.url, items, max_requests=7))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert job.state_of() == {it["id"]: "succeeded" for it in items}
    assert len(creates(mock)) == 3  # 18 items, at most 7 a batch
    assert [r[2] for r in batch_rows(job)] == ["applied"] * 3
    assert not generation_requests_online(mock)
    for it in items:
        w, h = Image.open(job.out / f"{it['id']}.png").size
        rw, rh = map(int, it["aspect_ratio"].split(":"))
        assert abs(w / h - rw / rh) < 0.05, (it, w, h)  # its own item's ratio, not a neighbour's
    attempts = job.sql("SELECT outcome, count(*) FROM attempts GROUP BY outcome")
    assert attempts == [("succeeded", 18)]
    members = job.sql("SELECT line_key, outcome FROM batch_items ORDER BY line_key")
    assert members == [(f"{it['id']}#1", "succeeded") for it in sorted(items, key=lambda x: x["id"])]
    assert "batch: 3 batches created" in result.stderr


def left_pending(job: Any, mock: Any, items: list[dict[str, Any]]) -> str:
    """A run that submits ``items`` in one batch the mock leaves pending and does not wait
    (exit 3); the batch's remote name."""
    mock.configure(batch_pending_s=None)
    job.write(batch_manifest(mock.url, items, wait=False))
    assert cli("run", job.manifest).exit_code == 3
    (remote,) = [r[1] for r in batch_rows(job)]
    return remote


def generation_requests_online(mock: Any) -> list[dict[str, Any]]:
    return [r for r in mock.requests() if r["path"].endswith(":generateContent")]


def force(mock: Any, remote: str, state: str, **extra: Any) -> dict[str, Any]:
    reply = http("POST", f"{mock.url}/_mock/{remote}/state", body={"state": state, **extra}, timeout=60)
    assert reply.status == 200, reply.body
    return reply.json()


def test_line_errors_follow_the_online_rules_and_a_transient_one_goes_into_the_next_batch(job, mock):
    items = [
        {"id": "ok", "prompt": "a chair"},
        {"id": "bad", "prompt": "[[mock:400]] a lamp"},
        {"id": "unsafe", "prompt": "[[mock:safety]] a door"},
        {"id": "busy-once", "prompt": "[[mock:503*1]] a window"},
    ]
    job.write(batch_manifest(mock.url, items))
    result = cli("run", job.manifest)
    assert result.exit_code == 1, result.stderr  # some items failed
    assert job.state_of() == {"ok": "succeeded", "bad": "failed", "unsafe": "failed", "busy-once": "succeeded"}
    assert len(creates(mock)) == 2  # the 503 line went into a second batch, alone
    rows = dict(job.sql("SELECT line_key, outcome FROM batch_items"))
    assert rows == {"ok#1": "succeeded", "bad#1": "rejected", "unsafe#1": "rejected",
                    "busy-once#1": "transient", "busy-once#2": "succeeded"}
    errors = dict(job.sql("SELECT items.key, attempts.error_message FROM attempts JOIN items ON items.id = item_id "
                          "WHERE attempts.outcome = 'rejected'"))
    assert "IMAGE_SAFETY" in errors["unsafe"] and "HTTP 400" in errors["bad"]


def test_unknown_and_repeated_keys_are_counted_never_applied(job, mock):
    mock.configure(batch_pending_s=None)
    job.write(batch_manifest(mock.url, numbered(4), wait=False))
    first = cli("run", job.manifest)
    assert first.exit_code == 3, first.stderr
    assert "4 items still out in 1 batch" in first.stderr
    (remote,) = [r[1] for r in batch_rows(job)]
    stranger = {"key": "i999#1", "response": {"candidates": []}}
    force(mock, remote, "SUCCEEDED", extra_lines=[stranger, {"no": "key"}], repeat_keys=["i001#1"])
    second = cli("run", job.manifest)
    assert second.exit_code == 0, second.stderr
    assert set(job.state_of().values()) == {"succeeded"}
    assert job.sql("SELECT unknown_lines, duplicate_lines, state FROM batches") == [(2, 1, "applied")]
    assert job.scalar("SELECT count(*) FROM attempts") == 4  # the repeated line made no second attempt
    assert "2 result lines with unknown keys and 1 repeated ones not applied" in second.stderr
    assert len(creates(mock)) == 1


def test_an_expired_batch_hands_its_items_back_and_the_next_run_completes_them(job, mock):
    remote = left_pending(job, mock, numbered(5))
    status = json.loads(cli("status", job.manifest, "--json").stdout)
    assert status["items"]["in_batch"] == 5 and status["batches"][0]["state"] == "pending"
    assert sorted(status["batches"][0]["items"]) == [f"i{i:03d}" for i in range(5)]
    force(mock, remote, "EXPIRED")
    mock.configure(batch_pending_s=0.0)
    job.write(batch_manifest(mock.url, numbered(5)))  # this time it waits for its batch
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0, rerun.stderr
    assert set(job.state_of().values()) == {"succeeded"}
    assert [r[2] for r in batch_rows(job)] == ["expired", "applied"]
    assert len(creates(mock)) == 2
    returned = job.sql("SELECT outcome, count(*) FROM batch_items GROUP BY outcome ORDER BY outcome")
    assert returned == [("returned", 5), ("succeeded", 5)]
    text = cli("status", job.manifest).stdout
    assert "expired" in text and "ended EXPIRED" in text


def test_status_lists_batches_and_cancel_hands_the_items_back(job, mock):
    mock.configure(batch_pending_s=None)
    job.write(batch_manifest(mock.url, numbered(3), wait=False, stale_after_h=1e-6))  # stale at once
    assert cli("run", job.manifest).exit_code == 3
    text = cli("status", job.manifest).stdout
    assert "in batch   3" in text and "batchfuse-test-job-" in text and " pending: 3 requests" in text
    assert "STALE" in text and "items: i000, i001, i002" in text
    assert json.loads(cli("status", job.manifest, "--json").stdout)["batches"][0]["stale"] is True
    again = cli("run", job.manifest)  # nothing new to submit; the stale batch is said in the log
    assert again.exit_code == 3 and "has been pending for" in again.stderr, again.stderr
    assert len(creates(mock)) == 1
    cancelled = cli("batches", "cancel", job.manifest)
    assert cancelled.exit_code == 0, cancelled.stderr
    assert "cancelled 1 batch; 3 items pending again" in cancelled.stdout
    assert set(job.state_of().values()) == {"pending"}
    assert [r[2] for r in batch_rows(job)] == ["cancelled"]
    assert [r for r in mock.requests() if r["path"].endswith(":cancel")]


def test_a_shared_reference_image_is_uploaded_once_and_requests_refer_to_it(job, mock):
    noise = Image.frombytes("RGB", (300, 300), random.Random(1).randbytes(300 * 300 * 3))
    noise.save(job.root / "images" / "photo.png")  # about 270 KB: one inline copy would show
    items = [{**it, "images": ["images/photo.png"]} for it in numbered(12)]
    job.write(batch_manifest(mock.url, items, max_requests=5))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert uploaded(mock) == {"image/png": 1, "application/jsonl": 3}  # one image, three input files
    assert job.scalar("SELECT count(*) FROM uploaded_files") == 1
    assert "1 reference image uploaded" in result.stderr
    lines = [r for r in mock.requests() if r["api"] == "gemini-batch"]
    assert len(lines) == 12 and all(r["n_images"] == 1 for r in lines)  # each line has the image, by URI
    assert input_bytes(mock) < 12 * 1000 < (job.root / "images" / "photo.png").stat().st_size  # no inline copy
    rerun_items = [{**it, "prompt": it["prompt"] + " again"} for it in items]
    job.write(batch_manifest(mock.url, rerun_items, max_requests=20))
    assert cli("run", job.manifest).exit_code == 0
    assert uploaded(mock) == {"image/png": 1, "application/jsonl": 4}  # the image is still alive at the API


def uploaded(mock: Any) -> dict[str, int]:
    """Files at the mock's Files API by type (results files excluded)."""
    files = http("GET", f"{mock.url}/v1beta/files?pageSize=100", headers=KEY).json().get("files", [])
    counts: dict[str, int] = {}
    for f in files:
        if f.get("source") != "GENERATED":
            counts[f["mimeType"]] = counts.get(f["mimeType"], 0) + 1
    return counts


def input_bytes(mock: Any) -> int:
    files = http("GET", f"{mock.url}/v1beta/files?pageSize=100", headers=KEY).json().get("files", [])
    return sum(int(f["sizeBytes"]) for f in files if f["mimeType"] == "application/jsonl" and f["source"] != "GENERATED")


def test_items_out_in_batches_count_against_max_images(job, mock):
    mock.configure(batch_pending_s=None)
    data = batch_manifest(mock.url, numbered(12), wait=False)
    data["limits"]["max_images"] = 5
    job.write(data)
    assert cli("run", job.manifest).exit_code == 3
    assert job.scalar("SELECT sum(request_count) FROM batches") == 5
    assert cli("run", job.manifest).exit_code == 3
    assert job.scalar("SELECT sum(request_count) FROM batches") == 5  # the 5 out count as spent
    assert len(creates(mock)) == 1


def test_validate_shows_the_batch_price_and_the_online_price_for_the_fallback(job, mock):
    items = [{**it, "image_size": "4K" if i % 5 < 2 else "1K"} for i, it in enumerate(numbered(10))]
    job.write(batch_manifest(mock.url, items))
    shown = cli("validate", job.manifest)
    assert shown.exit_code == 0, shown.stderr
    # 6 at 1K ($0.067 batch, $0.134 online) and 4 at 4K ($0.12 / $0.24)
    assert "batch mode: about $0.88 at the catalog's batch price" in shown.stdout, shown.stdout
    assert "up to $1.76 if all of them did" in shown.stdout


def remote_batches(mock: Any) -> list[dict[str, Any]]:
    return http("GET", f"{mock.url}/v1beta/batches?pageSize=100", headers=KEY).json().get("operations", [])


def test_a_429_on_create_waits_lists_and_creates_once(job, mock):
    assert http("POST", f"{mock.url}/_mock/batches/create_faults", body={"next": ["429"]}).status == 200
    job.write(batch_manifest(mock.url, numbered(3)))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert [r["fault"] for r in creates(mock)] == ["429", None]  # refused, then made
    assert len(remote_batches(mock)) == 1
    assert set(job.state_of().values()) == {"succeeded"}


def test_a_create_whose_answer_was_lost_is_adopted_not_repeated(job, mock):
    assert http("POST", f"{mock.url}/_mock/batches/create_faults", body={"next": ["lost"]}).status == 200
    job.write(batch_manifest(mock.url, numbered(3)))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert [r["fault"] for r in creates(mock)] == ["lost"]  # one create: the batch was found by listing
    assert len(remote_batches(mock)) == 1
    assert set(job.state_of().values()) == {"succeeded"}
    assert job.scalar("SELECT count(*) FROM attempts") == 3


def test_an_expired_reference_upload_is_uploaded_again(job, mock):
    items = [{**it, "images": ["images/scene.png"]} for it in numbered(3)]
    job.write(batch_manifest(mock.url, items))
    assert cli("run", job.manifest).exit_code == 0
    assert uploaded(mock)["image/png"] == 1
    # 48 hours later: the API has deleted the file, and the store knows it has expired
    (name,) = [r[0] for r in job.sql("SELECT remote_name FROM uploaded_files")]
    assert http("DELETE", f"{mock.url}/v1beta/{name}", headers=KEY).status == 200
    execute(job, "UPDATE uploaded_files SET expires_at = 1000")
    job.write(batch_manifest(mock.url, [{**it, "prompt": it["prompt"] + " again"} for it in items]))
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0, rerun.stderr
    assert uploaded(mock)["image/png"] == 1 and "1 reference image uploaded" in rerun.stderr  # a new one
    assert job.sql("SELECT remote_name != '" + name + "' FROM uploaded_files") == [(True,)]
    assert set(job.state_of().values()) == {"succeeded"}


def execute(job: Any, statement: str) -> None:
    """A write to the job's database, committed (time passing, as the store would see it)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(job.url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_a_failed_batch_counts_as_an_attempt_so_it_cannot_loop(job, mock):
    mock.configure(batch_pending_s=None)
    data = batch_manifest(mock.url, numbered(2) + [{"id": "last", "prompt": "x"}], wait=False)
    data["limits"]["max_attempts"] = 2
    job.write(data)
    assert cli("run", job.manifest).exit_code == 3
    execute(job, "UPDATE items SET attempts = 1 WHERE key = 'last'")  # one attempt left before this batch
    (remote,) = [r[1] for r in batch_rows(job)]
    force(mock, remote, "FAILED")
    again = cli("run", job.manifest)  # sees the failure, submits the two with an attempt left
    assert again.exit_code == 3, again.stderr
    states = dict(job.sql("SELECT key, state FROM items"))
    assert states["last"] == "failed" and states["i000"] == states["i001"] == "running"
    assert "ended FAILED" in job.scalar("SELECT last_error FROM items WHERE key = 'last'")
    assert dict(job.sql("SELECT key, attempts FROM items")) == {"i000": 1, "i001": 1, "last": 2}
    assert len(creates(mock)) == 2


def test_a_batch_cancelled_by_someone_else_stops_the_waiting_run(job, mock):
    remote = left_pending(job, mock, numbered(2))
    assert http("POST", f"{mock.url}/v1beta/{remote}:cancel", headers=KEY).status == 200  # from the console
    job.write(batch_manifest(mock.url, numbered(2)))
    run = cli("run", job.manifest)
    assert run.exit_code == 3, run.stderr
    assert "was cancelled; its items are pending for the next run" in run.stderr
    assert set(job.state_of().values()) == {"pending"} and len(creates(mock)) == 1


def test_a_wrong_key_or_an_unknown_model_stops_the_run_as_online(job, mock, monkeypatch):
    mock.configure(api_key=TEST_KEY)
    monkeypatch.setenv("DMXAPI_KEY", "not-the-key")
    job.write(batch_manifest(mock.url, numbered(2)))
    wrong = cli("run", job.manifest)
    assert wrong.exit_code == 3 and "refused the key" in wrong.stderr, wrong.stderr
    assert "not-the-key" not in wrong.stderr
    monkeypatch.setenv("DMXAPI_KEY", TEST_KEY)
    data = batch_manifest(mock.url, numbered(2))
    data["provider"]["model"] = "gemini-9-imaginary"
    job.write(data)
    unknown = cli("run", job.manifest)  # a name the catalog does not list: the API's 404 decides
    assert unknown.exit_code == 3, unknown.stderr
    assert "not found" in unknown.stderr and "gemini-9-imaginary" in unknown.stderr, unknown.stderr
    assert [r["status"] for r in creates(mock)] == [404] and remote_batches(mock) == []
    assert set(job.state_of().values()) == {"pending"}


def test_a_results_file_gone_at_the_api_hands_the_items_back(job, mock):
    remote = left_pending(job, mock, numbered(3))
    done = force(mock, remote, "SUCCEEDED")
    results = done["response"]["responsesFile"]
    assert http("DELETE", f"{mock.url}/v1beta/{results}", headers=KEY).status == 200  # 48 h later
    mock.configure(batch_pending_s=0.0)
    job.write(batch_manifest(mock.url, numbered(3)))
    run = cli("run", job.manifest)
    assert run.exit_code == 0, run.stderr
    assert "is no longer served" in run.stderr
    assert [r[2] for r in batch_rows(job)] == ["expired", "applied"]
    assert set(job.state_of().values()) == {"succeeded"}
