"""Reference images for a request: each distinct image encoded once per run.

Several requests starting together for the same shared image wait on one encode rather
than each encoding it (single flight), and the encode runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from batchfuse.errors import RejectedError
from batchfuse.images import EncodedImage, ImageProblem
from batchfuse.providers.base import ProviderContext

_inflight: dict[tuple[int, str], asyncio.Future[EncodedImage]] = {}


async def encoded_ref(ctx: ProviderContext, ref: dict[str, Any]) -> EncodedImage:
    cache = ctx.images
    digest = ref["digest"]
    hit = cache.get(digest)
    if hit is not None:
        return hit
    key = (id(cache), digest)
    pending = _inflight.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    fut: asyncio.Future[EncodedImage] = asyncio.get_running_loop().create_future()
    _inflight[key] = fut
    try:
        result = await asyncio.to_thread(cache.local, ref["src"], digest)
    except ImageProblem as exc:
        error = RejectedError(f"reference image {ref['src']}: {exc}", code="bad_reference")
        fut.set_exception(error)
        fut.exception()  # retrieved: waiters re-raise it, nobody else needs to
        raise error from None
    except BaseException as exc:
        fut.set_exception(exc)
        fut.exception()
        raise
    finally:
        _inflight.pop(key, None)
    fut.set_result(result)
    return result


async def encoded_refs(ctx: ProviderContext, refs: list[dict[str, Any]]) -> list[EncodedImage]:
    return [await encoded_ref(ctx, r) for r in refs]
