"""S3-compatible object storage as an output target (``output.dir: s3://bucket/prefix/``).

:class:`Bucket` is the async client of one bucket and prefix (aiobotocore, see
``bench/RESULTS.md`` for why): a write/delete probe, HEAD with the object's metadata, listing,
reading, and :meth:`Bucket.put` — one PUT, or a multipart upload for large images, either of
which makes the object appear under its key only complete.  A PUT is conditional
(``If-None-Match: *``): an object already under the key is overwritten only when its metadata
says it is this item's of this job (an older spec), never another item's or job's.

Credentials come only from botocore's standard chain (``AWS_*`` environment variables,
``~/.aws`` profiles, SSO, container and instance roles) and are registered with
:func:`~batchfuse.errors.register_secret`, so no message can show them.  Transient errors
(5xx, throttling, timeouts, resets) are retried by botocore's ``standard`` retry mode with
exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from batchfuse.errors import InputError, OutputError, register_secret, shorten

T = TypeVar("T")
SCHEME = "s3://"
#: Beside the manifest: where images bound for a bucket are staged before their upload.
STAGING_DIR = ".batchfuse-s3"
#: Images above this size go up as a multipart upload, in parts of this size.
MULTIPART_BYTES = 8 * 1024 * 1024
#: A multipart upload begun this long ago was a killed runner's (an upload must end within its lease).
STALE_UPLOAD_S = 6 * 3600.0
#: Attempts per request (botocore's standard retry mode: backoff with jitter between them).
MAX_ATTEMPTS = 5
#: Object metadata keys (S3 keeps user metadata keys in lower case).
META_JOB, META_ITEM, META_SPEC, META_IMAGE = "batchfuse-job", "batchfuse-item", "batchfuse-spec", "batchfuse-image"
META_SHA256, META_WIDTH, META_HEIGHT = "batchfuse-sha256", "batchfuse-width", "batchfuse-height"
#: Longest metadata value kept as it is; a longer one is kept as its digest.
_META_MAX = 512
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
#: Error codes that mean "this bucket does not exist" and "these credentials are refused".
_NO_BUCKET = {"NoSuchBucket"}
#: Error codes that mean "no object under this key" (HEAD has no body: a bare 404).
_NO_KEY = {"404", "NotFound", "NoSuchKey"}
_REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
            "AllAccessDisabled", "AccountProblem", "403"}


def _env_attempts() -> int:
    """Attempts per request: ``AWS_MAX_ATTEMPTS`` (the AWS SDKs' own setting) or :data:`MAX_ATTEMPTS`."""
    try:
        return max(1, min(20, int(os.environ.get("AWS_MAX_ATTEMPTS", MAX_ATTEMPTS))))
    except ValueError:
        return MAX_ATTEMPTS


def is_object_url(value: str) -> bool:
    return value.lower().startswith(SCHEME)


@dataclass(frozen=True)
class Location:
    """Where a job's outputs go: a bucket, a key prefix ('' or ending in '/'), and how to reach it."""

    bucket: str
    prefix: str
    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None, region: str | None = None) -> Location:
        """``s3://bucket/prefix/`` -> Location; ValueError with the reason when it is not one."""
        if not is_object_url(url):
            raise ValueError(f"{url!r} is not an s3:// URL")
        bucket, _, prefix = url[len(SCHEME):].partition("/")
        if not _BUCKET.match(bucket):
            raise ValueError(f"{bucket!r} is not a bucket name (3-63 lower-case letters, digits, dots, hyphens)")
        prefix = prefix.strip("/")
        parts = prefix.split("/") if prefix else []
        if any(p in ("", ".", "..") for p in parts) or any(not c.isprintable() for c in prefix):
            raise ValueError(f"prefix {prefix!r} must be plain folder names separated by single '/'")
        return cls(bucket, prefix + "/" if prefix else "", endpoint_url, region)

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        return self.prefix + name

    def object_url(self, name: str) -> str:
        return self.url + name

    def http_url(self, name: str) -> str:
        """The object's path-style https URL (the endpoint's, or AWS's for the region)."""
        base = (self.endpoint_url or f"https://s3.{self.region or 'us-east-1'}.amazonaws.com").rstrip("/")
        return f"{base}/{self.bucket}/{quote(self.key(name))}"


