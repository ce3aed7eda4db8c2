"""2b. Rate precision, limiter against limiter: batchfuse's former hand-written pacer, its
:class:`~batchfuse.ratelimit.RateLimiter` (aiolimiter, two slots) and the two asyncio
rate-limiting libraries as documented, each doing the limiting alone in the same lean client.

The rate scenario scaled down so all of it fits in a couple of minutes: 1,200 requests/minute
(20/s) configured, the mock enforcing exactly that over a sliding ``WINDOW_S`` (120 per 6 s, the
same per-second rate as 1,200 per minute), 180 items (1.5 windows, so the window fills and
slides), latency 200 ms ± 50, concurrency 64. Every limiter aims at the same rate, the limit ×
``HEADROOM``; the libraries are configured the two ways their documentation offers:

- ``pacer``: the hand-written pacer batchfuse had (:class:`Pacer`), kept here as the reference.
- ``RateLimiter``: ``batchfuse.ratelimit.RateLimiter(1200)``: aiolimiter holding two intervals.
- ``throttle, spaced``: asyncio-throttle ``Throttler(1, interval, retry_interval=0.001)``.
- ``throttle, window``: asyncio-throttle ``Throttler(limit × headroom, WINDOW_S, 0.001)`` (its
  sliding window laid over the server's).
- ``aiolimiter, spaced``: ``AsyncLimiter(1, interval)`` (the "no bursts" setting of its docs).
- ``aiolimiter, bucket``: ``AsyncLimiter(limit × headroom, WINDOW_S)`` (the default leaky bucket,
  whose capacity is ``max_rate``: a full bucket at the start).

The client (this file run as a script) retries a 429 after its ``Retry-After``, through the
limiter again. Figures per limiter, medians of ``ROUNDS`` rounds whose order rotates: the achieved
rate as :func:`rate.rate_figures` defines it, as a share of the limit; the most requests the client
sent in any window and in any second (the worst burst the server sees); requests answered 429;
and the client process's CPU per request (all of it: the limiters differ, the rest is the same).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import KEY, MODEL, PY, Mock, Report, Target, fmt, last_json_line, max_in_window, run_measured
from rate import mock_args

NAME = "rate_limiters"
TITLE = "Rate precision: pacer against the libraries"
RPM = 1200
WINDOW_S = 6.0
CONCURRENCY = 64
ROUNDS = 3
LIMITERS = ["pacer", "RateLimiter", "aiolimiter, spaced", "aiolimiter, bucket", "throttle, spaced",
            "throttle, window"]


class Pacer:
    """batchfuse's hand-written pacer until aiolimiter took over (without the asyncio-throttle
    guard beneath it, which never blocked): one slot every interval on a fixed schedule; a late
    wake-up keeps the schedule, an idle spell gives no more than one slot of credit."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._next < now - self.interval:
                self._next = now
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next += self.interval


def make_limiter(kind: str, rpm: float, window_s: float) -> Any:
    """An object with ``async acquire()`` limiting to ``rpm`` × HEADROOM the way ``kind`` does."""
    from batchfuse.run.ratelimit import HEADROOM, RateLimiter

    per_s = rpm * HEADROOM / 60
    if kind == "pacer":
        return Pacer(1 / per_s)
    if kind == "RateLimiter":
        return RateLimiter(rpm)
    if kind.startswith("throttle"):
        from asyncio_throttle import Throttler

        if kind.endswith("spaced"):
            return Throttler(rate_limit=1, period=1 / per_s, retry_interval=0.001)
        return Throttler(rate_limit=int(per_s * window_s), period=window_s, retry_interval=0.001)
    from aiolimiter import AsyncLimiter

    if kind.endswith("spaced"):
        return AsyncLimiter(1, 1 / per_s)
    return AsyncLimiter(per_s * window_s, window_s)


async def client(args: argparse.Namespace) -> dict[str, Any]:
    """Send ``args.n`` minimal generation requests through one limiter; the send times back."""
    import aiohttp

    limiter = make_limiter(args.limiter, args.rpm, args.window)
    url = f"{args.url}/v1beta/models/{MODEL}:generateContent"
    headers = {"x-goog-api-key": KEY, "Content-Type": "application/json"}
    sends: list[tuple[float, int]] = []
    todo = iter(range(args.n))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in todo:
            body = json.dumps({"contents": [{"parts": [{"text": f"A studio photograph of product {i}"}]}]})
            while True:
                await limiter.acquire()
                sent = time.time()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
                sends.append((sent, status))
                if status == 200:
                    break
                await asyncio.sleep(float(retry_after or 1))

    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        cpu = time.process_time()
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        cpu = time.process_time() - cpu
    return {"sends": sends, "cpu_s": cpu}


