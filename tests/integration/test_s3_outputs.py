"""Outputs in S3-compatible object storage (``output.dir: s3://bucket/prefix/``), against moto's
S3 server on loopback: objects complete under their keys with their metadata, adoption after a
lost commit, refusals before anything is paid, the spool when uploads fail, no overwrites."""

from __future__ import annotations

import hashlib
import io

from PIL import Image

from tests.conftest import cli, generation_requests, items, manifest
from tests.s3server import s3, s3_server  # noqa: F401  (fixtures)


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