def meta_value(text: str) -> str:
    """A metadata value as S3 can carry it (ASCII: percent-encoded; a long one as its digest)."""
    quoted = quote(text, safe="")
    return quoted if len(quoted) <= _META_MAX else "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def object_meta(job: str, item: str, spec: str, image: str, sha256: str, width: int, height: int) -> dict[str, str]:
    """The user metadata every output object carries."""
    return {
        META_JOB: meta_value(job), META_ITEM: meta_value(item), META_SPEC: spec, META_IMAGE: image,
        META_SHA256: sha256, META_WIDTH: str(width), META_HEIGHT: str(height),
    }


def same_owner(meta: Mapping[str, str], job: str) -> bool:
    """Whether an object's metadata names this job."""
    return meta.get(META_JOB) == meta_value(job)


def shown_owner(meta: Mapping[str, str]) -> str:
    """'item X of job Y' from an object's metadata (or that it is no batchfuse output)."""
    if META_JOB not in meta:
        return "an object batchfuse did not write"
    return f"an output of item {unquote(meta.get(META_ITEM, '?'))!r} of job {unquote(meta[META_JOB])!r}"


@dataclass(frozen=True)
class Head:
    """What HEAD says about an object."""

    size: int
    etag: str
    meta: dict[str, str]


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    code = str(error.get("Code") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return code or (str(status) if status else "")


class Bucket:
    """The async client of one :class:`Location`; use as ``async with Bucket(loc) as b:``."""

    def __init__(self, location: Location, *, max_attempts: int | None = None, timeout_s: float = 60.0) -> None:
        self.location = location
        self.max_attempts = max_attempts or _env_attempts()
        self.timeout_s = timeout_s
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        #: Requests sent (tests and the probe count them).
        self.requests = 0
        #: Whether PUTs are conditional (until the store says it does not take If-None-Match).
        self.conditional = True

    async def __aenter__(self) -> Bucket:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError:
            raise InputError(
                f"output.dir {self.location.url} needs the S3 library: pip install 'batchfuse[s3]'"
            ) from None
        session = get_session()
        await self._register_credentials(session)
        config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            connect_timeout=min(self.timeout_s, 20.0), read_timeout=self.timeout_s,
            s3={"addressing_style": "path"} if self.location.endpoint_url else None,
            # checksums only where S3 requires them: several S3-compatible stores refuse the newer default
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        self._stack = contextlib.AsyncExitStack()
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "s3", endpoint_url=self.location.endpoint_url, region_name=self.location.region or None, config=config
            )
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = self._client = None

    async def _register_credentials(self, session: Any) -> None:
        """Make sure no message ever shows the secret (or session token) botocore found."""
        try:
            creds = await session.get_credentials()
        except Exception:  # a broken profile: the first request says so, scrubbed
            return
        if creds is None:
            return
        frozen = await creds.get_frozen_credentials()
        for secret in (frozen.secret_key, frozen.token):
            if secret:
                register_secret(secret)

    # ------------------------------------------------------------------ errors

    def _error(self, exc: BaseException, doing: str) -> InputError | OutputError:
        """One line for a failed request: a missing bucket or refused credentials are the
        user's to fix (InputError, exit 2); anything else is the store's state (OutputError)."""
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        where = self.location.url
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return InputError(
                f"output.dir {where}: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE for a profile in ~/.aws/credentials, or run with an instance role); "
                "credentials are never read from the manifest"
            )
        code = _code(exc)
        if code in _NO_BUCKET or (code == "404" and doing.startswith("probe")):
            return InputError(f"output.dir {where}: bucket {self.location.bucket!r} does not exist ({doing})")
        if code in _REFUSED:
            return InputError(
                f"output.dir {where}: the storage refused these credentials ({code}, {doing}); "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile"
            )
        detail = shorten(f"{type(exc).__name__}: {exc}", 300)
        return OutputError(f"cannot {doing} {where}: {detail}")

    async def _call(self, doing: str, op: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        """One request; with ``missing_ok``, None when there is no object under the key."""
        self.requests += 1
        try:
            return await getattr(self._client, op)(Bucket=self.location.bucket, **kwargs)
        except (InputError, OutputError):
            raise
        except Exception as exc:
            if missing_ok and _code(exc) in _NO_KEY:
                return None
            raise self._error(exc, doing) from None

    # ------------------------------------------------------------------ operations

    async def probe(self) -> None:
        """A tiny write and delete under the prefix: the bucket exists, these credentials may
        write and delete there.  InputError / OutputError otherwise, before anything is paid."""
        key = self.location.key(f".batchfuse-probe-{uuid.uuid4().hex}")
        await self._call("probe (write) of", "put_object", Key=key, Body=b"batchfuse write probe\n")
        await self._call("probe (delete) in", "delete_object", Key=key)

    async def abort_stale_uploads(self, older_than_s: float = STALE_UPLOAD_S) -> int:
        """Abort multipart uploads under the prefix begun over ``older_than_s`` ago (a killed
        runner's, never completed: invisible, but stored and billed); returns how many.  Best
        effort: credentials that may not list or abort them change nothing."""
        import time

        try:
            r = await self._call("list uploads in", "list_multipart_uploads", Prefix=self.location.prefix)
        except (InputError, OutputError):
            return 0
        aborted = 0
        for up in r.get("Uploads", ()):
            started = up.get("Initiated")
            if started is None or started.timestamp() > time.time() - older_than_s:
                continue
            try:
                await self._call("abort an upload in", "abort_multipart_upload", Key=up["Key"], UploadId=up["UploadId"])
                aborted += 1
            except (InputError, OutputError):
                continue
        return aborted

    async def head(self, name: str) -> Head | None:
        """The object's size, ETag and metadata; None when there is none under ``name``."""
        r = await self._call(f"read {name} in", "head_object", missing_ok=True, Key=self.location.key(name))
        if r is None:
            return None
        return Head(int(r.get("ContentLength", 0)), str(r.get("ETag", "")).strip('"'), dict(r.get("Metadata") or {}))

    async def names(self) -> AsyncIterator[tuple[str, int, str, float]]:
        """Every object under the prefix: (name relative to it, size, ETag, when it was last written)."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": self.location.prefix}
            if token:
                kwargs["ContinuationToken"] = token
            r = await self._call("list", "list_objects_v2", **kwargs)
            for obj in r.get("Contents", ()):
                modified = obj.get("LastModified")
                yield (obj["Key"][len(self.location.prefix):], int(obj.get("Size", 0)), str(obj.get("ETag", "")).strip('"'),
                       modified.timestamp() if modified is not None else 0.0)
            if not r.get("IsTruncated"):
                return
            token = r.get("NextContinuationToken")

    async def read(self, name: str) -> bytes:
        r = await self._call(f"read {name} in", "get_object", Key=self.location.key(name))
        async with r["Body"] as body:
            return await body.read()

    async def read_text(self, name: str) -> str | None:
        """The object's text; None when there is no object under ``name``."""
        r = await self._call(f"read {name} in", "get_object", missing_ok=True, Key=self.location.key(name))
        if r is None:
            return None
        async with r["Body"] as body:
            return (await body.read()).decode("utf-8", "replace")

    async def write_text(self, name: str, text: str) -> None:
        await self._call(f"write {name} in", "put_object", Key=self.location.key(name), Body=text.encode("utf-8"))

    async def put(self, name: str, source: Path | bytes, size: int, meta: dict[str, str], content_type: str) -> str:
        """Upload ``source`` (a file, or the bytes) under ``name``; returns the ETag.

        Conditional: when an object is already there, it is replaced only if its metadata names
        the same job and item (this item's output from an older spec); another item's or job's
        object is never overwritten (OutputError).
        """
        key = self.location.key(name)
        if self.conditional:
            try:
                return await self._put(key, source, size, meta, content_type, {"IfNoneMatch": "*"})
            except _Precondition:
                pass
            except _Unsupported:  # a store without conditional writes: HEAD first, then a plain PUT
                self.conditional = False
        existing = await self.head(name)
        if existing is None:  # deleted meanwhile: plain create
            return await self._put(key, source, size, meta, content_type, {})
        if any(existing.meta.get(k) != meta[k] for k in (META_JOB, META_ITEM)):  # both as stored, encoded alike
            raise OutputError(
                f"{self.location.object_url(name)} is {shown_owner(existing.meta)}; it is not overwritten "
                "(give each job its own output.dir prefix)"
            )
        if not self.conditional:
            return await self._put(key, source, size, meta, content_type, {})
        try:
            return await self._put(key, source, size, meta, content_type, {"IfMatch": f'"{existing.etag}"'})
        except _Precondition:
            raise OutputError(f"{self.location.object_url(name)} changed while it was being replaced") from None

    async def _put(
        self, key: str, source: Path | bytes, size: int, meta: dict[str, str], content_type: str,
        condition: dict[str, str],
    ) -> str:
        common = {"Key": key, "Metadata": meta, "ContentType": content_type}
        doing = f"upload {key[len(self.location.prefix):]} to"
        try:
            if size <= MULTIPART_BYTES:
                body = source if isinstance(source, bytes) else await asyncio.to_thread(source.read_bytes)
                self.requests += 1
                r = await self._client.put_object(Bucket=self.location.bucket, Body=body, **common, **condition)
                return str(r.get("ETag", "")).strip('"')
            return await self._multipart(common, source, size, condition)
        except (InputError, OutputError):
            raise
        except Exception as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise _Precondition() from None
            if condition and _code(exc) in ("NotImplemented", "501"):
                raise _Unsupported() from None
            raise self._error(exc, doing) from None

    async def _multipart(self, common: dict[str, Any], source: Path | bytes, size: int, condition: dict[str, str]) -> str:
        """Parts of :data:`MULTIPART_BYTES` read one at a time (a file is never held whole);
        the object exists only once the upload is completed, and a failed one is aborted."""
        bucket = self.location.bucket
        self.requests += 1
        up = await self._client.create_multipart_upload(Bucket=bucket, **common)
        upload_id = up["UploadId"]
        try:
            parts = []
            with contextlib.ExitStack() as files:
                f = files.enter_context(open(source, "rb")) if isinstance(source, Path) else None
                for number, start in enumerate(range(0, size, MULTIPART_BYTES), start=1):
                    if f is not None:
                        piece = await asyncio.to_thread(f.read, MULTIPART_BYTES)
                    else:
                        piece = source[start:start + MULTIPART_BYTES]  # type: ignore[index]
                    self.requests += 1
                    r = await self._client.upload_part(
                        Bucket=bucket, Key=common["Key"], UploadId=upload_id, PartNumber=number, Body=piece
                    )
                    parts.append({"PartNumber": number, "ETag": r["ETag"]})
            self.requests += 1
            r = await self._client.complete_multipart_upload(
                Bucket=bucket, Key=common["Key"], UploadId=upload_id, MultipartUpload={"Parts": parts}, **condition
            )
            return str(r.get("ETag", "")).strip('"')
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._client.abort_multipart_upload(Bucket=bucket, Key=common["Key"], UploadId=upload_id))
            raise


