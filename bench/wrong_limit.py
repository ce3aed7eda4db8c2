"""3. Wrong limit: ``requests_per_minute: 2400`` configured against a mock enforcing 1,200 per
sliding minute. batchfuse's adaptive rate (AIMD, ``limits.adaptive_rate``, on by default) has to
find the real limit.

1,800 items, latency 200 ms ± 50, concurrency 64, at most 50 attempts per item; the run is
bounded with ``--max-runtime 150s`` (no request starts later; 1,800 items need 90 s at the real
limit). Figures as in the rate benchmark, plus the timeline of 200s and 429s per 10 s and the
number of rate cuts batchfuse logged. No baseline: a client without adaptation keeps sending
at 2,400/min and gets half its requests refused (that is what AIMD is for).

``--quick``: 450 items against 300 per 15 s (the same rate), ``--max-runtime 60s``.
"""

from __future__ import annotations

from pathlib import Path

from common import Report, Target, fmt, solid_png
from rate import run_client

NAME = "wrong_limit"
TITLE = "Wrong limit (adaptive rate)"
CONFIGURED, LIMIT = 2400, 1200


def run(quick: bool, work: Path) -> Report:
    window = 15.0 if quick else 60.0
    limit = round(LIMIT * window / 60)
    n = 450 if quick else 1800
    max_runtime = "60s" if quick else "150s"
    ref = solid_png(work / "ref.png", (48, 48))
    r = run_client("batchfuse", work, n, CONFIGURED, limit, window, ref, max_runtime=max_runtime)
    per_min = 60 / window
    cuts = r["rate_cuts"]
    share = r["achieved_per_window"] / limit
    completed = r["succeeded"] == n
    rows = [
        ["achieved, requests/min (mock log)", fmt(r["achieved_per_window"] * per_min)],
        ["  share of the real limit", f"{share:.1%}"],
        ["achieved end to end, items/min", fmt(r["e2e_per_window"] * per_min)],
        ["items succeeded", f"{r['succeeded']} of {n}"],
        ["requests", str(r["requests"])],
        ["answered 429", str(r["rate_limited"])],
        ["  share of requests", f"{r['share_429']:.2%}"],
        ["rate cuts batchfuse logged", str(len(cuts))],
        ["wall time, s", fmt(r["wall_s"], 1)],
        ["exit code", str(r["returncode"])],
    ]
    bucket = window / 6
    series = ", ".join(f"{int(t)}s: {ok}/{lim}" for t, ok, lim in r["timeline"])
    targets = [
        Target("the run completes", completed, f"{r['succeeded']} of {n} items, exit {r['returncode']}"),
        Target("≥ 90% of the real limit", share >= 0.90,
               f"{share:.1%} ({fmt(r['achieved_per_window'] * per_min)} of {LIMIT}/min)"),
        Target("≤ 5% of requests answered 429", r["share_429"] <= 0.05,
               f"{r['rate_limited']} of {r['requests']} ({r['share_429']:.2%})"),
    ]
    notes = [f"200s/429s per {bucket:g} s from the mock's log: {series}"]
    if cuts:
        notes.append("rate cuts (requests/min, in flight), in order: "
                     + ", ".join(f"{a}/{b}" for a, b in cuts[:40]) + (" ..." if len(cuts) > 40 else ""))
    return Report(
        name=NAME, title=TITLE,
        setup=(f"{n:,} items, requests_per_minute {CONFIGURED} configured, the mock enforcing {limit} per sliding "
               f"{window:g} s ({LIMIT}/min), latency 200 ms ± 50, concurrency 64, adaptive_rate on, "
               f"--max-runtime {max_runtime}"),
        header=["", "batchfuse"], rows=rows, targets=targets, notes=notes,
        data={k: v for k, v in r.items() if k != "stderr_tail"}, quick=quick,
    )
