"""The Batch API handlers (create, get, list, cancel, delete), the admin route that moves a batch
on, and :func:`add_batch_routes`, which mounts them with the Files API on a mock app.

Paths are google-genai's for the Gemini Developer API (``batches.py``): ``POST
/v1beta/models/{model}:batchGenerateContent`` with ``{"batch": {"displayName", "inputConfig":
{"fileName"} | {"requests": {"requests": [{"request", "metadata"}]}}}}``, ``GET
/v1beta/batches/{id}``, ``GET /v1beta/batches?pageSize=&pageToken=`` answering ``{"operations":
[...], "nextPageToken"}``, ``POST /v1beta/batches/{id}:cancel`` and ``DELETE
/v1beta/batches/{id}``. An input file holds one ``{"key", "request"}`` per line; the results
file one ``{"key", "response"}`` or ``{"key", "error"}`` per line, shuffled.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .batch_jobs import BATCHES_KEY, STATES, BatchConflict, BatchStore, Line
from .file_store import FILES_KEY, FileStore, files_of, missing_file
from .files_api import (
    begin_keyed,
    handle_delete_file,
    handle_download,
    handle_get_file,
    handle_list_files,
    handle_upload,
    paged_list,
)
from .gemini import MAX_BODY_BYTES, TOO_LARGE, google_error, invalid_request, model_not_found, rate_limited
from .google_json import ANY, ENUM, INT, STR, Kind, normalize_message
from .models import gemini_model
from .state import STATE_KEY
from .validation import InvalidRequest, read_json_object

INPUT_CONFIG: dict[str, Kind] = {
    "fileName": STR,
    "requests": {"requests": ("list", {"request": ANY, "metadata": ANY})},
}
BATCH: dict[str, Kind] = {
    "name": STR, "displayName": STR, "model": STR, "priority": INT, "inputConfig": INPUT_CONFIG,
    "output": ANY, "createTime": STR, "endTime": STR, "updateTime": STR, "batchStats": ANY, "state": ENUM,
}
CREATE_BATCH: dict[str, Kind] = {"batch": BATCH}
NOT_FOUND = "Requested entity was not found."
#: Faults for the next ``create`` calls (admin route ``/_mock/batches/create_faults``).
CREATE_FAULTS_KEY = web.AppKey("batchfuse_mock_create_faults", list)


def _batches(request: web.Request) -> BatchStore:
    return request.app[BATCHES_KEY]


async def handle_create_batch(request: web.Request) -> web.StreamResponse:
    """``POST /v1beta/models/{model}:batchGenerateContent``: a new batch (never deduplicated)."""
    state, entry, refused = begin_keyed(request, "batches")
    model = request.match_info["model"]
    entry["model"] = model
    if refused is not None:
        return state.finish(entry, refused)
    spec = gemini_model(model, state.config.model_aliases)
    if spec is None:
        return state.finish(entry, model_not_found(model, "v1beta", "batchGenerateContent"))
    try:
        body = await read_json_object(request, MAX_BODY_BYTES, TOO_LARGE)
        if state.config.record_bodies:
            entry["body"] = body
        batch = normalize_message(CREATE_BATCH, body).get("batch")
        if not batch:
            raise InvalidRequest("* BatchGenerateContentRequest.batch: batch is required.")
        input_file, lines = _lines(batch.get("inputConfig", {}), files_of(request.app))
    except InvalidRequest as exc:
        return state.finish(entry, invalid_request(exc))
    fault = request.app[CREATE_FAULTS_KEY].pop(0) if request.app[CREATE_FAULTS_KEY] else None
    if fault == "429":  # refused, nothing created
        return state.finish(entry, rate_limited(model, 0.05), fault)
    created = _batches(request).create(spec, batch.get("displayName", ""), input_file, lines)
    if fault == "lost":  # created, but the answer never arrives whole: as a dropped connection would
        return state.finish(entry, google_error(503, "UNAVAILABLE", "The service is currently unavailable."), fault)
    return state.finish(entry, web.json_response(created.operation()))


def _lines(config: dict[str, Any], files: FileStore | None) -> tuple[str | None, list[Line]]:
    """The input file's name (``None`` for inline requests) and the batch's requests."""
    if ("fileName" in config) == ("requests" in config):
        raise InvalidRequest("batch.input_config: set exactly one of file_name and requests.")
    if "requests" in config:
        items = config["requests"].get("requests", [])
        lines = [Line(None, item.get("metadata"), item.get("request")) for item in items]
    else:
        file_id = config["fileName"].removeprefix("files/")
        stored = files.get(file_id) if files is not None else None
        if stored is None:
            raise missing_file(file_id)
        try:
            text = stored.data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"{stored.name} is not UTF-8 JSON Lines.") from None
        lines = [_file_line(number, raw) for number, raw in enumerate(text.splitlines(), 1) if raw.strip()]
    if not lines:
        raise InvalidRequest("batch.input_config: the batch has no requests.")
    return (None if "requests" in config else f"files/{file_id}"), lines


def _file_line(number: int, raw: str) -> Line:
    """One input line ``{"key": ..., "request": {...}}``; an unreadable one becomes a line error."""
    try:
        item = json.loads(raw)
    except ValueError as exc:
        return Line(None, None, None, f"Line {number}: invalid JSON: {exc}")
    if not isinstance(item, dict):
        return Line(None, None, None, f"Line {number}: expected a JSON object.")
    key = item.get("key")
    key = None if key is None else str(key)
    if "request" not in item:
        return Line(key, None, None, f"Line {number}: the line has no request.")
    return Line(key, None, item["request"])


async def handle_get_batch(request: web.Request) -> web.StreamResponse:
    """``GET /v1beta/batches/{id}``: the batch's ``Operation``."""
    state, entry, refused = begin_keyed(request, "batches")
    if refused is not None:
        return state.finish(entry, refused)
    batch = _batches(request).get(request.match_info["name"])
    if batch is None:
        return state.finish(entry, google_error(404, "NOT_FOUND", NOT_FOUND))
    return state.finish(entry, web.json_response(batch.operation()))


