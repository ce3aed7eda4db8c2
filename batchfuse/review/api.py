"""The review's JSON API: the handlers behind ``batchfuse review`` (the page is one of its clients).

``GET /api/items?state=&verdict=&q=&page=`` — a page of items (filtered and paged in the database)
with their outputs, kept versions, verdicts, counts; ``POST /api/items/{key}/verdict`` — record a
verdict (needs the ``X-Batchfuse-Token`` header; the server checks it before this runs).  Every
file an item names is given as a server address (``/file/...``, ``/thumb/...``) that the server
serves only if it is one of the job's own.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from batchfuse.errors import OutputError, scrub
from batchfuse.outputs.objectstore import Location
from batchfuse.providers.fetch import has_scheme, is_url
from batchfuse.records import Job
from batchfuse.review.picking import judge
from batchfuse.review.report import PAGE_SIZE, clip
from batchfuse.store.queries import Store
from batchfuse.store.verdicts import (
    STATE_FILTERS,
    VERDICT_FILTERS,
    VerdictRefused,
    list_items,
    verdict_counts,
)

#: Largest page a script may ask for.
MAX_PAGE_SIZE = 500


@dataclass
class ReviewContext:
    """What the handlers share: the job's open store, its folders, the run's token."""

    store: Store
    job: Job
    output_dir: Path
    manifest_dir: Path
    thumbs_dir: Path
    token: str
    cost_per_image: float = 0.0
    reviewer: str = ""
    #: The bucket the outputs are in (``output.dir: s3://...``); None: in ``output_dir``.
    bucket: Location | None = None

    def __post_init__(self) -> None:
        if not self.reviewer:
            try:
                self.reviewer = getpass.getuser()
            except Exception:  # no user name in this environment: still a verdict, by "unknown"
                self.reviewer = "unknown"


CONTEXT = web.AppKey("review", ReviewContext)


def _size(o: dict[str, Any]) -> str:
    return f"{o['width']}×{o['height']}" if o.get("width") else ""


def _file(path: str, sha256: str) -> dict[str, str]:
    """Addresses of an output; the digest in the query makes a new image under the same name a
    new address, so the browser never shows a cached earlier one."""
    q = quote(path, safe="/") + f"?v={sha256[:16]}"
    return {"href": f"/file/out/{q}", "thumb": f"/thumb/out/{q}"}


def card(row: dict[str, Any], cost_per_image: float) -> dict[str, Any]:
    """One item as the API gives it: the static report's card plus the review's fields."""
    spec = row.get("spec") or {}
    error = row.get("last_error")
    key_q = quote(row["key"], safe="")
    outputs = [{**_file(o["path"], o["sha256"]), "name": o["path"], "size": _size(o), "sha256": o["sha256"]} for o in row["outputs"]]
    versions = [
        {**(_file(v["path"], v["sha256"]) if v["path"] else {"href": None, "thumb": None, "note": "file was gone"}),
         "name": v["path"] or v["name"], "size": _size(v), "version": v["revision"], "made_at": v["made_at"],
         "sha256": v["sha256"]}
        for v in row["versions"]
    ]
    refs: list[dict[str, Any]] = []
    for i, ref in enumerate(spec.get("images") or []):
        src = str(ref.get("src", ""))
        if has_scheme(src) or not src:
            refs.append({"url": src if is_url(src) else None, "name": src})
        else:
            refs.append({"href": f"/file/ref/{key_q}/{i}", "thumb": f"/thumb/ref/{key_q}/{i}", "name": Path(src).name})
    made = len(outputs) + len(versions)
    return {
        "key": row["key"],
        "state": row["state"],
        "attempts": int(row.get("attempts") or 0),
        "tokens": int(row.get("tokens") or 0),
        "cost": round(made * cost_per_image, 6),
        "prompt": clip(str(spec.get("prompt", ""))),
        "error_class": row.get("error_class"),
        "error": clip(scrub(error)) if error else None,
        "outputs": outputs,
        "versions": versions,
        "refs": refs,
        "verdict": row.get("verdict"),
        "revision": row.get("revision", 0),
        "pick": row.get("pick"),
        "history": row.get("history", []),
    }


def _query(request: web.Request) -> dict[str, Any]:
    q = request.query
    state = q.get("state") or None
    verdict = q.get("verdict") or None
    if state in ("all",):
        state = None
    if verdict in ("all",):
        verdict = None
    if state is not None and state not in STATE_FILTERS:
        raise web.HTTPBadRequest(text=f"state must be one of {', '.join(STATE_FILTERS)}")
    if verdict is not None and verdict not in VERDICT_FILTERS:
        raise web.HTTPBadRequest(text=f"verdict must be one of {', '.join(VERDICT_FILTERS)}")
    try:
        page = max(1, int(q.get("page") or 1))
        size = min(MAX_PAGE_SIZE, max(1, int(q.get("page_size") or PAGE_SIZE)))
    except ValueError:
        raise web.HTTPBadRequest(text="page and page_size must be whole numbers") from None
    return dict(state=state, verdict=verdict, q=(q.get("q") or "").strip() or None, page=page, page_size=size)


def _page(ctx: ReviewContext, args: dict[str, Any]) -> dict[str, Any]:
    rows, total = list_items(ctx.store, ctx.job, **args)
    return {
        "job": ctx.job.name,
        "page": args["page"],
        "page_size": args["page_size"],
        "total": total,
        "counts": ctx.store.shown_counts(ctx.job),
        "verdicts": verdict_counts(ctx.store, ctx.job),
        "items": [card(r, ctx.cost_per_image) for r in rows],
    }


async def get_items(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    data = await asyncio.to_thread(_page, ctx, _query(request))
    return web.json_response(data, dumps=lambda v: json.dumps(v, ensure_ascii=False))


async def post_verdict(request: web.Request) -> web.Response:
    """Record a verdict; the body is ``{"verdict": ..., "note"?, "prompt_extra"?, "new_seed"?, "pick"?}``."""
    ctx = request.app[CONTEXT]
    key = request.match_info["key"]
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    unknown = set(body) - {"verdict", "note", "prompt_extra", "new_seed", "pick"}
    if unknown:
        return web.json_response({"error": f"unknown field(s): {', '.join(sorted(unknown))}"}, status=400)
    pick = body.get("pick")
    if pick is not None and not isinstance(pick, str):
        return web.json_response({"error": "pick must be a string (an output or version path)"}, status=400)
    try:
        review = await asyncio.to_thread(
            judge, ctx.store, ctx.job, ctx.output_dir, key, str(body.get("verdict")), reviewer=ctx.reviewer,
            note=body.get("note"), prompt_extra=body.get("prompt_extra"), new_seed=body.get("new_seed") is True,
            pick=pick,
        )
    except VerdictRefused as exc:
        return web.json_response({"error": exc.message}, status=exc.status)
    except OutputError as exc:  # the verdict stands; its files could not follow (said, never half done)
        return web.json_response({"error": exc.message}, status=500)
    return web.json_response({"ok": True, "review": review})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/items", get_items)
    app.router.add_post("/api/items/{key:.+}/verdict", post_verdict)
