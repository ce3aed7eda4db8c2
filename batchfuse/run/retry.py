"""Retries as data: a pure decision from what happened to what to do next.

Transient failures are retried with exponential backoff and full jitter (a random delay
between zero and the capped exponential), or after the server's own ``Retry-After`` /
``RetryInfo`` delay when it gives one.  The allowance (``max_attempts``) is per item and
counts attempts across runs.  Replies without an image are retried only a few times.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from batchfuse.errors import ErrorClass
from batchfuse.records import ItemState


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    #: Attempts spent on image-less replies before the item counts as rejected.
    no_image_attempts: int = 3


@dataclass(frozen=True)
class RetryDecision:
    #: Send again in this run, after ``delay_s``.
    retry: bool
    delay_s: float
    #: The item's state while it waits or once it is given up.
    item_state: ItemState
    #: Whether this attempt uses up one of the item's allowance.
    counts: bool
    #: The error class recorded on the item when it is given up.
    final_class: str | None = None


def decide(
    policy: RetryPolicy,
    error_class: ErrorClass,
    attempts_used: int,
    *,
    retry_after_s: float | None = None,
    no_image: bool = False,
    rng: random.Random | None = None,
) -> RetryDecision:
    """What to do after a failed attempt.

    ``attempts_used`` counts the attempts already made, including this one.
    """
    if error_class is ErrorClass.fatal or error_class is ErrorClass.interrupted:
        # Not the item's fault: it goes back to pending with its allowance intact.
        return RetryDecision(False, 0.0, ItemState.pending, counts=False)
    if error_class is ErrorClass.rejected:
        return RetryDecision(False, 0.0, ItemState.failed, counts=True, final_class="rejected")
    limit = min(policy.max_attempts, policy.no_image_attempts) if no_image else policy.max_attempts
    if attempts_used >= limit:
        return RetryDecision(
            False, 0.0, ItemState.failed, counts=True, final_class="rejected" if no_image else "exhausted"
        )
    cap = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempts_used - 1))
    delay = (rng or random).uniform(0, cap)
    if retry_after_s is not None:
        delay = min(max(retry_after_s, 0.0), policy.max_delay_s * 10) + delay * 0.1
    return RetryDecision(True, delay, ItemState.running, counts=True)
