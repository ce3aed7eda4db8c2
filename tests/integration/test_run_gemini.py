"""A job against the mock Gemini API over loopback, through the CLI, into a real SQLite file."""

from __future__ import annotations

import base64
import hashlib
import json

from PIL import Image

from tests.conftest import TEST_KEY, cli, generation_requests, manifest


def test_happy_path_with_several_reference_images(job, mock):
    job.write(
        manifest(
            mock.url,
            [
                {"id": "calc-dinner", "prompt": "让第二张图的计算器在第一张图中吃饭",
                 "images": ["images/scene.png", "images/calculator.jpg"]},
                {"id": "poster", "prompt": "A museum-plaque style 3D poster", "aspect_ratio": "16:9"},
                {"id": "mug", "prompt": "logo on a mug", "images": ["images/logo.png", "images/scene.png"],
                 "response_modalities": ["TEXT", "IMAGE"]},
            ],
        )
    )
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert set(job.state_of().values()) == {"succeeded"}

    # every output is on disk, decodable, the size the spec's table gives (scaled by 1/16),
    # with prompt, model and key in its PNG metadata, and recorded with its sha256
    rows = job.sql(
        "SELECT items.key, outputs.path, outputs.sha256, outputs.width, outputs.height "
        "FROM outputs JOIN items ON items.id = outputs.item_id ORDER BY items.key"
    )
    assert [r[0] for r in rows] == ["calc-dinner", "mug", "poster"]
    for key, path, sha, width, height in rows:
        file = job.out / path
        assert path == f"{key}.png"
        assert hashlib.sha256(file.read_bytes()).hexdigest() == sha
        with Image.open(file) as im:
            assert im.size == (width, height)
            assert im.text["batchfuse:item"] == key
            assert im.text["model"] == "gemini-3-pro-image-preview"
    sizes = {r[0]: (r[3], r[4]) for r in rows}
    assert sizes["poster"] == (1376 // 16, 768 // 16)
    assert sizes["calc-dinner"] == (64, 64)
    with Image.open(job.out / "calc-dinner.png") as im:
        assert im.text["prompt"] == "让第二张图的计算器在第一张图中吃饭"

    # attempts carry status, latency and usage tokens
    attempts = job.sql("SELECT outcome, http_status, latency_ms, total_tokens, ended_at >= started_at FROM attempts")
    assert len(attempts) == 3
    assert all(a[0] == "succeeded" and a[1] == 200 and a[2] > 0 and a[3] > 1210 and a[4] for a in attempts)
    assert job.sql("SELECT text FROM attempts JOIN items ON items.id = attempts.item_id WHERE key = 'mug'")[0][0]
    assert not (job.out / ".batchfuse-tmp").exists()


def test_request_body_matches_the_spec_for_3_pro(job, mock):
    job.write(
        manifest(
            mock.url,
            [{"id": "a", "prompt": "fuse them", "images": ["images/scene.png", "images/calculator.jpg"],
              "aspect_ratio": "4:5", "image_size": "2K", "response_modalities": ["TEXT", "IMAGE"],
              "google_search": True}],
        )
    )
    assert cli("run", job.manifest).exit_code == 0
    (req,) = generation_requests(mock)
    assert req["path"] == "/v1beta/models/gemini-3-pro-image-preview:generateContent"
    scene = base64.b64encode((job.root / "images/scene.png").read_bytes()).decode()
    calc = base64.b64encode((job.root / "images/calculator.jpg").read_bytes()).decode()
    assert req["body"] == {
        "contents": [
            {
                "parts": [
                    {"text": "fuse them"},
                    {"inline_data": {"mime_type": "image/png", "data": scene}},
                    {"inline_data": {"mime_type": "image/jpeg", "data": calc}},
                ]
            }
        ],
        "generationConfig": {
            "imageConfig": {"aspectRatio": "4:5", "imageSize": "2K"},
            "responseModalities": ["TEXT", "IMAGE"],
        },
        "tools": [{"google_search": {}}],
    }


def test_request_body_for_flash_leaves_out_what_its_relay_rejects(job, mock):
    data = manifest(mock.url, [{"id": "a", "prompt": "p", "images": ["images/logo.png"], "aspect_ratio": "3:2"}])
    data["provider"]["model"] = "gemini-2.5-flash-image"
    job.write(data)
    assert cli("run", job.manifest).exit_code == 0
    (req,) = generation_requests(mock)
    assert req["path"] == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert req["body"]["generationConfig"] == {"imageConfig": {"aspectRatio": "3:2"}}
    assert "tools" not in req["body"]
    assert job.sql("SELECT width, height FROM outputs") == [(1248 // 16, 832 // 16)]


def test_rerun_sends_nothing_for_done_items_and_reruns_changed_ones(job, mock):
    items = [{"id": f"item-{i}", "prompt": f"prompt {i}"} for i in range(5)]
    job.write(manifest(mock.url, items))
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 5

    again = cli("run", job.manifest)
    assert again.exit_code == 0
    assert "5 unchanged done" in again.stderr
    assert len(generation_requests(mock)) == 5  # nothing sent

    items[2]["prompt"] = "a new prompt"
    items.append({"id": "item-new", "prompt": "brand new"})
    job.write(manifest(mock.url, items))
    plan = cli("validate", job.manifest)
    assert plan.exit_code == 0
    assert "1 new, 1 changed, 4 unchanged done" in plan.stdout
    assert cli("run", job.manifest).exit_code == 0
    sent = [r["prompt"] for r in generation_requests(mock)[5:]]
    assert sorted(sent) == ["a new prompt", "brand new"]


def test_status_json_counts_and_groups_errors(job, mock):
    job.write(
        manifest(
            mock.url,
            [
                {"id": "ok", "prompt": "fine"},
                {"id": "unsafe-1", "prompt": "[[mock:safety*always]] one"},
                {"id": "unsafe-2", "prompt": "[[mock:safety*always]] two"},
            ],
        )
    )
    assert cli("run", job.manifest).exit_code == 1
    result = cli("status", job.manifest, "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["job"] == "test-job"
    assert info["items"] == {"total": 3, "succeeded": 1, "failed": 2, "pending": 0, "running": 0, "orphaned": 0,
                             "removed": 0}
    assert info["attempts"] == 3
    (group,) = info["errors"]
    assert group["class"] == "rejected" and group["items"] == 2 and "IMAGE_SAFETY" in group["message"]
    human = cli("status", job.manifest)
    assert "failed     2" in human.stdout and "IMAGE_SAFETY" in human.stdout


def test_retry_failed_gives_rejected_items_a_new_allowance(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "[[mock:safety*1]] x"}]))
    assert cli("run", job.manifest).exit_code == 1
    assert cli("run", job.manifest).exit_code == 1  # failed items are not retried by default
    assert len(generation_requests(mock)) == 1
    assert cli("run", job.manifest, "--retry-failed").exit_code == 0
    assert len(generation_requests(mock)) == 2
    assert job.state_of() == {"a": "succeeded"}


def test_the_key_never_reaches_the_database_logs_reports_or_outputs(job, mock, monkeypatch):
    """Grep every artifact a run and the morning review leave for the key."""
    mock.configure(api_key=TEST_KEY)
    monkeypatch.setenv("BATCHFUSE_DEBUG", "1")
    job.write(
        manifest(
            mock.url,
            [{"id": "a", "prompt": "[[mock:503*1]] x"}, {"id": "b", "prompt": "[[mock:400]] y"},
             {"id": "c", "prompt": "[[mock:reset]] z", "images": ["images/logo.png"]}],
        )
    )
    outputs = [
        cli("run", job.manifest, "--log-file", job.root / "run.jsonl", "--log-format", "json"),
        cli("run", job.manifest, "--retry-failed", "--log-file", job.root / "run.log"),
        cli("status", job.manifest, "--json"),
        cli("status", job.manifest),
        cli("report", job.manifest),
        cli("export", job.manifest, "--format", "csv"),
        cli("export", job.manifest, "--format", "jsonl", "-o", job.root / "items.jsonl"),
    ]
    assert outputs[0].exit_code == 1 and outputs[4].exit_code == 0
    assert any(r["key_ok"] for r in mock.requests())
    for result in outputs:
        assert TEST_KEY not in result.stdout + result.stderr
    files = [f for f in job.root.rglob("*") if f.is_file()]
    assert {"run.jsonl", "run.log", "test-job.report.html", "items.jsonl", "a.png"} <= {f.name for f in files}
    for file in files:
        assert TEST_KEY.encode() not in file.read_bytes(), file


def test_outputs_on_disk_from_an_unrecorded_attempt_are_adopted_not_paid_for_again(job, mock):
    mock.configure(images_per_reply=2)
    items = [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}]
    job.write(manifest(mock.url, items))
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 2
    # a job the database knows nothing about (as if the commits had never happened) over the same files
    items[1]["prompt"] = "two, changed"  # a changed spec must not be taken from disk
    job.write(manifest(mock.url, items) | {"job": "same-outputs-new-record"})
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    sent = [r["prompt"] for r in generation_requests(mock)[2:]]
    assert sent == ["two, changed"]
    rows = job.sql(
        "SELECT items.key, attempts.outcome, attempts.http_status FROM attempts JOIN items ON items.id = attempts.item_id "
        "JOIN jobs ON jobs.id = items.job_id WHERE jobs.name = 'same-outputs-new-record' ORDER BY items.key"
    )
    assert rows == [("a", "adopted", None), ("b", "succeeded", 200)]
    adopted = job.sql(
        "SELECT outputs.path FROM outputs JOIN items ON items.id = outputs.item_id JOIN jobs ON jobs.id = items.job_id "
        "WHERE jobs.name = 'same-outputs-new-record' AND items.key = 'a' ORDER BY outputs.idx"
    )
    assert adopted == [("a-1.png",), ("a-2.png",)]
