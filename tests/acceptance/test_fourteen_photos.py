"""Fourteen large product photos in one item: ``validate`` fits the request under Google's 20 MB
limit (``reference_images.fit``, the default) by re-encoding the references deterministically,
and the run succeeds against the mock, which refuses bodies over 20 MB as Google does.
(SQLite only: the image work, not the store, is under test.)"""

from __future__ import annotations

import base64
import hashlib
import io
import json

from PIL import Image

from batchfuse.images import encode_fitted
from tests.conftest import cli, generation_requests, manifest
from tests.integration.test_request_limit import LIMIT, product_photos


def test_fourteen_large_photos_are_fitted_under_the_limit_and_succeed(job, mock):
    photos = product_photos(job.root / "photos")
    sizes = [p.stat().st_size for p in photos]
    assert min(sizes) > 4_000_000 and sum(sizes) > 3 * LIMIT
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}
    refs = [f"photos/{p.name}" for p in photos]
    job.write(manifest(mock.url, [{"id": "fusion", "prompt": "all fourteen products on one shelf", "images": refs},
                                  {"id": "small", "prompt": "one scene", "images": ["images/scene.png"]}]))
    result = cli("validate", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert "fitted to the request limit: 1 item (reference images re-encoded)" in result.stdout, result.stdout
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("  fusion: ")]
    step = line.rsplit(" at ", 1)[1]
    assert step.endswith(("-q90", "-q80", "-q70", "-q75"))

    run = cli("run", job.manifest)
    assert run.exit_code == 0, run.stderr
    assert set(job.state_of().values()) == {"succeeded"}
    (fused,) = [r for r in generation_requests(mock) if r["prompt"].startswith("all fourteen")]
    body = json.dumps(fused["body"], ensure_ascii=False).encode("utf-8")
    assert len(body) <= LIMIT
    parts = fused["body"]["contents"][0]["parts"][1:]
    assert len(parts) == 14
    for part, photo in zip(parts, photos, strict=True):
        sent = base64.b64decode(part["inline_data"]["data"])
        # the bytes the step makes, every time: the same input gives the same bytes
        assert sent == encode_fitted(photo.read_bytes(), step)[1]
        assert part["inline_data"]["mime_type"] == "image/jpeg"
        with Image.open(io.BytesIO(sent)) as im:
            assert max(im.size) <= int(step.split("px")[0])
    # the unfitted item went as it was
    (small,) = [r for r in generation_requests(mock) if r["prompt"] == "one scene"]
    scene = (job.root / "images/scene.png").read_bytes()
    assert base64.b64decode(small["body"]["contents"][0]["parts"][1]["inline_data"]["data"]) == scene
    # the step is part of the spec: planning again finds nothing changed
    spec = json.loads(job.scalar("SELECT spec FROM items WHERE key = 'fusion'"))
    assert {img["fit"] for img in spec["images"]} == {step}
    again = cli("validate", job.manifest)
    assert "0 new, 0 changed, 2 unchanged done" in again.stdout, again.stdout
    # the originals are never modified
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in photos} == before
