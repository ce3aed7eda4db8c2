"""Reference images for a request: each distinct image read (or downloaded) and encoded once
per run.

Several requests starting together for the same shared image wait on one encode rather than
each doing it (single flight); the work runs in a worker thread.  URL images are downloaded
through the guarded :class:`~batchfuse.providers.fetch.Fetcher`.
"""

from __future__ import annotations

import asyncio
from functools import partial

from batchfuse.errors import RejectedError, shorten
from batchfuse.images import EncodedImage, ImageProblem
from batchfuse.providers.base import ProviderContext
from batchfuse.providers.fetch import is_url
from batchfuse.providers.http import not_an_image
from batchfuse.records import ImageRef

_inflight: dict[tuple[int, str], asyncio.Future[EncodedImage]] = {}


async def _load(ctx: ProviderContext, ref: ImageRef) -> EncodedImage:
    src, digest = ref.src, ref.digest
    try:
        if is_url(src):
            fetched = await ctx.fetcher.get(src)
            if (kind := not_an_image(fetched.content_type)) is not None:
                raise ImageProblem(f"the server says it is {kind}, not an image")
            return await asyncio.to_thread(partial(ctx.images.put, digest, fetched.data, downloaded=True, fit=ref.fit))
        return await asyncio.to_thread(ctx.images.local, src, digest, ref.fit)
    except ImageProblem as exc:
        raise RejectedError(f"reference image {shorten(src, 200)}: {exc}", code="bad_reference") from None
    except RejectedError as exc:  # refused, expired (403/404/410) or too large: this item's problem
        raise RejectedError(f"reference image: {exc.message}", status=exc.status, code=exc.code) from None


async def encoded_ref(ctx: ProviderContext, ref: ImageRef) -> EncodedImage:
    """The encoded form of one reference image of the item's spec."""
    hit = ctx.images.get(ref.cache_key)
    if hit is not None:
        return hit
    key = (id(ctx.images), ref.cache_key)
    pending = _inflight.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    fut: asyncio.Future[EncodedImage] = asyncio.get_running_loop().create_future()
    _inflight[key] = fut
    try:
        result = await _load(ctx, ref)
    except BaseException as exc:
        fut.set_exception(exc)
        fut.exception()  # marked retrieved: waiters re-raise it
        raise
    finally:
        _inflight.pop(key, None)
    fut.set_result(result)
    return result


async def encoded_refs(ctx: ProviderContext, refs: tuple[ImageRef, ...]) -> list[EncodedImage]:
    return list(await asyncio.gather(*(encoded_ref(ctx, r) for r in refs)))
