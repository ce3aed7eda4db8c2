"""The outage breaker, the adaptive limits and the CLI's time options, without a network."""

from __future__ import annotations

import asyncio
import time

import click
import pytest

from batchfuse.breaker import Breaker
from batchfuse.cli import ClockTime, Duration
from batchfuse.ratelimit import AdaptiveLimits, Gate, RateLimiter


def test_breaker_opens_after_failures_across_items_and_probes_once():
    changes: list[str] = []
    b = Breaker(threshold=4, min_items=2, first_delay=0.05, on_change=changes.append)
    for _ in range(4):
        b.record(ok=False, item="same")
    assert not b.is_open  # one item failing is that item's problem, not an outage
    b.record(ok=False, item="other")
    assert b.is_open and "pausing" in changes[-1]

    async def probe_then_second() -> tuple[float, bool]:
        t0 = time.monotonic()
        await b.wait()  # the probe goes after the pause
        waited = time.monotonic() - t0
        second = asyncio.create_task(b.wait())
        await asyncio.sleep(0.1)
        blocked = not second.done()  # only one probe at a time
        b.record(ok=False, item="x")  # probe failed: open again, twice as long
        assert b.delay == pytest.approx(0.1)
        await second
        b.record(ok=True, item="y")
        return waited, blocked

    waited, blocked = asyncio.run(probe_then_second())
    assert waited >= 0.04 and blocked
    assert not b.is_open and "resuming" in changes[-1]


def test_adaptive_limits_cut_once_per_round_trip_and_climb_back():
    async def scenario() -> None:
        limiter, gate = RateLimiter(1000), Gate(10)
        ad = AdaptiveLimits(limiter, gate, 1000, 10)
        seqs = [ad.sent() for _ in range(5)]
        assert await ad.throttled(seqs[0])
        assert limiter.requests_per_minute == pytest.approx(850) and gate.limit == 8
        for s in seqs[1:]:  # sent before the cut: no further cut
            assert not await ad.throttled(s)
        assert await ad.throttled(ad.sent())
        assert limiter.requests_per_minute == pytest.approx(722.5)
        for _ in range(300):
            await ad.succeeded()
        assert limiter.requests_per_minute == pytest.approx(1000)  # never above the configured rate
        assert gate.limit == 10

    asyncio.run(scenario())


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("45s", 45), ("30m", 1800), ("5h", 18000),
                                               ("1h30m", 5400), ("0.5s", 0.5)])
def test_durations(text, seconds):
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "5d", "h"])
def test_bad_durations(bad):
    with pytest.raises(click.BadParameter):
        Duration().convert(bad, None, None)


def test_until_is_the_next_time_the_clock_shows_it():
    when = ClockTime().convert("06:30", None, None)
    assert 0 < when - time.time() <= 24 * 3600
    assert time.localtime(when)[3:5] == (6, 30)
    with pytest.raises(click.BadParameter):
        ClockTime().convert("25:00", None, None)


def test_the_limiter_keeps_its_schedule_and_holds_everyone_after_a_429():
    async def scenario() -> tuple[float, float, float]:
        limiter = RateLimiter(6000)  # one slot every ~10 ms
        t0 = time.monotonic()
        for _ in range(50):
            await limiter.acquire()
        paced = time.monotonic() - t0
        limiter.hold(0.2)
        t1 = time.monotonic()
        await limiter.acquire()
        held = time.monotonic() - t1
        unlimited = RateLimiter(None)
        unlimited.hold(0.1)
        t2 = time.monotonic()
        await unlimited.acquire()
        return paced, held, time.monotonic() - t2

    paced, held, unlimited_held = asyncio.run(scenario())
    interval = 60 / (6000 * 0.98)
    assert 49 * interval * 0.98 <= paced <= 49 * interval * 1.1  # late wake-ups do not add up
    assert held >= 0.19 and unlimited_held >= 0.09
