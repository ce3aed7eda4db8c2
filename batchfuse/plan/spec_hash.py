"""The spec hash: what identifies an item's request (provider, model, prompt, parameters, the
reference images' digests), so a changed spec is sent again and an unchanged one never is."""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

#: Distinct (parameters, images) heads remembered by SpecHasher.
MAX_HEADS = 256


def canonical_json(value: Any) -> str:
    """``value`` as the spec hash writes it: keys sorted, no spaces, non-ASCII kept."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def spec_hash(kind: str, model: str, prompt: str, params: dict[str, Any], digests: list[str]) -> str:
    """The definition (the planner hashes through :class:`SpecHasher`, which a test holds to it)."""
    canonical = canonical_json({"provider": kind, "model": model, "prompt": prompt, "params": params, "images": digests})
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class SpecHasher:
    """:func:`spec_hash` for the rows of one plan, which share their provider and model and
    mostly their parameters and images: the canonical JSON around the prompt (its keys in sorted
    order: images, model, params, prompt, provider) is written once per distinct parameters and
    images and the prompt spliced in, so the bytes hashed are exactly :func:`spec_hash`'s."""

    def __init__(self, kind: str, model: str) -> None:
        self._model = canonical_json(model)
        self._tail = ',"provider":' + canonical_json(kind) + "}"
        self._heads: dict[tuple[str, tuple[str, ...]], str] = {}

    def __call__(self, prompt: str, params_json: str, digests: tuple[str, ...]) -> str:
        """The hash of a row whose parameters written by :func:`canonical_json` are ``params_json``."""
        head = self._heads.get((params_json, digests))
        if head is None:
            head = f'{{"images":{canonical_json(list(digests))},"model":{self._model},"params":{params_json},"prompt":'
            if len(self._heads) < MAX_HEADS:
                self._heads[(params_json, digests)] = head
        return hashlib.sha256((head + encode_basestring(prompt) + self._tail).encode("utf-8")).hexdigest()
