"""5. Shared images: a 2 MB reference image used by 10,000 items is read and encoded once.

A 2 MB PNG (incompressible noise, 836×836) is the only reference image of 10,000 items. The
library API runs the job in a subprocess pinned to the client core
(``run_job(path, RunOptions(sample=200))``: 200 items spread over the plan, concurrency 32, so
32 requests want the image at the same moment) and reports ``RunResult.image_reads`` and
``image_encodes``; the plan-time check's reads of the same image come from
``load(path).planner.inspector.reads``. Mock latency 50 ms.

``--quick``: sample 64.

    python bench/shared_images.py --worker MANIFEST DB SAMPLE     # the measured child
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

NAME = "shared_images"
TITLE = "Shared reference image"
N_ITEMS = 10_000
CONCURRENCY = 32


def noise_png(path: Path, side: int = 836) -> Path:
    from PIL import Image

    Image.frombytes("RGB", (side, side), random.Random(1).randbytes(side * side * 3)).save(path)
    return path


def worker(manifest_path: str, db: str, sample: int) -> None:
    from batchfuse.plan.preview import load
    from batchfuse.run.job import RunOptions, run_job

    loaded = load(Path(manifest_path))
    plan_reads = loaded.planner.inspector.reads
    result = asyncio.run(run_job(Path(manifest_path), RunOptions(db=db, sample=sample)))
    print(json.dumps({
        "exit_code": result.exit_code, "reason": result.reason, "succeeded": result.succeeded,
        "requests": result.requests, "image_reads": result.image_reads, "image_encodes": result.image_encodes,
        "plan_items": loaded.items, "plan_reads": plan_reads,
    }))


def run(quick: bool, work: Path) -> object:
    from common import (
        PY,
        Mock,
        Report,
        Target,
        fmt,
        last_json_line,
        manifest,
        output_files,
        run_measured,
        write_catalog,
        write_manifest,
    )

    sample = 64 if quick else 200
    ref = noise_png(work / "reference.png")
    size_mb = ref.stat().st_size / 2**20
    write_catalog(work / "catalog.csv", N_ITEMS)
    with Mock("--latency-ms", "50", "--jitter-ms", "10", "--image-mode", "solid", "--image-scale", "0.0625") as mock:
        path = write_manifest(work / "job.yaml", manifest(
            mock.url, "bench-shared", items_from={"file": "catalog.csv", "key": "{id}"},
            prompt="Put {title} into the scene of image 1", images=["reference.png"],
            limits={"concurrency": CONCURRENCY, "requests_per_minute": None},
        ))
        m = run_measured([PY, __file__, "--worker", path, work / "batchfuse.db", sample], timeout_s=600).check()
        requests = len(mock.generations())
    r = last_json_line(m.stdout)
    files = output_files(work / "out")
    rows = [
        ["items in the plan", f"{r['plan_items']:,}"],
        ["items run (sample)", str(r["succeeded"])],
        ["requests (mock log)", str(requests)],
        ["reference image", f"{size_mb:.2f} MB PNG"],
        ["reads at plan time (10,000 items checked)", str(r["plan_reads"])],
        ["reads during the run (RunResult.image_reads)", str(r["image_reads"])],
        ["encodes during the run (RunResult.image_encodes)", str(r["image_encodes"])],
        ["wall time, s", fmt(m.wall_s, 2)],
        ["CPU s", fmt(m.cpu_s, 2)],
        ["peak RSS, MB", fmt(m.maxrss_mb, 0)],
    ]
    once = r["image_reads"] == 1 and r["image_encodes"] == 1
    targets = [
        Target("read and encoded once", once,
               f"{r['image_reads']} read(s), {r['image_encodes']} encode(s) for {r['succeeded']} requests "
               f"with {CONCURRENCY} in flight; plan-time check read it {r['plan_reads']} time(s) for "
               f"{r['plan_items']:,} items"),
        Target("all sampled items done", r["succeeded"] == sample and files == sample,
               f"{r['succeeded']} of {sample} succeeded, {files} output files, exit {r['exit_code']}"),
    ]
    return Report(
        name=NAME, title=TITLE,
        setup=(f"a {size_mb:.1f} MB reference image shared by {N_ITEMS:,} items; run_job with sample={sample}, "
               f"concurrency {CONCURRENCY}, mock latency 50 ms"),
        header=["", "value"], rows=rows, targets=targets, data={"worker": r, "requests": requests},
        quick=quick,
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(__doc__)