async def handle_list_batches(request: web.Request) -> web.StreamResponse:
    """``GET /v1beta/batches``: newest first, ``pageSize`` (default 10, at most 100) and ``pageToken``."""
    state, entry, refused = begin_keyed(request, "batches")
    if refused is not None:
        return state.finish(entry, refused)
    batches = list(_batches(request).batches.values())
    return state.finish(entry, paged_list(request, batches, "operations", lambda b: b.operation()))


async def handle_batch_method(request: web.Request) -> web.StreamResponse:
    """``POST /v1beta/batches/{id}:cancel``: ``{}``; a finished batch answers 400 FAILED_PRECONDITION."""
    state, entry, refused = begin_keyed(request, "batches")
    if refused is not None:
        return state.finish(entry, refused)
    batch_id, _, method = request.match_info["name"].partition(":")
    if method != "cancel":
        return state.finish(entry, google_error(404, "NOT_FOUND", f"Method {method or '(none)'!r} is not found."))
    store = _batches(request)
    batch = store.get(batch_id)
    if batch is None:
        return state.finish(entry, google_error(404, "NOT_FOUND", NOT_FOUND))
    try:
        await store.cancel(batch)
    except BatchConflict as exc:
        return state.finish(entry, google_error(400, "FAILED_PRECONDITION", str(exc)))
    return state.finish(entry, web.json_response({}))


