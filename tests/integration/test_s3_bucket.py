"""The object-store client itself (batchfuse.outputs.objectstore.Bucket) against moto's S3
server: large images go up as a multipart upload and appear only complete, a conditional PUT
never replaces another item's object, a staged 2K image from a run goes up from its file."""
# ruff: noqa: F811  (the fixtures are imported from tests.s3server)

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from batchfuse.errors import OutputError
from batchfuse.outputs.objectstore import (
    MULTIPART_BYTES,
    STAGING_DIR,
    STALE_UPLOAD_S,
    Bucket,
    Location,
    object_meta,
)
from tests.conftest import cli, generation_requests, manifest
from tests.s3server import REGION, s3, s3_server  # noqa: F401  (fixtures)


def put(s3, bucket: str, name: str, source, size: int, item: str, job: str = "j") -> str:
    async def go() -> str:
        async with Bucket(Location.parse(f"s3://{bucket}/p/", s3.url, REGION)) as b:
            meta = object_meta(job, item, "spec1", "1/1", "0" * 64, 1, 1)
            return await b.put(name, source, size, meta, "image/png")

    return asyncio.run(go())


def test_a_large_file_goes_up_in_parts_and_appears_only_complete(s3, tmp_path):
    bucket = s3.new_bucket()
    data = os.urandom(MULTIPART_BYTES + 1_500_000)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    put(s3, bucket, "big.png", path, len(data), "item-1")
    log = [(m, p.split("?")[1] if "?" in p else "") for m, p, _ in s3.requests() if "big.png" in p]
    assert log[0] == ("POST", "uploads") and log[-1][0] == "POST" and "uploadId" in log[-1][1]
    assert [m for m, q in log if "partNumber" in q] == ["PUT", "PUT"]
    got = s3.client().get_object(Bucket=bucket, Key="p/big.png")
    assert hashlib.sha256(got["Body"].read()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert got["Metadata"]["batchfuse-item"] == "item-1"


def test_a_failed_multipart_upload_leaves_no_object_and_no_open_upload(s3, tmp_path):
    bucket = s3.new_bucket()
    data = os.urandom(MULTIPART_BYTES + 1000)
    s3.fail("PUT", match="partNumber=2")
    with pytest.raises(OutputError, match="cannot upload big.png"):
        put(s3, bucket, "big.png", data, len(data), "item-1")
    assert s3.keys(bucket) == {}
    assert s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_killed_runners_unfinished_upload_is_aborted_but_a_fresh_one_is_left(s3):
    bucket = s3.new_bucket()
    left = s3.client().create_multipart_upload(Bucket=bucket, Key="p/killed.png")["UploadId"]

    async def abort(older_than_s: float) -> int:
        async with Bucket(Location.parse(f"s3://{bucket}/p/", s3.url, REGION)) as b:
            return await b.abort_stale_uploads(older_than_s)

    # moto dates every upload 2010-11-10: the cutoff moves instead of the upload's age
    assert asyncio.run(abort(100 * 365 * 86400.0)) == 0  # begun after the cutoff: may be a live runner's
    assert [u["UploadId"] for u in s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [left]
    assert asyncio.run(abort(STALE_UPLOAD_S)) == 1
    assert s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_object_of_another_item_is_never_replaced_but_the_items_own_is(s3):
    bucket = s3.new_bucket()
    put(s3, bucket, "a.png", b"first", 5, "item-1")
    with pytest.raises(OutputError, match="is an output of item 'item-1' of job 'j'; it is not overwritten"):
        put(s3, bucket, "a.png", b"second", 6, "item-2")
    with pytest.raises(OutputError, match="of job 'j'"):
        put(s3, bucket, "a.png", b"second", 6, "item-1", job="other")
    assert s3.client().get_object(Bucket=bucket, Key="p/a.png")["Body"].read() == b"first"
    put(s3, bucket, "a.png", b"newer", 5, "item-1")  # the same item (its spec changed): replaced
    assert s3.client().get_object(Bucket=bucket, Key="p/a.png")["Body"].read() == b"newer"


def test_a_staged_2k_image_goes_up_from_its_file_and_the_file_goes(job, noise_mock, s3):
    bucket = s3.new_bucket()
    job.write(manifest(noise_mock.url, [{"id": "a", "prompt": "make it"}], output=s3.output(bucket),
                       defaults={"aspect_ratio": "1:1", "image_size": "2K"}))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    ((sha, size, width),) = job.sql("SELECT sha256, bytes, width FROM outputs")
    body = s3.client().get_object(Bucket=bucket, Key="out/a.png")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha and len(body) == size > 4_000_000 and width == 2048
    staged = [p for p in (job.root / STAGING_DIR).rglob("*") if p.is_file()]
    assert staged == []  # nothing left behind locally
    assert len(generation_requests(noise_mock)) == 1


def test_a_store_without_conditional_writes_still_never_replaces_another_items_object(s3):
    bucket = s3.new_bucket()
    put(s3, bucket, "a.png", b"first", 5, "item-1")
    s3.fail("PUT", status=501, count=1, match="a.png")  # "NotImplemented" for the If-None-Match PUT

    async def go() -> None:
        async with Bucket(Location.parse(f"s3://{bucket}/p/", s3.url, REGION)) as b:
            with pytest.raises(OutputError, match="is an output of item 'item-1'"):
                await b.put("a.png", b"second", 6, object_meta("j", "item-2", "s", "1/1", "0" * 64, 1, 1), "image/png")
            assert b.conditional is False
            await b.put("b.png", b"new", 3, object_meta("j", "item-2", "s", "1/1", "0" * 64, 1, 1), "image/png")

    asyncio.run(go())
    assert s3.client().get_object(Bucket=bucket, Key="p/a.png")["Body"].read() == b"first"
    assert s3.client().get_object(Bucket=bucket, Key="p/b.png")["Body"].read() == b"new"
