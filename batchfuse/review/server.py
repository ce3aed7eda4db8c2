"""``batchfuse review``: the review page and its JSON API, served by aiohttp on loopback.

Safety, in order: the server binds 127.0.0.1 unless told otherwise (then a token must be
given, and a warning is printed); every state-changing request must carry the run's token in
the ``X-Batchfuse-Token`` header — a header no cross-site form or simple request can set — else
403 and nothing changes; only the job's own files are served (outputs and kept versions the
store records, the reference images its items name, their thumbnails), anything else is 404,
whatever the path says; the page carries the token and no secret of the job (the store holds
no API key to begin with).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
from pathlib import Path

from aiohttp import web

from batchfuse.outputs.names import VERSIONS_DIR
from batchfuse.outputs.objectstore import download
from batchfuse.providers.fetch import has_scheme
from batchfuse.review import api, events
from batchfuse.review.api import CONTEXT, ReviewContext
from batchfuse.review.report import RefResolver, digest_for, live_page, make_thumbnail, thumb_name
from batchfuse.store.verdicts import is_own_output, item_spec

#: Headers on every response: nothing may frame the page, sniff types or leak the address.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: Files served by suffix (anything else is 404 even if the job names it).
IMAGE_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
}
_SAFE_PATH = re.compile(r"^(?!/)(?!.*(?:^|/)\.\.?(?:/|$))[^\\\x00]+$")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@web.middleware
async def guard(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """The token on every state-changing request; security headers on every response."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        ctx = request.app[CONTEXT]
        sent = request.headers.get("X-Batchfuse-Token", "")
        if not secrets.compare_digest(sent.encode(), ctx.token.encode()):
            response: web.StreamResponse = web.json_response(
                {"error": "missing or wrong X-Batchfuse-Token header"}, status=403
            )
            response.headers.update(SECURITY_HEADERS)
            return response
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        cache = response.headers.get("Cache-Control")
        response.headers.update(SECURITY_HEADERS)
        if cache:  # an image addressed by its digest may be kept
            response.headers["Cache-Control"] = cache
    return response


def _not_found() -> web.HTTPNotFound:
    return web.HTTPNotFound(text="not found")


def _served(path: Path, inside: Path | None) -> Path:
    """``path`` if it is an existing image file (and, with ``inside``, really inside it: a
    symlink pointing out is refused), else 404."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise _not_found() from None
    if inside is not None and not real.is_relative_to(inside.resolve()):
        raise _not_found()
    if not real.is_file() or real.suffix.lower() not in IMAGE_TYPES:
        raise _not_found()
    return real


async def _output_file(request: web.Request) -> Path:
    """The output or kept version named by the request, if the store records it for this job."""
    ctx = request.app[CONTEXT]
    rel = request.match_info["path"]
    if not _SAFE_PATH.match(rel) or not await asyncio.to_thread(is_own_output, ctx.store, ctx.job, rel):
        raise _not_found()
    if ctx.bucket is not None and not rel.startswith(VERSIONS_DIR + "/"):
        return await _from_bucket(ctx, rel, request.query.get("v", ""))
    return _served(ctx.output_dir / rel, ctx.output_dir)


async def _from_bucket(ctx: ReviewContext, rel: str, version: str) -> Path:
    """An output in the bucket, downloaded once per version (the page names it by its digest)
    into a cache beside the thumbnails; without a version, fetched anew each time."""
    cache = ctx.thumbs_dir / "objects" / (re.sub(r"[^0-9a-f]", "", version)[:64] or "latest")
    path = cache / rel
    if not version or not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            await download(ctx.bucket, [(rel, path)])  # type: ignore[arg-type]
        except Exception:  # gone from the bucket, or the bucket unreachable: as if not there
            raise _not_found() from None
    return _served(path, cache)


async def _ref_file(request: web.Request) -> Path:
    """Reference image ``i`` of item ``key``, as the item's spec names it (local files only)."""
    ctx = request.app[CONTEXT]
    spec = await asyncio.to_thread(item_spec, ctx.store, ctx.job, request.match_info["key"])
    try:
        ref = (spec or {}).get("images", [])[int(request.match_info["i"])]
    except (ValueError, IndexError):
        raise _not_found() from None
    src = str(ref.get("src", ""))
    if not src or has_scheme(src):
        raise _not_found()
    return _served(RefResolver(ctx.manifest_dir).resolve(src), None)


#: Outputs are addressed with their digest (``?v=``): the browser may keep them while the page lives.
KEEP = "private, max-age=3600"


def _image(path: Path, cache: bool = False) -> web.FileResponse:
    headers = {"Content-Type": IMAGE_TYPES[path.suffix.lower()]}
    if cache:
        headers["Cache-Control"] = KEEP
    return web.FileResponse(path, headers=headers)


async def _thumbnail(request: web.Request, src: Path, cache: bool = False) -> web.StreamResponse:
    """The cached thumbnail of ``src`` (made once, remade when the source is newer)."""
    ctx = request.app[CONTEXT]
    dest = ctx.thumbs_dir / thumb_name(digest_for(None, src))
    ctx.thumbs_dir.mkdir(exist_ok=True)
    outcome = await asyncio.to_thread(make_thumbnail, src, dest)
    # an image Pillow cannot shrink is sent as it is: the browser may still show it
    return _image(dest if outcome in ("made", "reused") else src, cache)


async def output_file(request: web.Request) -> web.StreamResponse:
    return _image(await _output_file(request), "v" in request.query)


async def output_thumb(request: web.Request) -> web.StreamResponse:
    return await _thumbnail(request, await _output_file(request), "v" in request.query)


async def ref_file(request: web.Request) -> web.StreamResponse:
    return _image(await _ref_file(request))


async def ref_thumb(request: web.Request) -> web.StreamResponse:
    return await _thumbnail(request, await _ref_file(request))


async def page(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    counts = await asyncio.to_thread(ctx.store.shown_counts, ctx.job)
    body = live_page(ctx.job.name, ctx.output_dir, counts, ctx.token)
    return web.Response(text=body, content_type="text/html", charset="utf-8")


def make_app(ctx: ReviewContext) -> web.Application:
    """The review server's application for one job."""
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[CONTEXT] = ctx
    app.router.add_get("/", page)
    api.add_routes(app)
    events.add_routes(app)
    app.router.add_get("/file/out/{path:.+}", output_file)
    app.router.add_get("/thumb/out/{path:.+}", output_thumb)
    app.router.add_get(r"/file/ref/{key}/{i:\d+}", ref_file)
    app.router.add_get(r"/thumb/ref/{key}/{i:\d+}", ref_thumb)
    return app


async def serve(ctx: ReviewContext, host: str, port: int, announce) -> None:  # type: ignore[no-untyped-def]
    """Serve until cancelled; ``announce(url)`` is called once the socket listens."""
    runner = web.AppRunner(make_app(ctx), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else port
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{bound}/")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def token_for(given: str | None) -> str:
    """The run's token: the one given, else a fresh random one."""
    return given or secrets.token_urlsafe(32)
