"""Outputs in S3-compatible object storage (``output.dir: s3://bucket/prefix/``), against moto's
S3 server on loopback: objects complete under their keys with their metadata, adoption after a
lost commit, refusals before anything is paid, the spool when uploads fail, no overwrites."""
# ruff: noqa: F811  (the fixtures are imported from tests.s3server)

from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from tests.conftest import cli, cli_process, generation_requests, items, manifest
from tests.s3server import s3, s3_env, s3_server  # noqa: F401  (fixtures)


def test_a_job_writes_its_images_as_objects_with_their_metadata(job, mock, s3):
    bucket = s3.new_bucket()
    job.write(manifest(mock.url, items(6), output=s3.output(bucket)))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    keys = s3.keys(bucket)
    assert sorted(k for k in keys if k != "out/.batchfuse-job") == [f"out/i{i:03d}.png" for i in range(6)]
    recorded = dict(job.sql("SELECT path, sha256 FROM outputs"))
    for i in range(6):
        key = f"out/i{i:03d}.png"
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        head = s3.head(bucket, key)
        meta = head["Metadata"]
        assert meta["batchfuse-item"] == f"i{i:03d}" and meta["batchfuse-job"] == "test-job"
        assert meta["batchfuse-sha256"] == hashlib.sha256(body).hexdigest() == recorded[f"i{i:03d}.png"]
        assert head["ContentType"] == "image/png"
        with Image.open(io.BytesIO(body)) as im:
            assert (int(meta["batchfuse-width"]), int(meta["batchfuse-height"])) == im.size
    assert not list(job.root.glob("out*"))  # nothing written to a local output folder
    assert len(generation_requests(mock)) == 6


def test_a_transient_storage_error_is_retried(job, mock, s3):
    bucket = s3.new_bucket()
    job.write(manifest(mock.url, items(2), output=s3.output(bucket)))
    s3.fail("PUT", count=1, match=".png")  # the first upload is answered 503
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    puts = [(path, status) for method, path, status in s3.requests() if method == "PUT" and ".png" in path]
    assert [s for _, s in puts].count(503) == 1 and [s for _, s in puts].count(200) == 2, puts
    assert len(generation_requests(mock)) == 2


def test_a_missing_bucket_stops_the_run_before_anything_is_sent(job, mock, s3):
    job.write(manifest(mock.url, items(3), output=s3.output("no-such-bucket-here")))
    result = cli("run", job.manifest)
    assert result.exit_code == 2, result.stderr
    assert "bucket 'no-such-bucket-here' does not exist" in result.stderr and "Traceback" not in result.stderr
    assert "output.dir" in result.stderr and str(job.manifest) in result.stderr
    assert generation_requests(mock) == []
    assert not job.db.exists()  # refused while planning: the database was never touched


@pytest.mark.parametrize("what", ["wrong secret", "unknown key", "no credentials"])
def test_refused_credentials_stop_the_run_before_anything_is_sent_and_never_show(
    job, mock, s3, monkeypatch, tmp_path, what
):
    bucket = s3.new_bucket()
    wrong = "Wr0ngSecretWr0ngSecretWr0ngSecret123456"
    if what == "wrong secret":
        s3_env(monkeypatch, tmp_path, s3.key_id, wrong)
    elif what == "unknown key":
        s3_env(monkeypatch, tmp_path, "AKIAIOSFODNN7EXAMPLE", wrong)
    else:
        s3_env(monkeypatch, tmp_path, None, None)
    job.write(manifest(mock.url, items(3), output=s3.output(bucket)))
    log = tmp_path / "run.log"
    proc = cli_process("run", job.manifest, "--log-file", log, "--log-format", "json")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    expected = "no AWS credentials found" if what == "no credentials" else "refused these credentials"
    assert expected in err and "Traceback" not in err, err
    assert generation_requests(mock) == []
    assert s3.keys(bucket) == {}
    for text in (err, log.read_text() if log.exists() else "", job.db.read_bytes().decode("latin-1") if job.db.exists() else ""):
        assert wrong not in text and wrong[:8] not in text
    if job.url.startswith("postgresql") and job.sql("SELECT to_regclass('jobs')") != [(None,)]:
        dump = json.dumps([job.sql(f"SELECT * FROM {t}") for t in ("jobs", "runs", "items", "attempts")], default=str)
        assert wrong[:8] not in dump


