"""The outage breaker, the adaptive limits and the CLI's time options, without a network."""

from __future__ import annotations

import asyncio
import time

import click
import pytest

from batchfuse.cli import ClockTime, Duration
from batchfuse.run.breaker import Breaker
from batchfuse.run.ratelimit import AdaptiveLimits, Gate, RateLimiter


def test_breaker_opens_after_failures_across_items_and_probes_once(virtual_clock):
    changes: list[str] = []
    b = Breaker(threshold=4, min_items=2, first_delay=5.0, on_change=changes.append)
    for _ in range(4):
        b.record(ok=False, item="same")
    assert not b.is_open  # one item failing is that item's problem, not an outage
    b.record(ok=False, item="other")
    assert b.is_open and "pausing 5 s" in changes[-1]
    loop = virtual_clock

    async def probe_then_second() -> None:
        t0 = loop.time()
        await b.wait()  # the probe goes after the pause, not before
        assert loop.time() - t0 == pytest.approx(5.0, abs=1e-9)
        second = asyncio.create_task(b.wait())
        await loop.elapse(30)
        assert not second.done()  # only one probe at a time, however long the first takes
        t1 = loop.time()
        b.record(ok=False, item="x")  # probe failed: open again, twice as long
        assert b.delay == 10.0 and "pausing 10 s" in changes[-1]
        await second
        assert loop.time() - t1 == pytest.approx(10.0, abs=1e-9)
        b.record(ok=True, item="y")

    loop.run_until_complete(probe_then_second())
    assert not b.is_open and "resuming after 2 pause(s)" in changes[-1]
    assert b.delay == 5.0  # a success resets the pause


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


def test_the_limiter_keeps_its_schedule_and_holds_everyone_after_a_429(virtual_clock):
    loop = virtual_clock
    interval = 60 / (6000 * 0.98)

    async def scenario() -> None:
        limiter = RateLimiter(6000)  # one slot every ~10 ms
        t0 = loop.time()
        starts = []
        for i in range(50):
            await limiter.acquire()
            starts.append(loop.time() - t0)
            if i == 10:
                loop.advance(interval * 1.7)  # this caller came back late, past its next slot ...
        assert starts[:2] == [0.0, 0.0]  # an empty bucket lets two go at once, never more
        assert starts[2:11] == pytest.approx([(i - 1) * interval for i in range(2, 11)])
        assert starts[11] == pytest.approx(10.7 * interval)  # ... goes at once (no credit piled up),
        assert starts[12:] == pytest.approx([(i - 1) * interval for i in range(12, 50)])  # the rest on the old marks
        assert all(c - a >= interval - 1e-6 for a, c in zip(starts, starts[2:], strict=False))
        limiter.hold(0.2)
        t1 = loop.time()
        await limiter.acquire()
        assert loop.time() - t1 == pytest.approx(0.2)
        unlimited = RateLimiter(None)
        unlimited.hold(0.1)
        t2 = loop.time()
        await unlimited.acquire()
        assert loop.time() - t2 == pytest.approx(0.1)
        await unlimited.acquire()  # the hold is over: no wait at all
        assert loop.time() - t2 == pytest.approx(0.1)

    loop.run_until_complete(scenario())


def test_many_callers_share_the_schedule(virtual_clock):
    loop = virtual_clock
    limiter = RateLimiter(600)

    async def caller(starts: list[float]) -> None:
        for _ in range(5):
            await limiter.acquire()
            starts.append(loop.time())

    async def scenario() -> list[float]:
        starts: list[float] = []
        await asyncio.gather(*(caller(starts) for _ in range(8)))
        return starts

    starts = sorted(loop.run_until_complete(scenario()))
    interval = 60 / (600 * 0.98)
    assert len(starts) == 40
    assert starts[1] == starts[0]  # the first two at once, then one per interval
    assert [b - a for a, b in zip(starts[1:], starts[2:], strict=False)] == pytest.approx([interval] * 38)


def test_a_new_rate_applies_to_the_next_request_without_a_burst(virtual_clock):
    """What adaptive rate relies on: set_rate keeps what the bucket holds (a fresh bucket would
    let two requests out at once on every change) and the new spacing starts at once."""
    loop = virtual_clock

    async def scenario() -> list[float]:
        limiter = RateLimiter(600)  # ~0.102 s
        starts = []
        for i in range(30):
            if i == 10:
                limiter.set_rate(600 * 0.85)  # a cut
            if i == 20:
                limiter.set_rate(1200)  # back up, faster than at first
            await limiter.acquire()
            starts.append(loop.time())
        return starts

    starts = loop.run_until_complete(scenario())
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    slow, fast = 60 / (510 * 0.98), 60 / (1200 * 0.98)
    assert gaps[1:9] == pytest.approx([60 / (600 * 0.98)] * 8)
    assert min(gaps[9:19]) > 0.8 * slow  # no burst at the cut ...
    assert gaps[10:19] == pytest.approx([slow] * 9)  # ... and the new spacing from the next request on
    assert min(gaps[19:]) >= fast - 1e-6
    assert gaps[20:] == pytest.approx([fast] * 9)


def test_a_rate_change_under_a_waiting_request_applies_to_the_next_one(virtual_clock):
    loop = virtual_clock

    async def scenario() -> list[float]:
        limiter = RateLimiter(600)
        starts: list[float] = []

        async def caller() -> None:
            for _ in range(4):
                await limiter.acquire()
                starts.append(loop.time())

        tasks = [asyncio.create_task(caller()) for _ in range(3)]
        while len(starts) < 3:  # the third request is now waiting in the bucket
            await loop.elapse(0.01)
        limiter.set_rate(6000)  # ten times faster: the waiting request must not be stranded
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        return starts

    starts = loop.run_until_complete(scenario())
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 12
    assert gaps[-5:] == pytest.approx([60 / (6000 * 0.98)] * 5)
