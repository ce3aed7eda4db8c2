"""The 20 MB request limit: ``validate`` measures each item's body from its encoded reference
images; with ``reference_images.fit: false`` an item over the limit is refused in one line.
(Fitting fourteen large photos: tests/acceptance/test_fourteen_photos.py.)"""

from __future__ import annotations

import os

from PIL import Image

from tests.conftest import cli, generation_requests, manifest

LIMIT = 20_971_520


def product_photos(folder, n=14, size=(2400, 1800)):
    """``n`` JPEGs of real entropy (random noise compresses as badly as a photo can), ~4-5 MB each."""
    folder.mkdir()
    paths = []
    for i in range(n):
        im = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
        path = folder / f"product-{i:02d}.jpg"
        im.save(path, "JPEG", quality=95)
        paths.append(path)
    return paths


def test_without_fitting_an_item_over_the_limit_is_refused_in_one_line(job, mock):
    photos = product_photos(job.root / "photos", n=6)
    refs = [f"photos/{p.name}" for p in photos]
    job.write(manifest(mock.url, [{"id": "fusion", "prompt": "six products", "images": refs},
                                  {"id": "fine", "prompt": "p", "images": refs[:1]}],
                       reference_images={"fit": False}))
    result = cli("validate", job.manifest)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {job.manifest}: item fusion: images: the request would be ")
    assert f"over the API's limit of {LIMIT:,} bytes; set reference_images.fit: true" in line
    assert cli("run", job.manifest).exit_code == 2
    assert generation_requests(mock) == []