def test_credentials_in_the_manifest_are_refused(job, mock, s3):
    bucket = s3.new_bucket()
    output = s3.output(bucket)
    output["s3"]["aws_secret_access_key"] = "Wr0ngSecretWr0ngSecretWr0ngSecret123456"
    job.write(manifest(mock.url, items(1), output=output))
    result = cli("validate", job.manifest)
    assert result.exit_code == 2
    assert "output.s3.aws_secret_access_key: credentials must not be written into a manifest" in result.stderr
    assert "Wr0ngSecret" not in result.stderr


@pytest.mark.parametrize("ext", ["png", "jpg"])  # the metadata is the object's, whatever its format
def test_a_lost_commit_is_adopted_from_the_bucket_without_paying_again(job, mock, s3, ext):
    bucket = s3.new_bucket()
    output = {**s3.output(bucket), "filename": "{item}." + ext}
    job.write(manifest(mock.url, items(4), output=output, limits={"concurrency": 1}))
    # killed inside the transaction that records the first finished attempts: uploaded, not recorded
    first = cli_process("run", job.manifest, env={"BATCHFUSE_FAULTPOINT": "db.record:1:kill"})
    first.communicate(timeout=60)
    assert first.returncode == -9, first.err()
    uploaded = {k for k in s3.keys(bucket) if k.endswith("." + ext)}
    assert uploaded and job.sql("SELECT count(*) FROM outputs") == [(0,)]
    paid = len(generation_requests(mock))

    shown = cli("validate", job.manifest)
    assert f"{len(uploaded)} items to adopt from outputs already in s3://{bucket}/out/" in shown.stdout, shown.stdout
    again = cli("run", job.manifest)
    assert again.exit_code == 0, again.stderr
    adopted = job.sql("SELECT count(*) FROM attempts WHERE outcome = 'adopted'")[0][0]
    assert adopted == len(uploaded)
    assert len(generation_requests(mock)) == paid + (4 - len(uploaded))  # each image paid once
    assert job.sql("SELECT count(*) FROM outputs") == [(4,)]
    for key in uploaded:  # the record is the object's own digest
        head = s3.head(bucket, key)
        name = key.removeprefix("out/")
        assert job.sql(f"SELECT sha256, bytes FROM outputs WHERE path = '{name}'") == [  # noqa: S608
            (head["Metadata"]["batchfuse-sha256"], head["ContentLength"])
        ]


def test_an_upload_that_fails_after_a_paid_generation_is_spooled_and_uploaded_next_run(job, mock, s3):
    bucket = s3.new_bucket()
    job.write(manifest(mock.url, items(3), output=s3.output(bucket), limits={"concurrency": 1, "max_attempts": 3}))
    s3.fail("PUT", match=".png")  # the store takes the probe but no image
    first = cli("run", job.manifest)
    assert first.exit_code == 3, first.stderr
    assert f"s3://{bucket}/out/" in first.stderr and "next run" in first.stderr and "Traceback" not in first.stderr
    spooled = job.sql("SELECT i.key FROM spool s JOIN items i ON i.id = s.item_id")
    assert spooled, first.stderr
    paid = len(generation_requests(mock))
    assert not [k for k in s3.keys(bucket) if k.endswith(".png")]

    s3.heal()
    again = cli("run", job.manifest)
    assert again.exit_code == 0, again.stderr
    # the spooled images went up without a new generation; only the never-sent items were paid
    assert paid == len(spooled) and len(generation_requests(mock)) == 3
    assert job.sql("SELECT count(*) FROM spool") == [(0,)]
    assert sorted(k for k in s3.keys(bucket) if k.endswith(".png")) == [f"out/i{i:03d}.png" for i in range(3)]
    assert job.sql("SELECT count(DISTINCT item_id) FROM outputs") == [(3,)]


@pytest.mark.parametrize("owner", ["another job", "another item", "not batchfuse"])
def test_an_object_of_someone_else_under_an_output_name_is_refused_at_plan_time(job, mock, s3, owner):
    bucket = s3.new_bucket()
    meta = {
        "another job": {"batchfuse-job": "other-job", "batchfuse-item": "i001"},
        "another item": {"batchfuse-job": "test-job", "batchfuse-item": "zzz"},
        "not batchfuse": {},
    }[owner]
    s3.client().put_object(Bucket=bucket, Key="out/i001.png", Body=b"theirs", Metadata=meta)
    job.write(manifest(mock.url, items(3), output=s3.output(bucket)))
    result = cli("run", job.manifest)
    assert result.exit_code == 2, result.stderr
    assert f"s3://{bucket}/out/i001.png already exists" in result.stderr and "item i001" in result.stderr
    assert generation_requests(mock) == []
    body = s3.client().get_object(Bucket=bucket, Key="out/i001.png")["Body"].read()
    assert body == b"theirs"


