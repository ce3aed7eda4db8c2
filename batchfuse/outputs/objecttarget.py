"""The run's output target when ``output.dir`` is a bucket: images are staged in a local folder
(as for a local output folder) and committed by uploading them, with their metadata, under
their final keys; adoption of objects a dead run uploaded but did not record; the start-up
probe (in :meth:`ObjectOutputs.open`) and the shared-job marker.

:class:`ObjectOutputs` is an :class:`~batchfuse.outputs.files.OutputFolder` whose ``root`` is
the local staging folder; the runner awaits :meth:`ObjectOutputs.upload` on its event loop
(the recorder confirms the leases first and records afterwards) and :meth:`ObjectOutputs.adopt`
(HEADs on the same loop, no worker thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path, PurePosixPath
from typing import Any

from batchfuse.errors import InputError, OutputError
from batchfuse.outputs.files import OutputFolder, PendingOutputs
from batchfuse.outputs.marker import MARKER
from batchfuse.outputs.objectstore import (
    META_HEIGHT,
    META_IMAGE,
    META_SHA256,
    META_SPEC,
    META_WIDTH,
    Bucket,
    Location,
    object_meta,
    same_owner,
)
from batchfuse.records import OutputRecord

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
#: Uploads in flight at once per runner.
UPLOADS_AT_ONCE = 16


class ObjectOutputs(OutputFolder):
    """Outputs that end in a bucket: staged under ``staging`` (a local folder), uploaded."""

    remote = True

    def __init__(self, location: Location, staging: Path, writer_tag: str, job_name: str) -> None:
        super().__init__(staging, writer_tag)
        self.location, self.job_name = location, job_name
        self.bucket: Bucket | None = None
        self._uploads = asyncio.Semaphore(UPLOADS_AT_ONCE)

    def tagged(self, writer_tag: str) -> ObjectOutputs:
        """This target with its temp files named after ``writer_tag`` (the runner)."""
        self.writer_tag = writer_tag.replace(":", "_").replace("/", "_")
        return self

    @property
    def where(self) -> str:
        return self.location.url

    async def open(self) -> ObjectOutputs:
        """The bucket's client, after the probe (a tiny write and delete: bucket there, credentials
        good) and the abort of a killed runner's stale uploads; closed again when that fails."""
        self.bucket = await Bucket(self.location).__aenter__()
        try:
            await self.bucket.probe()
            await self.bucket.abort_stale_uploads()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        if self.bucket is not None:
            await self.bucket.__aexit__(None, None, None)
            self.bucket = None

    # ------------------------------------------------------------------ start-up

    async def check(self, token: str | None, live_runners: Callable[[], Coroutine[Any, Any, int]] | None) -> None:
        """For runners sharing a job, the marker: every runner must write to the same bucket and
        prefix (:meth:`open` has probed it already, once)."""
        assert self.bucket is not None
        if token is None or live_runners is None:
            return
        others = await live_runners()
        seen = await self.bucket.read_text(MARKER)
        if seen is not None and seen.strip() == token:
            return
        if others > 0:
            raise InputError(
                f"output.dir {self.location.url} is not where the other runners of job {self.job_name!r} write "
                f"(its {MARKER} object is {'missing' if seen is None else 'different'}); every runner needs the same "
                "output.dir and output.s3"
            )
        await self.bucket.write_text(MARKER, token + "\n")

    # ------------------------------------------------------------------ adoption

    def adoptable(self, name_for: Callable[[int, int], str], spec_hash: str) -> list[OutputRecord] | None:
        """Not for a bucket (the staging folder holds no outputs): the runner awaits :meth:`adopt`."""
        raise NotImplementedError("a bucket's outputs are adopted with adopt()")

    async def adopt(self, name_for: Callable[[int, int], str], spec_hash: str) -> list[OutputRecord] | None:
        """Objects of ``spec_hash`` of this job already under their final keys, all of them:
        a run died after uploading but before recording.  Read from HEAD (the metadata holds
        the digest and dimensions), so nothing is downloaded."""
        assert self.bucket is not None
        for first in dict.fromkeys((name_for(1, 1), name_for(1, 2))):
            head = await self.bucket.head(first)
            if head is None or head.meta.get(META_SPEC) != spec_hash or not same_owner(head.meta, self.job_name):
                continue
            count = int(head.meta.get(META_IMAGE, "1/1").partition("/")[2] or 1)
            records = []
            for i in range(1, count + 1):
                name = name_for(i, count)
                h = head if name == first else await self.bucket.head(name)
                if h is None or h.meta.get(META_SPEC) != spec_hash or not same_owner(h.meta, self.job_name):
                    return None
                try:
                    sha, width, height = h.meta[META_SHA256], int(h.meta[META_WIDTH]), int(h.meta[META_HEIGHT])
                except (KeyError, ValueError):
                    return None
                records.append(OutputRecord(i, name, sha, width, height, h.size))
            return records
        return None

    # ------------------------------------------------------------------ writing

    def write(self, pending: PendingOutputs, dirs: set[Path] | None = None) -> list[OutputRecord]:
        """Not for a bucket: the recorder awaits :meth:`upload` (between its two database trips)."""
        raise NotImplementedError("a bucket's outputs are written with upload()")

    async def upload(self, pending: PendingOutputs) -> list[OutputRecord]:
        """Upload every image of one attempt under its final key, with its metadata; returns the
        records.  Each object appears only complete; an image that fails raises OutputError
        (the caller keeps the bytes in the spool; the images already up are adopted or
        replaced by the next attempt, as they are this item's)."""
        assert self.bucket is not None
        item = str(pending.text.get("batchfuse:item", ""))
        spec = str(pending.text.get("batchfuse:spec", ""))
        count = len(pending.images)
        records: list[OutputRecord] = []
        try:
            for i, (name, img) in enumerate(zip(pending.names, pending.images, strict=True)):
                sha256, size = img.digest()
                source: Path | bytes = img.staged.path if img.staged is not None else img.payload
                meta = object_meta(self.job_name, item, spec, f"{i + 1}/{count}", sha256, img.width, img.height)
                content_type = CONTENT_TYPES.get(PurePosixPath(name).suffix.lower(), "application/octet-stream")
                async with self._uploads:
                    try:
                        await self.bucket.put(name, source, size, meta, content_type)
                    except InputError as exc:  # credentials refused mid-run: the bytes are kept all the same
                        raise OutputError(exc.message) from None
                records.append(pending.record(i, sha256, size))
        finally:  # uploaded, or failed (the spool keeps the reply's bytes): the staged files go either way
            pending.discard()
        return records