async def handle_delete_batch(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1beta/batches/{id}``: ``{}``; the batch is gone from get and list."""
    state, entry, refused = begin_keyed(request, "batches")
    if refused is not None:
        return state.finish(entry, refused)
    store = _batches(request)
    batch = store.get(request.match_info["name"])
    if batch is None:
        return state.finish(entry, google_error(404, "NOT_FOUND", NOT_FOUND))
    await store.delete(batch)
    return state.finish(entry, web.json_response({}))


async def handle_admin_create_faults(request: web.Request) -> web.Response:
    """``POST /_mock/batches/create_faults`` with ``{"next": ["429" | "lost", ...]}``: how the next
    ``create`` calls end — ``429``: refused (with RetryInfo), no batch made; ``lost``: the batch is
    made but the answer is a 503, as when the connection drops after the server accepted."""
    body = await request.json()
    faults = [str(f) for f in body.get("next", [])]
    if any(f not in ("429", "lost") for f in faults):
        return web.json_response({"error": 'next: a list of "429" or "lost"'}, status=400)
    request.app[CREATE_FAULTS_KEY][:] = faults
    return web.json_response({"next": faults})


async def handle_admin_batch_state(request: web.Request) -> web.Response:
    """``POST /_mock/batches/{id}/state`` with ``{"state": "RUNNING" | "SUCCEEDED" | "FAILED" |
    "CANCELLED" | "EXPIRED"}`` (``BATCH_STATE_`` prefix optional): move the batch on now and
    answer its ``Operation``. ``SUCCEEDED`` answers once its results exist.  For tests of the
    reader: ``"extra_lines": [row, ...]`` adds rows to the results file, ``"repeat_keys": [key,
    ...]`` repeats those keys' rows."""
    store = _batches(request)
    batch = store.get(request.match_info["id"].removeprefix("batches/"))
    if batch is None:
        return web.json_response({"error": "no such batch"}, status=404)
    try:
        body = await request.json()
        wanted = str(body["state"]).upper().removeprefix("BATCH_STATE_")
        batch.extra_rows += list(body.get("extra_lines", []))
        batch.repeat_keys |= {str(k) for k in body.get("repeat_keys", [])}
        await store.force(batch, wanted)
    except (ValueError, KeyError, TypeError) as exc:
        message = f'body must be {{"state": one of {", ".join(STATES[1:])}}}: {exc}'
        return web.json_response({"error": message}, status=400)
    except BatchConflict as exc:
        return web.json_response({"error": str(exc)}, status=409)
    return web.json_response(batch.operation())


def add_batch_routes(app: web.Application) -> None:
    """Mount the Files and Batch APIs (``/v1beta`` only, as the service) and the admin route."""
    files = FileStore()
    app[FILES_KEY] = files
    app[BATCHES_KEY] = BatchStore(app[STATE_KEY], files)
    app[CREATE_FAULTS_KEY] = []
    app.router.add_post("/upload/v1beta/files", handle_upload)
    app.router.add_get("/v1beta/files", handle_list_files)
    app.router.add_get("/v1beta/files/{name}", handle_get_file)
    app.router.add_delete("/v1beta/files/{name}", handle_delete_file)
    app.router.add_get("/download/v1beta/files/{name}", handle_download)
    app.router.add_post("/v1beta/models/{model}:batchGenerateContent", handle_create_batch)
    app.router.add_get("/v1beta/batches", handle_list_batches)
    app.router.add_get("/v1beta/batches/{name}", handle_get_batch)
    app.router.add_post("/v1beta/batches/{name}", handle_batch_method)
    app.router.add_delete("/v1beta/batches/{name}", handle_delete_batch)
    app.router.add_post("/_mock/batches/create_faults", handle_admin_create_faults)
    app.router.add_post("/_mock/batches/{id}/state", handle_admin_batch_state)

    async def stop_batches(_app: web.Application) -> None:
        await asyncio.shield(reset_batches(app))

    app.on_shutdown.append(stop_batches)


async def reset_batches(app: web.Application) -> None:
    """Forget every batch (stopping those still running) and every file."""
    await app[BATCHES_KEY].clear()
    app[FILES_KEY].clear()
    app[CREATE_FAULTS_KEY].clear()


__all__ = ["add_batch_routes", "reset_batches"]