def test_export_names_the_objects_and_the_report_thumbnails_them_once(job, mock, s3, tmp_path):
    from tests.conftest import page_items

    bucket = s3.new_bucket()
    job.write(manifest(mock.url, items(3), output=s3.output(bucket)))
    assert cli("run", job.manifest).exit_code == 0
    exported = cli("export", job.manifest, "--format", "jsonl")
    assert exported.exit_code == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {r["output_dir"] for r in rows} == {f"s3://{bucket}/out/"}
    assert sorted(r["outputs"][0] for r in rows) == ["i000.png", "i001.png", "i002.png"]
    assert sorted(r["urls"][0] for r in rows) == [f"s3://{bucket}/out/i00{i}.png" for i in range(3)]

    elsewhere = tmp_path / "review"
    elsewhere.mkdir()
    s3.proxy.log.clear()
    made = cli("report", job.manifest, "-o", elsewhere / "r.html")
    assert made.exit_code == 0, made.stderr
    html = (elsewhere / "r.html").read_text(encoding="utf-8")
    cards = page_items(html)
    hrefs = sorted(o["href"] for c in cards.values() for o in c["outputs"])
    assert hrefs == [f"{s3.url}/{bucket}/out/i00{i}.png" for i in range(3)]
    assert all(o["thumb"] for c in cards.values() for o in c["outputs"])
    gets = [p for m, p, _ in s3.requests() if m == "GET" and p.endswith(".png")]
    assert len(gets) == 3

    s3.proxy.log.clear()  # again: the thumbnails are kept, nothing is downloaded
    assert cli("report", job.manifest, "-o", elsewhere / "r.html").exit_code == 0
    assert [p for m, p, _ in s3.requests() if m == "GET" and p.endswith(".png")] == []
    assert all(o["thumb"] for c in page_items((elsewhere / "r.html").read_text("utf-8")).values() for o in c["outputs"])


def test_the_review_page_serves_outputs_from_the_bucket(job, mock, s3, tmp_path):
    from tests.integration.test_review_server import request, review_server

    bucket = s3.new_bucket()
    job.write(manifest(mock.url, items(2), output=s3.output(bucket)))
    assert cli("run", job.manifest).exit_code == 0
    stored = s3.client().get_object(Bucket=bucket, Key="out/i000.png")["Body"].read()
    assert not (job.root / ".batchfuse-s3" / bucket / "out" / "i000.png").exists()  # no local copy
    with review_server(job) as server:
        status, body, _ = request(server, "GET", "/api/items")
        assert status == 200, body
        card = {i["key"]: i for i in json.loads(body)["items"]}["i000"]
        href = card["outputs"][0]["href"]
        s3.proxy.log.clear()
        status, image, headers = request(server, "GET", href)
        assert status == 200 and headers["Content-Type"] == "image/png", (href, image)
        assert hashlib.sha256(image).hexdigest() == hashlib.sha256(stored).hexdigest()
        assert request(server, "GET", href)[0] == 200  # the same version again: from the cache
        gets = [p for m, p, _ in s3.requests() if m == "GET" and p.endswith("i000.png")]
        assert len(gets) == 1
        assert request(server, "GET", card["outputs"][0]["thumb"])[0] == 200
        assert request(server, "GET", "/out/not-an-output.png")[0] == 404


def test_batch_mode_objects_carry_their_item_and_spec(job, mock, s3):
    bucket = s3.new_bucket()
    data = manifest(mock.url, items(3), output=s3.output(bucket), batch={"poll_s": 0.05})
    data["provider"]["mode"] = "batch"
    job.write(data)
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    specs = dict(job.sql("SELECT key, spec_hash FROM items"))
    for key, spec in specs.items():
        meta = s3.head(bucket, f"out/{key}.png")["Metadata"]
        assert meta["batchfuse-item"] == key and meta["batchfuse-spec"] == spec and meta["batchfuse-job"] == "test-job"
