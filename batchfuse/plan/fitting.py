"""The request-size limit at plan time: each item's request body measured from its encoded
reference images, and (``reference_images.fit``) the gentlest fitting step that brings it under
the limit.

A fitting step re-encodes every local reference image of the item (see
:func:`batchfuse.images.fit_steps`); it is recorded on each :class:`~batchfuse.records.ImageRef`,
so it is part of the spec and its hash, and the runner encodes exactly the bytes measured here.
Sizes are memoized per image and step: an image shared by many items is encoded once per step.
URL images are counted by the length of their URL (their bytes are not known before the run; the
Gemini provider checks the real body before it sends).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from batchfuse.images import ImageInfo, ImageProblem, b64_len, encode, read_file, remembered
from batchfuse.records import ImageRef, ItemSpec

MB = 1024 * 1024


def mb(size: int) -> str:
    return f"{size / MB:.1f} MB"


@dataclass(frozen=True)
class Fitted:
    """What fitting did to an item (``validate`` says it)."""

    step: str
    before: int
    after: int


@dataclass
class BodySizer:
    """Measures request bodies; ``body`` gives the size of a spec's body from its images' base64 lengths."""

    body: Callable[[ItemSpec, list[int]], int]
    max_side: int
    _sizes: dict[tuple[str, str | None], int | ImageProblem] = field(default_factory=dict)

    def image_b64(self, ref: ImageRef, info: ImageInfo | None, fit: str | None) -> int:
        """Base64 characters the image is sent as (URLs: the URL's length)."""
        if info is None:
            return len(ref.src)
        if fit is None and info.sent_as_is(self.max_side):
            return b64_len(info.size)
        return remembered(
            self._sizes, (ref.digest, fit), lambda: b64_len(len(encode(read_file(ref.src), self.max_side, fit)[1]))
        )

    def size(self, spec: ItemSpec, infos: list[ImageInfo | None], fit: str | None) -> int:
        pairs = list(zip(spec.images, infos, strict=True))
        todo = [(r, i) for r, i in pairs if i is not None and (r.digest, fit) not in self._sizes
                and not (fit is None and i.sent_as_is(self.max_side))]
        if len(todo) > 1:  # encode the item's images side by side (Pillow lets go of the GIL)
            with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1, 4)) as pool:
                list(pool.map(lambda pair: self._try(pair[0], pair[1], fit), todo))
        return self.body(spec, [self.image_b64(r, i, fit if i is not None else None) for r, i in pairs])

    def _try(self, ref: ImageRef, info: ImageInfo, fit: str | None) -> None:
        try:
            self.image_b64(ref, info, fit)
        except ImageProblem:  # memoized; raised again where the sizes are read
            pass

    def fit(self, spec: ItemSpec, infos: list[ImageInfo | None], limit: int, steps: list[str]) -> tuple[ItemSpec, Fitted] | int:
        """The spec with the gentlest step that fits (found by bisection: later steps are smaller),
        or the smallest size reached when none does."""
        before = self.size(spec, infos, None)
        lo, hi = 0, len(steps) - 1
        best: tuple[str, int] | None = None
        smallest = before
        while lo <= hi:
            mid = (lo + hi) // 2
            size = self.size(spec, infos, steps[mid])
            smallest = min(smallest, size)
            if size <= limit:
                best = (steps[mid], size)
                hi = mid - 1
            else:
                lo = mid + 1
        if best is None:
            return smallest
        step, after = best
        images = tuple(replace(r, fit=step) if i is not None else r for r, i in zip(spec.images, infos, strict=True))
        return replace(spec, images=images), Fitted(step, before, after)
