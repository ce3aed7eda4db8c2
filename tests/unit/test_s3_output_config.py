"""``output.dir: s3://...`` in the manifest: what is accepted, what is refused (one line, never
echoing what may be a credential), and the parts of a location."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchfuse.errors import InputError
from batchfuse.outputs.objectstore import Location, meta_value, object_meta, same_owner
from batchfuse.plan.manifest import load_manifest

BASE = {"job": "j", "provider": {"kind": "gemini", "base_url": "mock", "model": "gemini-3-pro-image-preview"},
        "items": [{"id": "a", "prompt": "p"}]}


def load(tmp_path: Path, output: dict) -> object:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**BASE, "output": output}), encoding="utf-8")
    return load_manifest(path)


def test_a_bucket_with_endpoint_and_region_is_accepted(tmp_path):
    m = load(tmp_path, {"dir": "s3://catalog-images/spring-2027/", "s3": {"endpoint_url": "http://minio:9000/",
                                                                        "region": "eu-central-1"}})
    assert m.output.is_object_store and m.output.s3.endpoint_url == "http://minio:9000"
    loc = Location.parse(m.output.dir, m.output.s3.endpoint_url, m.output.s3.region)
    assert (loc.bucket, loc.prefix, loc.url) == ("catalog-images", "spring-2027/", "s3://catalog-images/spring-2027/")
    assert loc.object_url("a/b.png") == "s3://catalog-images/spring-2027/a/b.png"
    assert loc.http_url("a b.png") == "http://minio:9000/catalog-images/spring-2027/a%20b.png"
    assert Location.parse("s3://bucket").prefix == ""


@pytest.mark.parametrize(("output", "said"), [
    ({"dir": "s3://Bad_Bucket/x/"}, "is not a bucket name"),
    ({"dir": "s3://bucket/a//b/"}, "must be plain folder names"),
    ({"dir": "s3://bucket/../b/"}, "must be plain folder names"),
    ({"dir": "out", "s3": {"region": "eu-central-1"}}, "output.s3 is for an s3:// output.dir"),
    ({"dir": "s3://bucket/", "s3": {"endpoint_url": "ftp://x"}}, "must be an http(s) URL"),
    ({"dir": "s3://bucket/", "s3": {"profile": "x"}}, "profile"),
])
def test_a_bad_bucket_setting_is_one_clear_line(tmp_path, output, said):
    with pytest.raises(InputError) as exc:
        load(tmp_path, output)
    assert said in exc.value.message and "\n" not in exc.value.message.strip()


SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("output", [
    {"dir": "s3://bucket/", "s3": {"aws_secret_access_key": SECRET}},
    {"dir": "s3://bucket/", "s3": {"secret_key": SECRET}},
    {"dir": f"s3://AKIAEXAMPLE:{SECRET}@bucket/"},
    {"dir": "s3://bucket/", "s3": {"endpoint_url": f"https://AKIAEXAMPLE:{SECRET}@minio:9000"}},
])
def test_credentials_in_the_manifest_are_refused_and_never_repeated(tmp_path, output):
    with pytest.raises(InputError) as exc:
        load(tmp_path, output)
    assert SECRET not in exc.value.message and SECRET[:8] not in exc.value.message
    assert "credential" in exc.value.message or "user" in exc.value.message


def test_metadata_carries_any_item_key_as_ascii():
    meta = object_meta("春の job", "计算器/1", "s" * 64, "1/1", "0" * 64, 10, 20)
    assert all(v.isascii() for v in meta.values())
    assert same_owner(meta, "春の job") and not same_owner(meta, "other")
    long = "x" * 2000
    assert meta_value(long).startswith("sha256:") and len(meta_value(long)) < 100


class _StoreWithOne:
    """A client stub holding one object: conditional creates are refused (it is there)."""

    def __init__(self, meta: dict[str, str]) -> None:
        self.meta, self.puts = meta, []

    async def put_object(self, **kw):
        if "IfNoneMatch" in kw:
            raise _Refused()
        self.puts.append(kw)
        return {"ETag": '"new"'}

    async def head_object(self, **kw):
        return {"ContentLength": 3, "ETag": '"old"', "Metadata": self.meta}


class _Refused(Exception):
    response = {"Error": {"Code": "PreconditionFailed"}}


@pytest.mark.parametrize("job", ["j", "春" * 80])  # a long non-ASCII job name is kept as its digest
def test_an_items_own_older_object_is_replaced_and_another_items_is_not(job):
    import asyncio

    from batchfuse.errors import OutputError
    from batchfuse.outputs.objectstore import Bucket

    mine = object_meta(job, "a", "old-spec", "1/1", "0" * 64, 1, 1)
    bucket = Bucket(Location.parse("s3://bucket/p/"))
    bucket._client = _StoreWithOne(mine)
    new = object_meta(job, "a", "new-spec", "1/1", "1" * 64, 1, 1)
    assert asyncio.run(bucket.put("a.png", b"png", 3, new, "image/png")) == "new"
    assert bucket._client.puts[0]["IfMatch"] == '"old"'
    bucket._client = _StoreWithOne(object_meta(job, "b", "old-spec", "1/1", "0" * 64, 1, 1))
    with pytest.raises(OutputError, match="is not overwritten"):
        asyncio.run(bucket.put("a.png", b"png", 3, new, "image/png"))