def run_one(kind: str, mock: Mock, n: int, limit: int, window_s: float) -> dict[str, Any]:
    mock.reset()
    result = run_measured([PY, __file__, "--limiter", kind, "--url", mock.url, "--n", str(n), "--rpm", str(RPM),
                           "--window", str(window_s)], timeout_s=300).check()
    out = last_json_line(result.stdout)
    sends = sorted(t for t, _ in out["sends"])
    ok = sorted(t for t, status in out["sends"] if status == 200)
    entries = mock.generations()
    return {
        # items sent and answered 200 per window, from the first send to the last successful one
        "share": (len(ok) - 1) / (ok[-1] - sends[0]) * window_s / limit,
        "max_window": max_in_window(sends, window_s),
        "max_1s": max_in_window(sends, 1.0),
        "rate_limited": sum(1 for e in entries if e["status"] == 429),
        "requests": len(entries),
        "lost": n - len(ok),
        "cpu_ms_per_request": out["cpu_s"] / len(sends) * 1000,
        "wall_s": result.wall_s,
    }


def run(quick: bool, work: Path) -> Report:
    del work  # the client writes nothing
    rounds = 1 if quick else ROUNDS
    limit = round(RPM * WINDOW_S / 60)
    n = round(limit * 1.5)
    kinds = [k for k in LIMITERS if not k.startswith("throttle") or importlib.util.find_spec("asyncio_throttle")]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with Mock(*mock_args(limit)) as mock:
        mock.configure(rpm_window_s=WINDOW_S)
        for r in range(rounds):
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
            for kind in order:
                time.sleep(WINDOW_S / 6)  # let the loopback and the mock go quiet
                runs[kind].append(f := run_one(kind, mock, n, limit, WINDOW_S))
                print(f"  round {r + 1} {kind:18s}: {f['share']:.1%} of the limit, most {f['max_window']} in "
                      f"{WINDOW_S:g} s and {f['max_1s']} in 1 s, {f['rate_limited']} × 429, "
                      f"{f['cpu_ms_per_request']:.2f} ms CPU/request", flush=True)
    med = {k: {key: statistics.median(run[key] for run in v) for key in v[0]} for k, v in runs.items()}
    pacer = med["pacer"]

    def cell(kind: str, key: str, f: Any) -> str:
        value = med[kind][key]
        if kind == "pacer" or not pacer[key]:
            return f(value)
        return f"{f(value)} ({value / pacer[key]:.2f}×)"

    per_s = RPM / 60
    rows = [
        [kind,
         cell(kind, "share", lambda v: f"{v:.1%}"),
         cell(kind, "max_window", lambda v: f"{v:g} of {limit}"),
         cell(kind, "max_1s", lambda v: f"{v:g} ({per_s:g}/s allowed)"),
         cell(kind, "rate_limited", lambda v, k=kind: f"{v:g} of {med[k]['requests']:g}"),
         cell(kind, "cpu_ms_per_request", lambda v: fmt(v, 2)),
         cell(kind, "wall_s", lambda v: fmt(v, 1))]
        for kind in kinds
    ]
    best = max((k for k in kinds if k != "pacer"), key=lambda k: (med[k]["rate_limited"] == 0, med[k]["share"]))
    return Report(
        name=NAME, title=TITLE,
        setup=(f"{n} items, {RPM}/min configured (every limiter aims at {RPM} × HEADROOM 0.98), the mock enforcing "
               f"{limit} per sliding {WINDOW_S:g} s (= {RPM}/min), latency 200 ms ± 50, concurrency {CONCURRENCY}, "
               f"one lean client, only its limiter differs; medians of {rounds} round(s) in rotating order, "
               f"(ratio to the pacer)"),
        header=["limiter", "achieved, share of the limit", f"most sent in any {WINDOW_S:g} s",
                "most sent in any 1 s", "answered 429", "client CPU ms/request", "wall s"],
        rows=rows,
        targets=[Target("a library limits as well as the pacer", None,
                        f"closest: {best}, {med[best]['share']:.1%} of the limit vs the pacer's "
                        f"{pacer['share']:.1%}, {med[best]['rate_limited']:g} × 429 vs {pacer['rate_limited']:g}")],
        data={"runs": runs, "medians": med},
        quick=quick,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The lean client of the limiter comparison (one limiter, one run).")
    p.add_argument("--limiter", choices=LIMITERS, required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--rpm", type=float, required=True)
    p.add_argument("--window", type=float, required=True)
    return p.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(client(parse_args(sys.argv[1:])))))
