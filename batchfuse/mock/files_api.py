"""The Files API handlers: resumable upload, get, list, delete and ``:download`` with Range.

Upload is Google's resumable protocol as google-genai speaks it (``files.upload``:
``_extra_utils.prepare_resumable_upload`` and ``_api_client._upload_fd``): ``POST
/upload/v1beta/files`` with ``X-Goog-Upload-Protocol: resumable``, ``X-Goog-Upload-Command:
start``, ``X-Goog-Upload-Header-Content-Length`` / ``-Content-Type`` and an optional ``{"file":
{...}}`` body answers ``X-Goog-Upload-URL``; the bytes then go to that URL with
``X-Goog-Upload-Command: upload[, finalize]`` and ``X-Goog-Upload-Offset``, each answer saying
``X-Goog-Upload-Status: active`` or ``final`` (the last with ``{"file": File}``); ``query``
reports ``X-Goog-Upload-Size-Received``. An unknown or foreign file answers 403
``PERMISSION_DENIED`` "You do not have permission to access the File ... or it may not exist.",
as the service does for ids it will not confirm.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from .file_store import FileStore, StoredFile, Upload, base_url, files_of, missing_file, page
from .gemini import google_error, invalid_request, key_refusal
from .google_json import INT, STR, Kind, normalize_message
from .state import MockState, state_of
from .validation import InvalidRequest

FILE_FIELDS: dict[str, Kind] = {
    "name": STR, "displayName": STR, "mimeType": STR, "sizeBytes": INT, "createTime": STR, "updateTime": STR,
    "expirationTime": STR, "sha256Hash": STR, "uri": STR, "downloadUri": STR, "state": STR, "source": STR,
    "error": {}, "videoMetadata": {},
}
CREATE_FILE: dict[str, Kind] = {"file": FILE_FIELDS}
#: google-genai uploads in 8 MiB chunks; the service announces the same granularity.
CHUNK_GRANULARITY = 8 * 1024 * 1024
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def no_such_file(file_id: str) -> web.Response:
    return invalid_request(missing_file(file_id))


def _store(request: web.Request) -> FileStore:
    store = files_of(request.app)
    assert store is not None
    return store


def begin_keyed(request: web.Request, api: str) -> tuple[MockState, dict[str, Any], web.Response | None]:
    """The state, a log entry, and the key refusal if any (Files and Batch routes need a key)."""
    state = state_of(request)
    entry = state.begin(request, api)
    refused = key_refusal(request, state)
    if refused is None:
        entry["key_ok"] = True
    return state, entry, refused


def _upload_headers(status: str, size: int | None = None) -> dict[str, str]:
    headers = {"X-Goog-Upload-Status": status}
    if size is not None:
        headers["X-Goog-Upload-Size-Received"] = str(size)
    return headers


async def handle_upload(request: web.Request) -> web.StreamResponse:
    """``POST /upload/v1beta/files``: start a resumable upload, or (``?upload_id=``) send its bytes."""
    if "upload_id" in request.query:
        return await _upload_bytes(request)
    state, entry, refused = begin_keyed(request, "files")
    if refused is not None:
        return state.finish(entry, refused)
    try:
        upload = await _start(request)
    except InvalidRequest as exc:
        return state.finish(entry, invalid_request(exc))
    upload_id = secrets.token_urlsafe(24)
    _store(request).uploads[upload_id] = upload
    headers = _upload_headers("active")
    headers["X-Goog-Upload-URL"] = (
        f"{base_url(request)}/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable"
    )
    headers["X-Goog-Upload-Chunk-Granularity"] = str(CHUNK_GRANULARITY)
    return state.finish(entry, web.Response(status=200, headers=headers))


async def _start(request: web.Request) -> Upload:
    headers = request.headers
    if headers.get("X-Goog-Upload-Protocol", "").lower() != "resumable":
        raise InvalidRequest("This mock takes the resumable upload protocol only (X-Goog-Upload-Protocol: resumable).")
    if headers.get("X-Goog-Upload-Command", "").lower() != "start":
        raise InvalidRequest("A resumable upload starts with X-Goog-Upload-Command: start.")
    raw = await request.read()
    meta: dict[str, Any] = {}
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise InvalidRequest(f"Invalid JSON payload received. {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequest("Invalid JSON payload received. Expected an object.")
        meta = normalize_message(CREATE_FILE, body).get("file", {})
    size_text = headers.get("X-Goog-Upload-Header-Content-Length", meta.get("sizeBytes", ""))
    if not str(size_text).isdigit():
        raise InvalidRequest("X-Goog-Upload-Header-Content-Length must give the file's size in bytes.")
    mime = headers.get("X-Goog-Upload-Header-Content-Type") or meta.get("mimeType")
    if not mime:
        raise InvalidRequest("X-Goog-Upload-Header-Content-Type (or file.mimeType) must give the file's type.")
    wanted = meta.get("name")
    if wanted is not None:
        wanted = wanted.removeprefix("files/")
        if not wanted or len(wanted) > 40 or not set(wanted) <= _ID_CHARS or wanted.startswith("-"):
            raise InvalidRequest(f"Invalid file name {meta['name']!r}: use lowercase letters, digits and dashes.")
        if _store(request).get(wanted) is not None:
            raise InvalidRequest(f"A file named files/{wanted} already exists.", status=409)
    return Upload(int(size_text), mime, meta.get("displayName"), wanted)


async def _upload_bytes(request: web.Request) -> web.StreamResponse:
    """Bytes to an upload URL (no key needed: the upload id is the credential, as at Google)."""
    state = state_of(request)
    entry = state.begin(request, "files")
    store = _store(request)
    upload_id = request.query["upload_id"]
    upload = store.uploads.get(upload_id)
    if upload is None:
        return state.finish(entry, google_error(404, "NOT_FOUND", "No such upload session."))
    command = {part.strip().lower() for part in request.headers.get("X-Goog-Upload-Command", "").split(",")}
    data = await request.read()
    if "query" in command:
        return state.finish(entry, web.Response(headers=_upload_headers("active", len(upload.received))))
    if not command & {"upload", "finalize"}:
        return state.finish(entry, google_error(400, "INVALID_ARGUMENT", "Unknown X-Goog-Upload-Command."))
    if "upload" in command:
        offset = request.headers.get("X-Goog-Upload-Offset", "")
        if offset != str(len(upload.received)):
            message = f"X-Goog-Upload-Offset {offset or '(none)'} does not match the {len(upload.received)} bytes received."
            response = google_error(400, "INVALID_ARGUMENT", message)
            response.headers.update(_upload_headers("active", len(upload.received)))
            return state.finish(entry, response)
        if len(upload.received) + len(data) > upload.declared_size:
            del store.uploads[upload_id]
            message = f"More bytes than the declared X-Goog-Upload-Header-Content-Length ({upload.declared_size})."
            response = google_error(400, "INVALID_ARGUMENT", message)
            response.headers.update(_upload_headers("final"))
            return state.finish(entry, response)
        upload.received += data
    if "finalize" not in command:
        return state.finish(entry, web.Response(headers=_upload_headers("active", len(upload.received))))
    if len(upload.received) != upload.declared_size:
        message = f"Upload finalized with {len(upload.received)} of {upload.declared_size} declared bytes."
        response = google_error(400, "INVALID_ARGUMENT", message)
        response.headers.update(_upload_headers("active", len(upload.received)))
        return state.finish(entry, response)
    del store.uploads[upload_id]
    stored = store.add(
        bytes(upload.received), upload.mime_type, upload.display_name, "UPLOADED", state.config.file_ttl_s,
        file_id=upload.wanted_id,
    )
    response = web.json_response({"file": stored.resource(base_url(request))}, headers=_upload_headers("final"))
    return state.finish(entry, response)


async def handle_get_file(request: web.Request) -> web.StreamResponse:
    """``GET /v1beta/files/{id}`` (the ``File``), or ``GET /v1beta/files/{id}:download?alt=media``
    (the bytes, where google-genai's ``files.download`` fetches them)."""
    file_id, _, method = request.match_info["name"].partition(":")
    if method == "download":
        return await handle_download(request)
    state, entry, refused = begin_keyed(request, "files")
    if refused is not None:
        return state.finish(entry, refused)
    if method:
        return state.finish(entry, google_error(404, "NOT_FOUND", f"Method {method!r} is not found."))
    stored = _store(request).get(file_id)
    if stored is None:
        return state.finish(entry, no_such_file(file_id))
    return state.finish(entry, web.json_response(stored.resource(base_url(request))))


async def handle_list_files(request: web.Request) -> web.StreamResponse:
    """``GET /v1beta/files?pageSize=&pageToken=``: ``{"files": [...], "nextPageToken"}``, newest first."""
    state, entry, refused = begin_keyed(request, "files")
    if refused is not None:
        return state.finish(entry, refused)
    base = base_url(request)
    return state.finish(entry, paged_list(request, _store(request).live(), "files", lambda f: f.resource(base)))


def paged_list(request: web.Request, items: Iterable[Any], field: str, render: Callable[[Any], Any]) -> web.Response:
    """A list answer: ``{field: [...], "nextPageToken"}`` for ``pageSize`` / ``pageToken`` (items
    have a ``seq``); proto3 JSON leaves an empty list and an absent token out."""
    try:
        shown, token = page(items, lambda item: item.seq, request.query)
    except InvalidRequest as exc:
        return invalid_request(exc)
    body: dict[str, Any] = {}
    if shown:
        body[field] = [render(item) for item in shown]
    if token:
        body["nextPageToken"] = token
    return web.json_response(body)


async def handle_delete_file(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1beta/files/{id}``: ``{}``."""
    state, entry, refused = begin_keyed(request, "files")
    if refused is not None:
        return state.finish(entry, refused)
    file_id = request.match_info["name"]
    store = _store(request)
    if store.get(file_id) is None:
        return state.finish(entry, no_such_file(file_id))
    del store.files[file_id]
    return state.finish(entry, web.json_response({}))


async def handle_download(request: web.Request) -> web.StreamResponse:
    """``GET /download/v1beta/files/{id}:download?alt=media`` (the REST docs' path) and the same
    under ``/v1beta`` (google-genai's): a generated file's bytes; ``Range: bytes=a-b`` answers
    206 with ``Content-Range`` (a runner resumes a big results download), 416 past the end."""
    state, entry, refused = begin_keyed(request, "files")
    if refused is not None:
        return state.finish(entry, refused)
    file_id, _, method = request.match_info["name"].partition(":")
    if method != "download":
        return state.finish(entry, google_error(404, "NOT_FOUND", f"Method {method or '(none)'!r} is not found."))
    if request.query.get("alt") != "media":
        return state.finish(entry, google_error(400, "INVALID_ARGUMENT", "Downloads need ?alt=media."))
    stored = _store(request).get(file_id)
    if stored is None:
        return state.finish(entry, no_such_file(file_id))
    if stored.source != "GENERATED":
        # google-genai files.download: "Only generated files can be downloaded, uploaded files can't be".
        message = f"Only generated files can be downloaded; files/{file_id} was uploaded."
        return state.finish(entry, google_error(400, "INVALID_ARGUMENT", message))
    return state.finish(entry, _ranged(request, stored))


def _ranged(request: web.Request, stored: StoredFile) -> web.Response:
    data, size = stored.data, len(stored.data)
    headers = {"Accept-Ranges": "bytes"}
    if "Range" not in request.headers:
        return web.Response(body=data, content_type=stored.mime_type, headers=headers)
    try:
        wanted = request.http_range
    except ValueError:
        wanted = None
    start = 0 if wanted is None or wanted.start is None else wanted.start
    if start < 0:  # bytes=-N: the last N bytes
        start = max(0, size + start)
    stop = size if wanted is None or wanted.stop is None else min(wanted.stop, size)
    if wanted is None or start >= size or start >= stop:
        headers["Content-Range"] = f"bytes */{size}"
        return web.Response(status=416, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return web.Response(status=206, body=data[start:stop], content_type=stored.mime_type, headers=headers)
