"""The retry decision is a pure function: a table of cases."""

from __future__ import annotations

import random

import pytest

from batchfuse.errors import ErrorClass
from batchfuse.records import ItemState
from batchfuse.run.retry import RetryPolicy, decide

POLICY = RetryPolicy(max_attempts=4, base_delay_s=1.0, max_delay_s=8.0, no_image_attempts=2)


@pytest.mark.parametrize(
    ("error_class", "used", "no_image", "retry", "state", "counts", "final"),
    [
        (ErrorClass.transient, 1, False, True, ItemState.running, True, None),
        (ErrorClass.transient, 3, False, True, ItemState.running, True, None),
        (ErrorClass.transient, 4, False, False, ItemState.failed, True, "exhausted"),
        (ErrorClass.rejected, 1, False, False, ItemState.failed, True, "rejected"),
        (ErrorClass.fatal, 1, False, False, ItemState.pending, False, None),
        (ErrorClass.interrupted, 2, False, False, ItemState.pending, False, None),
        (ErrorClass.transient, 1, True, True, ItemState.running, True, None),
        (ErrorClass.transient, 2, True, False, ItemState.failed, True, "rejected"),
    ],
)
def test_decision_table(error_class, used, no_image, retry, state, counts, final):
    d = decide(POLICY, error_class, used, no_image=no_image, rng=random.Random(0))
    assert (d.retry, d.item_state, d.counts, d.final_class) == (retry, state, counts, final)


def test_backoff_is_full_jitter_under_a_growing_cap():
    rng = random.Random(42)
    for used, cap in [(1, 1.0), (2, 2.0), (3, 4.0)]:
        delays = [decide(RetryPolicy(max_attempts=10, max_delay_s=8.0), ErrorClass.transient, used, rng=rng).delay_s
                  for _ in range(300)]
        assert 0 <= min(delays) < cap * 0.1
        assert cap * 0.9 < max(delays) <= cap
    capped = [decide(RetryPolicy(max_attempts=50, max_delay_s=8.0), ErrorClass.transient, 30, rng=rng).delay_s
              for _ in range(100)]
    assert max(capped) <= 8.0


def test_server_delay_wins_over_backoff():
    d = decide(POLICY, ErrorClass.transient, 1, retry_after_s=5.0, rng=random.Random(1))
    assert 5.0 <= d.delay_s <= 5.1
