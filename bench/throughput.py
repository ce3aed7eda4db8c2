"""1. Throughput and overhead: batchfuse against the bare aiohttp baseline.

2,000 items, mock latency 200 ms ± 50, concurrency 64, no rate limit, 64×64 solid images,
two reference images of realistic size per request (noise PNGs of about 85 and 240 KB). Each
client runs as its own subprocess pinned to the client core, against a fresh mock pinned to the
other core; the rounds alternate which client goes first and the median of each figure is reported.

Figures, per client:

- items/s *steady*: (n − 1) / (last answer − first answer), from the mock's request log: the
  request phase only, measured identically for both clients (the issue's "290 of 320").
- items/s *end to end*: n / wall time of the whole process (start-up, planning, exit included).
- CPU ms/item: user + system CPU of the client process (``os.wait4``) / n; and *marginal*:
  (CPU − CPU of a 1-item job from scratch) / (n − 1), the cost that grows with the job (the
  1-item job carries start-up, a new database and its schema, planning and exit).
- peak RSS of the client process.

batchfuse is checked to have done its job: every item succeeded, one attempt row per request
the mock saw, one output file per item.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from common import (
    Mock,
    Report,
    Target,
    baseline,
    batchfuse,
    fmt,
    gen_rate,
    last_json_line,
    manifest,
    noise_png,
    output_files,
    ratio,
    settle,
    status_json,
    write_catalog,
    write_manifest,
)

NAME = "throughput"
TITLE = "Throughput and overhead"
LATENCY_MS, JITTER_MS, CONCURRENCY = 200, 50, 64
MOCK_ARGS = ["--latency-ms", LATENCY_MS, "--jitter-ms", JITTER_MS, "--image-mode", "solid",
             "--image-scale", "0.0625", "--seed", "1"]
PROMPT = "A studio photograph of {title} ({id})"


def _measure(kind: str, n: int, folder: Path, refs: list[Path]) -> dict[str, Any]:
    """One run of one client against a fresh mock, in a new folder."""
    folder.mkdir(parents=True)
    settle()
    with Mock(*map(str, MOCK_ARGS)) as mock:
        mock_cpu0 = mock.cpu_s()
        if kind == "baseline":
            result = baseline(mock.url, n, CONCURRENCY, folder / "out", image=refs, prompt=PROMPT,
                              timeout_s=600).check()
            summary = last_json_line(result.stdout)
            if summary["written"] != n:
                raise RuntimeError(f"baseline wrote {summary['written']} of {n}")
            extra: dict[str, Any] = {}
        else:
            write_catalog(folder / "catalog.csv", n)
            for ref in refs:
                shutil.copy(ref, folder / ref.name)
            path = write_manifest(folder / "job.yaml", manifest(
                mock.url, "bench-throughput",
                items_from={"file": "catalog.csv", "key": "{id}"}, prompt=PROMPT, images=[r.name for r in refs],
                limits={"concurrency": CONCURRENCY, "requests_per_minute": None},
            ))
            db = folder / "batchfuse.db"
            result = batchfuse("run", path, "--db", db, timeout_s=600).check()
            status = status_json(path, db)
            requests_seen = len(mock.generations())
            files = output_files(folder / "out")
            ok = (status["items"]["succeeded"] == n and status["attempts"] == requests_seen and files == n)
            if not ok:
                raise RuntimeError(
                    f"batchfuse did not do the whole job: {status['items']}, attempts {status['attempts']}, "
                    f"requests {requests_seen}, files {files}"
                )
            noop = batchfuse("run", path, "--db", db, timeout_s=120).check()  # nothing left to do
            extra = {"attempts": status["attempts"], "files": files, "noop_cpu_s": noop.cpu_s,
                     "noop_wall_s": noop.wall_s}
        gens = mock.generations()
        mock_cpu = mock.cpu_s() - mock_cpu0
    return {
        "steady_items_s": gen_rate(gens),
        "e2e_items_s": n / result.wall_s,
        "wall_s": result.wall_s,
        "cpu_s": result.cpu_s,
        "user_s": result.user_s,
        "sys_s": result.sys_s,
        "cpu_ms_item": 1000 * result.cpu_s / n,
        "maxrss_mb": result.maxrss_mb,
        "mock_cpu_ms_req": 1000 * mock_cpu / max(1, len(gens)),
        "requests": len(gens),
        **extra,
    }


def run(quick: bool, work: Path) -> Report:
    n = 500 if quick else 2000
    rounds = 1 if quick else 3
    refs = [noise_png(work / "ref-a.png", 85, seed=1), noise_png(work / "ref-b.png", 240, seed=2)]
    sizes = " and ".join(f"{r.stat().st_size / 1024:.0f} KB" for r in refs)
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "batchfuse": []}
    for r in range(rounds):
        order = ["baseline", "batchfuse"] if r % 2 == 0 else ["batchfuse", "baseline"]
        for kind in order:
            m = _measure(kind, n, work / f"{kind}-{r + 1}", refs)
            runs[kind].append(m)
            print(f"  round {r + 1}/{rounds} {kind:9s}: {m['steady_items_s']:.1f} items/s steady, "
                  f"{m['e2e_items_s']:.1f} end to end, {m['cpu_ms_item']:.2f} ms CPU/item, "
                  f"{m['maxrss_mb']:.0f} MB", flush=True)
    # The fixed cost: a 1-item job from scratch (start-up, new database, plan, one request, exit).
    ones = {kind: [_measure(kind, 1, work / f"{kind}-one-{i}", refs) for i in range(3)] for kind in runs}

    def med(kind: str, key: str) -> float:
        return statistics.median(m[key] for m in runs[kind])

    b, f = "baseline", "batchfuse"
    fixed = {kind: statistics.median(m["cpu_s"] for m in ones[kind]) for kind in runs}
    marginal = {kind: 1000 * (med(kind, "cpu_s") - fixed[kind]) / (n - 1) for kind in runs}
    allowed = CONCURRENCY / (LATENCY_MS / 1000)
    rows = [
        ["items/s, steady (mock log)", fmt(med(b, "steady_items_s")), fmt(med(f, "steady_items_s")),
         ratio(med(f, "steady_items_s"), med(b, "steady_items_s"))],
        ["items/s, end to end (process wall)", fmt(med(b, "e2e_items_s")), fmt(med(f, "e2e_items_s")),
         ratio(med(f, "e2e_items_s"), med(b, "e2e_items_s"))],
        ["wall time, s", fmt(med(b, "wall_s"), 2), fmt(med(f, "wall_s"), 2),
         ratio(med(f, "wall_s"), med(b, "wall_s"))],
        ["CPU ms/item, whole process", fmt(med(b, "cpu_ms_item"), 2), fmt(med(f, "cpu_ms_item"), 2),
         ratio(med(f, "cpu_ms_item"), med(b, "cpu_ms_item"))],
        ["  of which user / system, ms/item",
         f"{fmt(1000 * med(b, 'user_s') / n, 2)} / {fmt(1000 * med(b, 'sys_s') / n, 2)}",
         f"{fmt(1000 * med(f, 'user_s') / n, 2)} / {fmt(1000 * med(f, 'sys_s') / n, 2)}", ""],
        ["CPU s of a 1-item job from scratch (fixed cost)", fmt(fixed[b], 2), fmt(fixed[f], 2),
         ratio(fixed[f], fixed[b])],
        ["CPU ms/item, marginal (minus the fixed cost)", fmt(marginal[b], 2), fmt(marginal[f], 2),
         ratio(marginal[f], marginal[b])],
        ["CPU s of a rerun with nothing left to do", "", fmt(med(f, "noop_cpu_s"), 2), ""],
        ["peak RSS, MB", fmt(med(b, "maxrss_mb"), 0), fmt(med(f, "maxrss_mb"), 0),
         ratio(med(f, "maxrss_mb"), med(b, "maxrss_mb"))],
        ["mock CPU ms/request", fmt(med(b, "mock_cpu_ms_req"), 2), fmt(med(f, "mock_cpu_ms_req"), 2), ""],
    ]
    speed = med(f, "steady_items_s") / med(b, "steady_items_s")
    e2e = med(f, "e2e_items_s") / med(b, "e2e_items_s")
    cpu = med(f, "cpu_ms_item") / med(b, "cpu_ms_item")
    targets = [
        Target("items/s ≥ 0.95 × baseline", speed >= 0.95,
               f"steady {speed:.3f}× ({fmt(med(f, 'steady_items_s'))} vs {fmt(med(b, 'steady_items_s'))} "
               f"items/s of {allowed:.0f} allowed); end to end {e2e:.3f}×"),
        Target("CPU per item ≤ 1.3 × baseline", cpu <= 1.3,
               f"whole process {cpu:.2f}× ({fmt(med(f, 'cpu_ms_item'), 2)} vs {fmt(med(b, 'cpu_ms_item'), 2)} ms); "
               f"marginal {marginal[f] / marginal[b]:.2f}×"),
        Target("every attempt recorded, outputs written", True,
               f"each batchfuse run: {n} succeeded, attempt rows = requests seen by the mock "
               f"({runs[f][-1]['attempts']}), {runs[f][-1]['files']} output files"),
    ]
    return Report(
        name=NAME,
        title=TITLE,
        setup=(f"{n:,} items, mock latency {LATENCY_MS} ms ± {JITTER_MS}, concurrency {CONCURRENCY}, no rate limit, "
               f"64×64 solid images, two reference images per request (noise PNGs of {sizes}); "
               f"{rounds} round(s), medians; "
               f"{allowed:.0f} items/s is what concurrency/latency allows"),
        header=["", "baseline", "batchfuse", "batchfuse / baseline"],
        rows=rows,
        targets=targets,
        data={"n": n, "rounds": rounds, "runs": runs, "one_item_runs": ones},
        quick=quick,
    )
