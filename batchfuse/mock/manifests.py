"""Manifests of Gemini jobs against a mock at a URL: where the tests and the benchmarks start."""

from __future__ import annotations

from typing import Any


def mock_job(url: str, job: str, key_env: str, base_limits: dict[str, Any], /, **sections: Any) -> dict[str, Any]:
    """A manifest dict for ``job`` against the mock at ``url``; ``sections`` add or replace
    top-level keys (dicts are merged one level deep, so ``limits={"concurrency": 8}`` keeps the rest)."""
    data: dict[str, Any] = {
        "job": job,
        "provider": {"kind": "gemini", "base_url": url, "model": "gemini-3-pro-image-preview", "api_key_env": key_env},
        "defaults": {"aspect_ratio": "1:1", "image_size": "1K"},
        "limits": dict(base_limits),
        "output": {"dir": "out", "filename": "{item}.png"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data
