"""The shared vocabulary: item states, the plan's rows and the frozen records the store hands out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from batchfuse.errors import ErrorClass


class ItemState(str, Enum):
    """Where an item stands. ``pending -> running -> succeeded | failed | pending``."""

    #: Waiting to be sent (new, changed, retried, or left by a stopped run).
    pending = "pending"
    #: Claimed by a runner under a lease; a dead runner's items come back when it expires.
    running = "running"
    #: Every output is on disk and recorded; never sent again while its spec is unchanged.
    succeeded = "succeeded"
    #: Rejected by the API, or out of attempts; ``run --retry-failed`` gives it another go.
    failed = "failed"


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    provider: str
    model: str
    manifest_path: str


@dataclass(frozen=True)
class ImageRef:
    """A reference image of an item: a local path or http(s) URL, and its content digest
    (``url:<url>`` for URLs, read only when sent)."""

    src: str
    digest: str
    #: How the image is re-encoded to fit the request limit (``reference_images.fit``), e.g.
    #: ``2048px-q80``; None: sent as it is (normalized only).
    fit: str | None = None

    @property
    def cache_key(self) -> str:
        """The key of its encoded form: the content digest, and the fitting step if any."""
        return self.digest if self.fit is None else f"{self.digest}@{self.fit}"


@dataclass(frozen=True)
class ItemSpec:
    """What one item sends: the rendered prompt, the provider's parameters, the reference
    images, and the item's other values (for naming outputs).  Stored as JSON (:meth:`to_json`)."""

    prompt: str
    params: dict[str, Any]
    images: tuple[ImageRef, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "params": self.params,
            "images": [
                {"src": r.src, "digest": r.digest, **({"fit": r.fit} if r.fit else {})} for r in self.images
            ],
            "vars": self.vars,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ItemSpec:
        return cls(
            prompt=str(data.get("prompt", "")),
            params=dict(data.get("params", {})),
            images=tuple(
                ImageRef(str(r["src"]), str(r["digest"]), str(r["fit"]) if r.get("fit") else None)
                for r in data.get("images", [])
            ),
            vars=dict(data.get("vars", {})),
        )

    @property
    def naming_values(self) -> dict[str, Any]:
        """The values output names are rendered from (the parameters win over the item's own)."""
        return {**self.vars, **self.params}


@dataclass(frozen=True)
class ClaimedItem:
    """An item a runner holds a lease on, with everything needed to send it."""

    id: int
    key: str
    ordinal: int
    spec_hash: str
    spec: ItemSpec
    attempts: int
    resume: dict[str, Any] | None = None
    #: A paid result of this spec waits in the spool: write it instead of sending again.
    spooled: bool = False

    @classmethod
    def from_row(cls, row: Any) -> ClaimedItem:
        resume = json.loads(row.resume_token) if row.resume_token else None
        return cls(
            row.id, row.key, row.ordinal, row.spec_hash, ItemSpec.from_json(json.loads(row.spec)), row.attempts, resume,
            bool(getattr(row, "spooled", False)),
        )


@dataclass(frozen=True)
class OutputRecord:
    idx: int
    path: str
    sha256: str
    width: int
    height: int
    bytes: int
    source_url: str | None = None
    source_at: float | None = None


@dataclass(frozen=True)
class SpooledImage:
    """One image of a paid reply whose outputs could not be written, kept in the store."""

    idx: int
    data: bytes
    source_url: str | None = None
    source_at: float | None = None


class AttemptOutcome(str, Enum):
    """What one attempt came to, as ``attempts.outcome`` records it."""

    #: The reply's images are on disk and recorded.
    succeeded = "succeeded"
    #: Outputs already on disk from an unrecorded attempt were taken; nothing was sent.
    adopted = "adopted"
    #: A paid reply whose outputs could not be written, kept in the store's spool.
    spooled = "spooled"
    #: Spooled images written out on a later run; nothing was sent.
    unspooled = "unspooled"
    #: Spooled images that still could not be written; nothing was sent.
    output_error = "output_error"
    #: The runner lost the item's lease while the request was in flight: the result is dropped.
    lease_lost = "lease_lost"
    #: The item's spec changed while the request was in flight: the result is dropped.
    superseded = "superseded"
    #: The attempt failed; the value is the error's class.
    transient = "transient"
    rejected = "rejected"
    fatal = "fatal"
    #: Cut short by us (signal, crash, stop); it does not count.
    interrupted = "interrupted"

    @classmethod
    def of_error(cls, error_class: ErrorClass) -> AttemptOutcome:
        return cls(error_class.value)


#: Outcomes of attempts that sent no request (they are not counted as the run's requests).
NO_REQUEST_OUTCOMES = frozenset({AttemptOutcome.adopted, AttemptOutcome.unspooled, AttemptOutcome.output_error})


@dataclass(frozen=True)
class AttemptRecord:
    """One finished attempt, as the scheduler reports it to the store."""

    item_id: int
    number: int
    spec_hash: str
    started_at: float
    ended_at: float
    outcome: AttemptOutcome
    #: The item's state after this attempt.
    item_state: ItemState
    counts: bool
    http_status: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    #: Thinking tokens the reply reported (``thoughtsTokenCount``), billed as output.
    thoughts_tokens: int | None = None
    finish_reason: str | None = None
    block_reason: str | None = None
    text: str | None = None
    outputs: tuple[OutputRecord, ...] = field(default_factory=tuple)
    #: The provider's resume note for the next attempt; None clears it.
    resume: dict[str, Any] | None = None
    #: The reply's images, kept in the store because its outputs could not be written.
    spool: tuple[SpooledImage, ...] = ()


@dataclass(frozen=True)
class PlanSummary:
    """What planning a manifest against the store found."""

    new: int = 0
    changed: int = 0
    unchanged_done: int = 0
    to_run: int = 0
    to_retry: int = 0
    failed: int = 0
    removed: int = 0
    removed_keys: tuple[str, ...] = ()
    #: Items to run whose image is already on disk (a dead run's, unrecorded): adopted, not sent.
    adoptable: int = 0
    #: The output folder they are in.
    adopt_from: str = ""


@dataclass(frozen=True)
class PlannedRow:
    """One item of the plan as the store keeps it."""

    key: str
    ordinal: int
    spec_hash: str
    spec: ItemSpec