class _Precondition(Exception):
    """The conditional PUT found an object under the key (or it changed)."""


class _Unsupported(Exception):
    """The store does not take conditional writes (501 NotImplemented)."""


# ---------------------------------------------------------------------- sync callers


def run_sync(make: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
    """Run a coroutine to its end from synchronous code (planning, review commands): in this
    thread when no event loop runs in it, else in a helper thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make)  # type: ignore[arg-type]
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(make)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=runner, name="batchfuse-s3-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def list_names(location: Location) -> dict[str, tuple[int, str, float]]:
    """Every object under the prefix: name -> (size, ETag, last written).  One request per 1,000 objects."""
    async with Bucket(location) as bucket:
        return {name: (size, etag, modified) async for name, size, etag, modified in bucket.names()}


async def download(location: Location, wanted: list[tuple[str, Path]]) -> None:
    """Each object ``name`` into the local ``path`` (8 at a time; each file appears complete)."""
    async with Bucket(location) as bucket:
        sem = asyncio.Semaphore(8)

        async def one(name: str, path: Path) -> None:
            async with sem:
                data = await bucket.read(name)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
            await asyncio.to_thread(tmp.write_bytes, data)
            os.replace(tmp, path)

        await asyncio.gather(*(one(n, p) for n, p in wanted))


async def heads(location: Location, names: list[str]) -> dict[str, Head]:
    """HEAD of each of ``names`` (16 at a time); the ones that are not there are left out."""
    async with Bucket(location) as bucket:
        sem = asyncio.Semaphore(16)

        async def one(name: str) -> tuple[str, Head | None]:
            async with sem:
                return name, await bucket.head(name)

        found = await asyncio.gather(*(one(n) for n in names))
    return {name: head for name, head in found if head is not None}
