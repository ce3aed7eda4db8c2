"""Gemini's Batch API and Files API, for the batch layer (:mod:`batchfuse.batch`).

Files: the resumable upload protocol (``POST {base}/upload/v1beta/files`` with
``X-Goog-Upload-Protocol: resumable`` and ``X-Goog-Upload-Command: start``, then the bytes to
the ``X-Goog-Upload-URL`` it answers, in chunks, the last one ``upload, finalize``).  Batches:
``POST {base}/v1beta/models/{model}:batchGenerateContent`` with ``{"batch": {"display_name",
"input_config": {"file_name"}}}`` answering a long-running operation ``batches/...``;
``GET /v1beta/batches/{id}``, ``GET /v1beta/batches?pageToken=``, ``POST ...:cancel``.  Results:
``GET {base}/download/v1beta/{file}:download?alt=media``, resumed with ``Range``.

Each result line is read by the online provider's own reply parser, so a batch result is
judged exactly like an online reply.  aiohttp's errors are translated here, as in ``http.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from batchfuse import faultpoints
from batchfuse.errors import FatalError, GoneError, ProviderError, TransientError, scrub, shorten
from batchfuse.providers.base import ProviderContext, Reply
from batchfuse.providers.batch_base import (
    CANCELLED,
    EXPIRED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    BatchBackend,
    RemoteBatch,
    RemoteFile,
    ResultLine,
)
from batchfuse.providers.gemini import GeminiProvider, classify_error, parse_reply
from batchfuse.providers.http import HttpReply
from batchfuse.records import ItemSpec

#: Bytes sent per upload request (a multiple of the service's 256 KiB granularity).
UPLOAD_CHUNK = 8 * 1024 * 1024
#: Bytes read per step of a download (memory stays flat whatever the file's size).
DOWNLOAD_CHUNK = 1024 * 1024
STATES = {
    "BATCH_STATE_PENDING": PENDING, "BATCH_STATE_RUNNING": RUNNING, "BATCH_STATE_SUCCEEDED": SUCCEEDED,
    "BATCH_STATE_FAILED": FAILED, "BATCH_STATE_CANCELLED": CANCELLED, "BATCH_STATE_EXPIRED": EXPIRED,
    "JOB_STATE_PENDING": PENDING, "JOB_STATE_QUEUED": PENDING, "JOB_STATE_RUNNING": RUNNING,
    "JOB_STATE_SUCCEEDED": SUCCEEDED, "JOB_STATE_FAILED": FAILED, "JOB_STATE_CANCELLED": CANCELLED,
    "JOB_STATE_EXPIRED": EXPIRED,
}
#: google.rpc status names of per-line errors -> the HTTP status the online API answers with.
LINE_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ABORTED": 409, "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "INTERNAL": 500, "UNKNOWN": 500, "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}


def _when(value: Any) -> float | None:
    """An RFC 3339 timestamp as UNIX seconds (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def remote_batch(op: Mapping[str, Any]) -> RemoteBatch:
    """A batch from the long-running operation the API answers with."""
    meta = op.get("metadata") if isinstance(op.get("metadata"), dict) else {}
    stats = meta.get("batchStats") if isinstance(meta.get("batchStats"), dict) else {}
    response = op.get("response") if isinstance(op.get("response"), dict) else {}
    output = meta.get("output") if isinstance(meta.get("output"), dict) else {}
    error = op.get("error") if isinstance(op.get("error"), dict) else None
    return RemoteBatch(
        name=str(op.get("name") or meta.get("name") or ""),
        display_name=str(meta.get("displayName") or meta.get("display_name") or ""),
        state=STATES.get(str(meta.get("state") or ""), PENDING),
        request_count=_int(stats.get("requestCount")) or 0,
        succeeded=_int(stats.get("successfulRequestCount")),
        failed=_int(stats.get("failedRequestCount")),
        result_file=response.get("responsesFile") or output.get("responsesFile"),
        error=shorten(str(error.get("message") or error), 300) if error else None,
    )


def _remote_file(data: Any) -> RemoteFile:
    f = data.get("file", data) if isinstance(data, dict) else {}
    if not isinstance(f, dict) or not f.get("name"):
        raise TransientError("the upload's answer names no file", code="bad_upload")
    return RemoteFile(
        name=str(f["name"]), uri=str(f.get("uri") or f["name"]), mime=str(f.get("mimeType") or ""),
        size=_int(f.get("sizeBytes")) or 0, expires_at=_when(f.get("expirationTime")),
    )


def _http_reply(status: int, headers: Mapping[str, str], raw: bytes, latency_ms: float = 0.0) -> HttpReply:
    """An answer of the API with its JSON parsed (None when it is not JSON)."""
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return HttpReply(status, headers, raw, parsed, latency_ms)


class GeminiBatch(BatchBackend):
    """Gemini's Batch and Files APIs through a run's provider context."""

    kind = "gemini"

    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx
        self.base = ctx.base_url

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"x-goog-api-key": self.ctx.credentials.secret(), **(extra or {})}

    async def _call(
        self, method: str, url: str, *, body: Any = None, data: bytes | None = None,
        headers: Mapping[str, str] | None = None, ok: tuple[int, ...] = (200,),
    ) -> HttpReply:
        """One request; a status outside ``ok`` raises the error Gemini's online rules give it."""
        started = time.monotonic()
        payload = json.dumps(body).encode() if body is not None else data
        hdrs = self._headers(headers)
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            async with self.ctx.session.request(
                method, url, data=payload, headers=hdrs, timeout=aiohttp.ClientTimeout(total=self.ctx.timeout_s)
            ) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except (asyncio.TimeoutError, TimeoutError):
            raise TransientError(f"no reply within {self.ctx.timeout_s:g} s (timeout)", code="timeout") from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"connection failed: {scrub(str(exc)) or type(exc).__name__}", code="connection") from None
        reply = _http_reply(status, resp_headers, raw, (time.monotonic() - started) * 1000)
        if status not in ok:
            raise classify_error(reply)
        return reply

    async def upload(self, path: Path, mime: str, display_name: str) -> RemoteFile:
        size = path.stat().st_size
        start = await self._call(
            "POST", f"{self.base}/upload/v1beta/files", body={"file": {"display_name": display_name}},
            headers={"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
                     "X-Goog-Upload-Header-Content-Length": str(size), "X-Goog-Upload-Header-Content-Type": mime},
        )
        url = start.headers.get("X-Goog-Upload-URL")
        if not url:
            raise TransientError("the upload start did not answer an upload URL", code="bad_upload")
        offset, tries = 0, 0
        with path.open("rb") as f:
            while True:
                f.seek(offset)
                chunk = f.read(UPLOAD_CHUNK)
                last = offset + len(chunk) >= size
                try:
                    reply = await self._call("POST", url, data=chunk, headers={
                        "X-Goog-Upload-Command": "upload, finalize" if last else "upload",
                        "X-Goog-Upload-Offset": str(offset)})
                except TransientError:
                    tries += 1
                    if tries > 3:
                        raise
                    query = await self._call("POST", url, headers={"X-Goog-Upload-Command": "query"})
                    offset = _int(query.headers.get("X-Goog-Upload-Size-Received")) or 0
                    continue
                if last:
                    return _remote_file(reply.data)
                offset += len(chunk)

    async def create(self, display_name: str, input_file: RemoteFile) -> RemoteBatch:
        reply = await self._call(
            "POST", f"{self.base}/v1beta/models/{self.ctx.model}:batchGenerateContent",
            body={"batch": {"display_name": display_name, "input_config": {"file_name": input_file.name}}},
        )
        return remote_batch(reply.data if isinstance(reply.data, dict) else {})

    async def get(self, name: str) -> RemoteBatch:
        reply = await self._call("GET", f"{self.base}/v1beta/{name}")
        return remote_batch(reply.data if isinstance(reply.data, dict) else {})

    async def list(self) -> AsyncIterator[RemoteBatch]:  # type: ignore[override]
        token = ""
        while True:
            query = "pageSize=100" + (f"&pageToken={token}" if token else "")
            reply = await self._call("GET", f"{self.base}/v1beta/batches?{query}")
            data = reply.data if isinstance(reply.data, dict) else {}
            for op in data.get("operations") or data.get("batches") or []:
                if isinstance(op, dict):
                    yield remote_batch(op)
            token = str(data.get("nextPageToken") or "")
            if not token:
                return

    async def cancel(self, name: str) -> None:
        try:
            await self._call("POST", f"{self.base}/v1beta/{name}:cancel")
        except ProviderError as exc:
            if exc.status not in (400, 409):  # FAILED_PRECONDITION: it has ended already
                raise

    async def download(self, result_file: str, dest: Path) -> int:
        have = dest.stat().st_size if dest.exists() else 0
        headers = self._headers({"Range": f"bytes={have}-"} if have else None)
        url = f"{self.base}/download/v1beta/{result_file}:download?alt=media"
        try:
            async with self.ctx.session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_read=self.ctx.timeout_s)
            ) as resp:
                if resp.status == 416:
                    return have
                if resp.status in (403, 404, 410):  # the results file has expired or is gone
                    raise GoneError(f"the results file {result_file} is no longer served (HTTP {resp.status})",
                                    status=resp.status, code="gone")
                if resp.status not in (200, 206):
                    raise classify_error(_http_reply(resp.status, resp.headers, await resp.read()))
                mode = "ab" if resp.status == 206 else "wb"  # 200: the server restarts from byte 0
                with dest.open(mode) as f:
                    async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                        f.write(chunk)
                        f.flush()
                        faultpoints.hit("batch.download")
                    f.flush()
                    os.fsync(f.fileno())
        except (asyncio.TimeoutError, TimeoutError):
            raise TransientError("the result download stalled (timeout)", code="timeout") from None
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"the result download failed: {scrub(str(exc)) or type(exc).__name__}", code="download"
            ) from None
        return dest.stat().st_size

    def request_line(self, key: str, spec: ItemSpec, files: list[RemoteFile]) -> dict[str, Any]:
        parts = [{"file_data": {"mime_type": f.mime, "file_uri": f.uri}} for f in files]
        return {"key": key, "request": GeminiProvider.build_body(self.ctx.model, spec, parts)}

    def result_line(self, line: dict[str, Any]) -> ResultLine:
        return result_line(line)


