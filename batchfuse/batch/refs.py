"""Reference images through the Files API: each distinct image (by content digest, fitting step and the
run's ``reference_images.max_side``) is uploaded once and used by every request as a
``file_data`` URI until shortly before it expires (48 h at Gemini), then uploaded again.
"""

from __future__ import annotations

import base64
import logging
import tempfile
import time
from pathlib import Path

from batchfuse.batch.context import BatchContext
from batchfuse.providers.batch_base import RemoteFile
from batchfuse.providers.refs import encoded_ref
from batchfuse.records import ImageRef

log = logging.getLogger("batchfuse.run")
#: An uploaded file must outlive a batch created now by this much (a batch's target is 24 h).
KEEP_S = 26 * 3600
#: Within one run, a file known to the run is used until this close to its expiry (an API that
#: keeps files for less than ``KEEP_S`` would otherwise get one upload per request).
IN_RUN_S = 600


class RefUploads:
    """The run's uploaded reference files, by digest (memory: one entry per distinct image)."""

    def __init__(self, ctx: BatchContext) -> None:
        self.ctx = ctx
        self.endpoint = ctx.provider.base_url
        self._files: dict[str, RemoteFile] = {}

    async def files_for(self, refs: tuple[ImageRef, ...]) -> list[RemoteFile]:
        return [await self.file_for(ref) for ref in refs]

    async def file_for(self, ref: ImageRef) -> RemoteFile:
        key = f"{ref.cache_key}@{self.ctx.provider.images.max_side}"
        now = time.time()
        known = self._files.get(key)
        if known is not None and (known.expires_at is None or known.expires_at > now + IN_RUN_S):
            return known  # uploaded (or checked) in this run: good for the batches it submits
        stored = await self.ctx.q(self.ctx.batches.uploaded, self.endpoint, key, now + KEEP_S)
        if stored is not None:
            found = RemoteFile(stored["name"], stored["uri"], stored["mime"], stored["size"], stored["expires_at"])
            self._files[key] = found
            return found
        encoded = await encoded_ref(self.ctx.provider, ref)
        data = base64.b64decode(encoded.b64)
        with tempfile.TemporaryDirectory(prefix="batchfuse-ref-") as tmp:
            path = Path(tmp) / "ref"
            path.write_bytes(data)
            remote = await self.ctx.backend.upload(path, encoded.mime, f"ref-{ref.digest[-16:]}")
        if not remote.mime:
            remote = RemoteFile(remote.name, remote.uri, encoded.mime, remote.size, remote.expires_at)
        self.ctx.outcome.uploads += 1
        await self.ctx.q(self.ctx.batches.put_uploaded, self.endpoint, key, remote.name, remote.uri, remote.mime,
                         remote.size, remote.expires_at)
        log.info("reference image uploaded: %s as %s", ref.src, remote.name,
                 extra={"event": "batch_ref_upload", "file": remote.name})
        self._files[key] = remote
        return remote
