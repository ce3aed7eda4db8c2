"""The mock server's knobs, and the one place that turns loose input (JSON, CLI) into them.

A :class:`MockConfig` is *live*: the server reads it on every request, so a test may change a
field between two requests ("the API goes down now") and the next request sees it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

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
    "rate_429",
)

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]

#: Strict types (no "3" for 3, no 1 for true), no unknown fields, and every later assignment
#: checked too: a manifest's ``provider.mock``, ``/_mock/config`` JSON and tests all go through it.
_STRICT = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


@dataclass(config=_STRICT)
class MockConfig:
    """Everything that shapes how the fake API answers. All fields have harmless defaults."""

    #: The only key accepted; ``None`` accepts any non-empty key.
    api_key: str | None = None
    #: Every generation request sleeps ``latency_ms`` ± uniform ``jitter_ms`` (never below 0).
    latency_ms: NonNegative = 0.0
    jitter_ms: NonNegative = 0.0
    #: Requests per minute per key (sliding 60 s window counted at arrival); over it → 429.
    rpm_limit: Count | None = None
    #: The length of the ``rpm_limit`` window; shorter than 60 s scales the dynamics down for tests
    #: (``rpm_limit`` requests per ``rpm_window_s``).
    rpm_window_s: Positive = 60.0
    #: Successful generations per key before a per-day 429 (no RetryInfo: do not come back soon).
    daily_quota: Count | None = None
    rate_500: Rate = 0.0
    rate_503: Rate = 0.0
    rate_hang: Rate = 0.0
    rate_reset: Rate = 0.0
    rate_truncate: Rate = 0.0
    rate_safety: Rate = 0.0
    rate_text_only: Rate = 0.0
    rate_no_image: Rate = 0.0
    #: A share of requests answered 429 with ``RetryInfo`` (1 s), drawn per request like the other
    #: rates: a rate limit that shows however slow the client is (``rpm_limit`` counts per window).
    rate_429: Rate = 0.0
    #: Seed for the fault draws and latency jitter; ``None`` = unpredictable.
    seed: int | None = None
    #: How long a "hang" fault sleeps before answering; the client's timeout must fire first.
    hang_s: NonNegative = 3600.0
    #: A ``time.monotonic()`` deadline: until then every generation request answers 503.
    outage_until: float | None = None
    #: Output pixel size = catalog size × this (at least 8 px a side); small = fast tests.
    image_scale: Positive = 1.0
    #: ``"collage"`` draws the references and prompt; ``"solid"`` is one flat colour (benchmarks);
    #: ``"noise"`` is random pixels whose PNG is as large as a real one, rendered once per size.
    image_mode: Literal["collage", "solid", "noise"] = "collage"
    #: Thinking models (catalog ``thought_images``: the Gemini 3 image models) send an interim
    #: image part marked ``"thought": true`` first, as the real API does; off = final image only.
    thought_images: bool = True
    #: Relay variant: the image comes back as a markdown data URL inside a text part.
    data_url_in_text: bool = False
    #: Gemini: how many final image parts one reply carries.
    images_per_reply: Annotated[int, Field(ge=1)] = 1
    #: OpenAI ``url`` replies: result URLs answer 403 "Request has expired" after this many seconds.
    url_ttl_s: NonNegative = 86400.0
    #: OpenAI ``url`` replies: link results under this base URL instead of the request's own
    #: scheme and host (a relay handing out links to another host, or to its LAN address).
    result_base: str | None = None
    #: Files in this folder are served at ``GET /files/{name}`` (reference images over http).
    static_dir: str | None = None
    #: Keep each request's parsed JSON body in the request log.
    record_bodies: bool = False
    #: Batch API: how long a new batch stays ``BATCH_STATE_PENDING``; ``None`` = until a test moves
    #: it (``POST /_mock/batches/{id}/state``).
    batch_pending_s: NonNegative | None = 0.1
    #: Batch API: the least time a batch stays ``RUNNING`` (its lines are made meanwhile);
    #: ``None`` = until a test moves it.
    batch_running_s: NonNegative | None = 0.1
    #: Batch API: results-file lines in shuffled order (seeded by ``seed``), not request order.
    batch_shuffle: bool = True
    #: Files API: a file's lifetime (``expirationTime``); the real service keeps files 48 h.
    file_ttl_s: Positive = 172800.0


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(MockConfig)}


def _message(exc: ValidationError) -> str:
    """A pydantic error as one line naming the field: ``rate_503: Input should be ...``."""
    first = exc.errors()[0]
    name = ".".join(str(part) for part in first["loc"]) or "mock config"
    if first["type"] == "unexpected_keyword_argument":
        return f"unknown mock config field {name!r}"
    return f"{name}: {first['msg']}, got {first.get('input')!r}"


def make_config(options: dict[str, Any]) -> MockConfig:
    """A :class:`MockConfig` from loose input (a manifest's ``provider.mock``, JSON);
    ``ValueError`` names the first unknown or wrongly typed field."""
    try:
        return MockConfig(**options)
    except ValidationError as exc:
        raise ValueError(_message(exc)) from None


def coerce_field(name: str, value: Any) -> Any:
    """Check one field's new value; return it as the field's type (``ValueError`` if wrong)."""
    if name not in _FIELDS:
        raise ValueError(f"unknown mock config field {name!r}")
    return getattr(make_config({name: value}), name)


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
    "RATE_FIELDS",
    "MockConfig",
    "apply_changes",
    "coerce_field",
    "config_field_names",
    "make_config",
]