def result_line(line: dict[str, Any]) -> ResultLine:
    """One line of a Gemini results file, judged exactly like an online reply (the same parser
    and error classes; a line's 403/404 is retried rather than fatal: it is one request's)."""
    key = line.get("key")
    key = str(key) if key is not None else None
    if isinstance(line.get("response"), dict):
        try:
            return ResultLine(key, reply=reply_from_dict(line["response"]))
        except ProviderError as exc:
            return ResultLine(key, error=exc)
    err = line.get("error") if isinstance(line.get("error"), dict) else {}
    status_name = str(err.get("status") or "")
    if not err:
        return ResultLine(key, error=TransientError("a result line with neither response nor error", code="bad_line"))
    status = LINE_STATUS.get(status_name, 500)
    error = classify_error(HttpReply(status, {}, b"", {"error": err}, 0.0))
    if isinstance(error, FatalError):
        # One line's 403/404 (an expired reference file, say) is not the whole job's: retry it.
        error = TransientError(error.message, status=status, code=status_name or str(status))
    return ResultLine(key, error=error)


def reply_from_dict(data: dict[str, Any]) -> Reply:
    """A reply body already parsed into a dict, judged by the online provider's parser
    (:func:`batchfuse.providers.gemini.parse_reply`)."""
    return parse_reply(HttpReply(200, {}, b"", data, 0.0))
