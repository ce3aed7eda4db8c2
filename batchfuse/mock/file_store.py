"""The mock's Files API memory: uploaded and generated files, their resource JSON, and paging.

Shapes follow the v1beta ``File`` resource (ai.google.dev/api/files; google-genai
``types.File``): ``name`` ``files/{id}`` (lowercase letters and digits: the SDK's
``t_file_name`` extracts ids from URIs with ``[a-z0-9]+``), ``sizeBytes`` as a string,
``expirationTime`` 48 h after ``createTime``, ``state`` ``ACTIVE``, ``source`` ``UPLOADED`` or
``GENERATED`` (batch results; only those have a ``downloadUri``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from aiohttp import web

from .validation import InvalidRequest

_ID_ALPHABET = string.ascii_lowercase + string.digits
#: ``files/{id}`` at the end of a ``fileUri`` (the API's own ``https://.../v1beta/files/{id}``,
#: the mock's ``http://127.0.0.1:PORT/v1beta/files/{id}``, or the bare resource name).
_FILE_URI = re.compile(r"(?:^|/)files/([a-z0-9-]+)$")
#: files.list / batches.list: "If unspecified, defaults to 10. Maximum pageSize is 100."
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

T = TypeVar("T")


def new_id(length: int) -> str:
    """A random resource id like the API's: lowercase letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def missing_file(file_id: str) -> InvalidRequest:
    """The API's refusal of a file id it will not confirm: 403 PERMISSION_DENIED."""
    return InvalidRequest(f"You do not have permission to access the File {file_id} or it may not exist.", status=403)


def rfc3339(t: float) -> str:
    """A Unix time as Google's ``Timestamp`` JSON: UTC, ``Z``, microseconds."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def base_url(request: web.BaseRequest) -> str:
    """``scheme://host`` the client reached this mock at (for ``uri`` and upload URLs)."""
    return f"{request.scheme}://{request.host}"


@dataclass
class StoredFile:
    """One file: its bytes and what the ``File`` resource reports."""

    id: str
    seq: int
    data: bytes
    mime_type: str
    display_name: str | None
    source: str  # "UPLOADED" or "GENERATED"
    created: float
    expires: float

    @property
    def name(self) -> str:
        return f"files/{self.id}"

    def resource(self, base: str) -> dict[str, Any]:
        """The ``File`` JSON (proto3 JSON: int64 as a string, unset fields left out)."""
        body: dict[str, Any] = {"name": self.name}
        if self.display_name:
            body["displayName"] = self.display_name
        digest = hashlib.sha256(self.data).hexdigest().encode()
        body.update(
            {
                "mimeType": self.mime_type,
                "sizeBytes": str(len(self.data)),
                "createTime": rfc3339(self.created),
                "updateTime": rfc3339(self.created),
                "expirationTime": rfc3339(self.expires),
                "sha256Hash": base64.b64encode(digest).decode("ascii"),
                "uri": f"{base}/v1beta/{self.name}",
                "state": "ACTIVE",
                "source": self.source,
            }
        )
        if self.source == "GENERATED":
            body["downloadUri"] = f"{base}/download/v1beta/{self.name}:download?alt=media"
        return body


@dataclass
class Upload:
    """A resumable upload session between ``start`` and ``finalize``."""

    declared_size: int
    mime_type: str
    display_name: str | None
    wanted_id: str | None
    received: bytearray = field(default_factory=bytearray)


class FileStore:
    """Files by id and upload sessions by upload id; expired files vanish on access."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.uploads: dict[str, Upload] = {}
        self._seq = 0

    def clear(self) -> None:
        self.files.clear()
        self.uploads.clear()

    def add(
        self, data: bytes, mime_type: str, display_name: str | None, source: str, ttl_s: float,
        file_id: str | None = None,
    ) -> StoredFile:
        self._seq += 1
        now = time.time()
        stored = StoredFile(
            file_id or new_id(12), self._seq, bytes(data), mime_type, display_name, source, now, now + ttl_s
        )
        self.files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """The live file, or ``None`` if unknown or past its ``expirationTime``."""
        stored = self.files.get(file_id)
        if stored is not None and stored.expires <= time.time():
            del self.files[file_id]
            return None
        return stored

    def live(self) -> list[StoredFile]:
        return [f for f in list(self.files.values()) if self.get(f.id) is not None]

    def resolver(self) -> Callable[[dict[str, Any], str], dict[str, Any]]:
        """Turns a ``fileData`` part into the blob it names (``mimeType``, ``data``), or refuses
        it as the API does: 403 ``PERMISSION_DENIED`` "You do not have permission to access the
        File {id} or it may not exist."."""

        def resolve(file_data: dict[str, Any], where: str) -> dict[str, Any]:
            uri = str(file_data.get("fileUri", ""))
            match = _FILE_URI.search(uri)
            stored = self.get(match.group(1)) if match else None
            if stored is None:
                raise missing_file(match.group(1) if match else uri or "(none)")
            return {"mimeType": file_data.get("mimeType") or stored.mime_type, "data": stored.data}

        return resolve


def page(items: Iterable[T], seq_of: Callable[[T], int], query: Any) -> tuple[list[T], str | None]:
    """One page of ``items`` (newest first) for ``pageSize`` / ``pageToken``; the token is
    opaque and stable: it names the last item shown, so new items do not shift later pages."""
    try:
        size = int(query.get("pageSize", DEFAULT_PAGE_SIZE) or DEFAULT_PAGE_SIZE)
    except ValueError:
        raise InvalidRequest(f"Invalid value at 'page_size' (TYPE_INT32), \"{query.get('pageSize')}\"") from None
    if size < 0:
        raise InvalidRequest("page_size must not be negative.")
    size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    ordered = sorted(items, key=seq_of, reverse=True)
    token = query.get("pageToken")
    if token:
        try:
            after = int(base64.urlsafe_b64decode(token.encode()).decode())
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise InvalidRequest("Invalid page token.") from None
        ordered = [item for item in ordered if seq_of(item) < after]
    shown = ordered[:size]
    if len(ordered) <= size:
        return shown, None
    return shown, base64.urlsafe_b64encode(str(seq_of(shown[-1])).encode()).decode()


FILES_KEY = web.AppKey("batchfuse_mock_files", FileStore)


def files_of(app: web.Application) -> FileStore | None:
    """The :class:`FileStore` of a mock app (``None`` for an app built without the Files API)."""
    return app.get(FILES_KEY)
