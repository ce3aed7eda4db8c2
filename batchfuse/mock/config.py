"""The mock server's knobs, and the one place that turns loose input (JSON, CLI) into them.

A :class:`MockConfig` is *live*: the server reads it on every request, so a test may change a
field between two requests ("the API goes down now") and the next request sees it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

#: The faults a generation request can be given, by marker or by rate. ``download_fail`` only
#: means something for OpenAI-style ``url`` replies; ``perday`` is the per-day quota 429.
FAULT_NAMES: frozenset[str] = frozenset(
    {
        "500",
        "503",
        "429",
        "hang",
        "reset",
        "truncate",
        "safety",
        "text_only",
        "no_image",
        "blocked",
        "400",
        "download_fail",
        "perday",
    }
)

#: Fault-rate fields in the fixed order a single random draw walks through (see ``faults.py``).
RATE_FIELDS: tuple[str, ...] = (
    "rate_500",
    "rate_503",
    "rate_hang",
    "rate_reset",
    "rate_truncate",
    "rate_safety",
    "rate_text_only",
    "rate_no_image",
)

IMAGE_MODES: frozenset[str] = frozenset({"collage", "solid"})


@dataclass
class MockConfig:
    """Everything that shapes how the fake API answers. All fields have harmless defaults."""

    #: The only key accepted; ``None`` accepts any non-empty key.
    api_key: str | None = None
    #: Every generation request sleeps ``latency_ms`` ± uniform ``jitter_ms`` (never below 0).
    latency_ms: float = 0
    jitter_ms: float = 0
    #: Requests per minute per key (sliding 60 s window counted at arrival); over it → 429.
    rpm_limit: int | None = None
    #: The length of the ``rpm_limit`` window; shorter than 60 s scales the dynamics down for tests
    #: (``rpm_limit`` requests per ``rpm_window_s``).
    rpm_window_s: float = 60.0
    #: Successful generations per key before a per-day 429 (no RetryInfo: do not come back soon).
    daily_quota: int | None = None
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_hang: float = 0.0
    rate_reset: float = 0.0
    rate_truncate: float = 0.0
    rate_safety: float = 0.0
    rate_text_only: float = 0.0
    rate_no_image: float = 0.0
    #: Seed for the fault draws and latency jitter; ``None`` = unpredictable.
    seed: int | None = None
    #: How long a "hang" fault sleeps before answering; the client's timeout must fire first.
    hang_s: float = 3600.0
    #: A ``time.monotonic()`` deadline: until then every generation request answers 503.
    outage_until: float | None = None
    #: Output pixel size = spec table size × this (at least 8 px a side); small = fast tests.
    image_scale: float = 1.0
    #: ``"collage"`` draws the references and prompt; ``"solid"`` is one flat colour (benchmarks).
    image_mode: str = "collage"
    #: Gemini 3 models also send an interim image part marked ``"thought": true``.
    thought_images: bool = False
    #: Relay variant: the image comes back as a markdown data URL inside a text part.
    data_url_in_text: bool = False
    #: Gemini: how many final image parts one reply carries.
    images_per_reply: int = 1
    #: OpenAI ``url`` replies: result URLs answer 403 "Request has expired" after this many seconds.
    url_ttl_s: float = 86400.0
    #: OpenAI ``url`` replies: link results under this base URL instead of the request's own
    #: scheme and host (a relay handing out links to another host, or to its LAN address).
    result_base: str | None = None
    #: Files in this folder are served at ``GET /files/{name}`` (reference images over http).
    static_dir: str | None = None
    #: Keep each request's parsed JSON body in the request log.
    record_bodies: bool = False


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(MockConfig)}
_OPTIONAL_INT = {"rpm_limit", "daily_quota", "seed"}
_OPTIONAL_FLOAT = {"outage_until"}
_OPTIONAL_STR = {"api_key", "static_dir", "result_base"}
_BOOL = {"thought_images", "data_url_in_text", "record_bodies"}
_INT = {"images_per_reply"}
_STR = {"image_mode"}


def coerce_field(name: str, value: Any) -> Any:
    """Check one field's new value and convert it to the field's type.

    Why here and not in the dataclass: the dataclass stays a plain record that tests build by
    keyword, while values arriving as JSON or CLI strings go through this single gate and fail
    with a message that names the field.
    """
    if name not in _FIELDS:
        raise ValueError(f"unknown mock config field {name!r}")
    if value is None:
        if name in _OPTIONAL_INT | _OPTIONAL_FLOAT | _OPTIONAL_STR:
            return None
        raise ValueError(f"{name} cannot be null")
    if name in _BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if name in _OPTIONAL_STR | _STR:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        if name == "image_mode" and value not in IMAGE_MODES:
            raise ValueError(f"image_mode must be one of {sorted(IMAGE_MODES)}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if name in _OPTIONAL_INT | _INT:
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
        if name == "images_per_reply" and value < 1:
            raise ValueError("images_per_reply must be at least 1")
        if name in {"rpm_limit", "daily_quota"} and value < 0:
            raise ValueError(f"{name} must not be negative")
        return value
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    if name.startswith("rate_") and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    if name == "rpm_window_s" and value <= 0:
        raise ValueError("rpm_window_s must be positive")
    if name in {"latency_ms", "jitter_ms", "hang_s", "url_ttl_s"} and value < 0:
        raise ValueError(f"{name} must not be negative")
    if name == "image_scale" and value <= 0:
        raise ValueError("image_scale must be positive")
    return value


def apply_changes(config: MockConfig, changes: dict[str, Any]) -> list[str]:
    """Validate every change first, then apply them all; return the names of changed fields.

    ``outage_s`` is accepted as a convenience: it sets ``outage_until = now + outage_s`` so a
    caller in another process need not know this process's monotonic clock.
    """
    resolved: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "outage_s":
            if value is None:
                resolved["outage_until"] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"outage_s must be a non-negative number of seconds, got {value!r}")
            resolved["outage_until"] = time.monotonic() + float(value)
            continue
        resolved[name] = coerce_field(name, value)
    for name, value in resolved.items():
        setattr(config, name, value)
    return sorted(resolved)


def config_field_names() -> list[str]:
    """Names accepted by :func:`apply_changes` (for error messages and the CLI)."""
    return [*_FIELDS, "outage_s"]


__all__ = [
    "FAULT_NAMES",
    "IMAGE_MODES",
    "RATE_FIELDS",
    "MockConfig",
    "apply_changes",
    "coerce_field",
    "config_field_names",
]
