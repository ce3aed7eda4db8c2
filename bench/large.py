"""6. Large images: replies of real pixel size and real entropy (2K and 4K), batchfuse against
the bare aiohttp baseline.

The mock serves ``--image-mode noise --image-scale 1`` PNGs: random pixels whose PNG is about as
large as a real reply (5504×3072 at 4K 16:9: ~21 MB, ~29 MB of base64 in the JSON; 2752×1536 at
2K: ~5.4 MB), rendered once per size and cached, so its CPU per request is a cache hit and a
JSON dump; one warm-up request renders the size before the clock starts. Thought images are
off, so a reply carries one image, as the issue's measurements did. Latency 1.5 s, concurrency
16, 48 items per run; rounds alternate which client goes first; medians.

Per client and size: CPU per image (user + system of the whole process / images), peak RSS,
wall time, and the memory per in-flight reply: (peak RSS − peak RSS of the same client doing
one item) / (concurrency − 1), as a multiple of the PNG's size.

batchfuse is checked to have done its job: every item succeeded, one attempt row per request,
one output file per item.
"""

from __future__ import annotations

import json
import statistics
import urllib.request
from pathlib import Path
from typing import Any

from common import (
    GENERATE_PATH,
    KEY,
    Mock,
    Report,
    Target,
    baseline,
    batchfuse,
    fmt,
    last_json_line,
    manifest,
    output_files,
    ratio,
    settle,
    status_json,
    write_catalog,
    write_manifest,
)

NAME = "large"
TITLE = "Large images (2K, 4K)"
LATENCY_MS = 1500
RATIO = "16:9"
MOCK_ARGS = ["--latency-ms", str(LATENCY_MS), "--image-mode", "noise", "--image-scale", "1",
             "--no-thought-images", "--seed", "1"]
PROMPT = "A studio photograph of {title} ({id})"
CPU_TARGET, RSS_TARGET = 1.3, 1.5


def warm(mock: Mock, image_size: str) -> int:
    """One request so the mock renders (and caches) this size before anything is measured;
    returns the PNG's size in bytes."""
    body = {"contents": [{"parts": [{"text": "warm-up"}]}],
            "generationConfig": {"responseModalities": ["IMAGE"],
                                 "imageConfig": {"aspectRatio": RATIO, "imageSize": image_size}}}
    request = urllib.request.Request(
        mock.url + GENERATE_PATH, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "x-goog-api-key": KEY},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=120) as resp:
        data = json.loads(resp.read())
    part = next(p for p in data["candidates"][0]["content"]["parts"] if "inlineData" in p)
    return len(part["inlineData"]["data"]) * 3 // 4


def measure(kind: str, n: int, concurrency: int, image_size: str, folder: Path) -> dict[str, Any]:
    """One run of one client against a fresh, warmed mock, in a new folder."""
    folder.mkdir(parents=True)
    settle()
    with Mock(*MOCK_ARGS) as mock:
        png_bytes = warm(mock, image_size)
        mock.reset()
        mock_cpu0 = mock.cpu_s()
        if kind == "baseline":
            result = baseline(mock.url, n, concurrency, folder / "out", prompt=PROMPT, aspect_ratio=RATIO,
                              image_size=image_size, timeout_s=900).check()
            summary = last_json_line(result.stdout)
            if summary["written"] != n:
                raise RuntimeError(f"baseline wrote {summary['written']} of {n}")
            extra: dict[str, Any] = {}
        else:
            write_catalog(folder / "catalog.csv", n)
            path = write_manifest(folder / "job.yaml", manifest(
                mock.url, f"bench-{NAME}",
                items_from={"file": "catalog.csv", "key": "{id}"}, prompt=PROMPT,
                defaults={"aspect_ratio": RATIO, "image_size": image_size},
                limits={"concurrency": concurrency, "requests_per_minute": None, "timeout_s": 300},
            ))
            db = folder / "batchfuse.db"
            result = batchfuse("run", path, "--db", db, timeout_s=900).check()
            if n:
                status = status_json(path, db)
                requests_seen = len(mock.generations())
                files = output_files(folder / "out")
                if not (status["items"]["succeeded"] == n and status["attempts"] == requests_seen and files == n):
                    raise RuntimeError(
                        f"batchfuse did not do the whole job: {status['items']}, attempts {status['attempts']}, "
                        f"requests {requests_seen}, files {files}"
                    )
                extra = {"attempts": status["attempts"], "files": files}
            else:
                extra = {}
        gens = mock.generations()
        mock_cpu = mock.cpu_s() - mock_cpu0
    return {
        "n": n,
        "wall_s": result.wall_s,
        "cpu_s": result.cpu_s,
        "user_s": result.user_s,
        "sys_s": result.sys_s,
        "cpu_ms_image": 1000 * result.cpu_s / max(1, n),
        "maxrss_mb": result.maxrss_mb,
        "mock_cpu_ms_req": 1000 * mock_cpu / max(1, len(gens)),
        "png_mb": png_bytes / 2**20,
        **extra,
    }


def compare(n: int, concurrency: int, image_size: str, rounds: int, work: Path, tag: str) -> dict[str, Any]:
    """Alternating rounds of both clients at one size, plus each client's peak RSS for one item."""
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "batchfuse": []}
    for r in range(rounds):
        order = ["baseline", "batchfuse"] if r % 2 == 0 else ["batchfuse", "baseline"]
        for kind in order:
            m = measure(kind, n, concurrency, image_size, work / f"{tag}-{kind}-{r + 1}")
            runs[kind].append(m)
            print(f"  {tag} round {r + 1}/{rounds} {kind:9s}: {m['cpu_ms_image']:.0f} ms CPU/image, "
                  f"{m['maxrss_mb']:.0f} MB peak, {m['wall_s']:.1f} s wall, mock {m['mock_cpu_ms_req']:.0f} ms/req",
                  flush=True)
    one = {kind: measure(kind, 1, concurrency, image_size, work / f"{tag}-{kind}-one")["maxrss_mb"] for kind in runs}
    med = {kind: {key: statistics.median(m[key] for m in runs[kind])
                  for key in ("wall_s", "cpu_s", "user_s", "sys_s", "cpu_ms_image", "maxrss_mb", "mock_cpu_ms_req",
                              "png_mb")} for kind in runs}
    for kind in runs:
        med[kind]["one_rss_mb"] = one[kind]
        med[kind]["per_reply_mb"] = (med[kind]["maxrss_mb"] - one[kind]) / (concurrency - 1)
        med[kind]["per_reply_x"] = med[kind]["per_reply_mb"] / med[kind]["png_mb"]
    return {"n": n, "concurrency": concurrency, "image_size": image_size, "rounds": rounds, "runs": runs,
            "median": med}


def rows_for(label: str, c: dict[str, Any]) -> list[list[str]]:
    b, f = c["median"]["baseline"], c["median"]["batchfuse"]
    return [
        [f"**{label}**: CPU ms/image", fmt(b["cpu_ms_image"], 0), fmt(f["cpu_ms_image"], 0),
         ratio(f["cpu_ms_image"], b["cpu_ms_image"])],
        ["  of which user / system, s (whole run)", f"{fmt(b['user_s'])} / {fmt(b['sys_s'])}",
         f"{fmt(f['user_s'])} / {fmt(f['sys_s'])}", ""],
        ["  peak RSS, MB", fmt(b["maxrss_mb"], 0), fmt(f["maxrss_mb"], 0), ratio(f["maxrss_mb"], b["maxrss_mb"])],
        ["  memory per in-flight reply, MB (× PNG size)", f"{fmt(b['per_reply_mb'])} ({b['per_reply_x']:.1f}×)",
         f"{fmt(f['per_reply_mb'])} ({f['per_reply_x']:.1f}×)", ratio(f["per_reply_mb"], b["per_reply_mb"])],
        ["  wall time, s", fmt(b["wall_s"], 1), fmt(f["wall_s"], 1), ratio(f["wall_s"], b["wall_s"])],
        ["  PNG size, MB / mock CPU ms per request", f"{fmt(b['png_mb'])} / {fmt(b['mock_cpu_ms_req'], 0)}",
         f"{fmt(f['png_mb'])} / {fmt(f['mock_cpu_ms_req'], 0)}", ""],
    ]


def targets_for(label: str, c: dict[str, Any], cpu: bool = True) -> list[Target]:
    b, f = c["median"]["baseline"], c["median"]["batchfuse"]
    out = []
    if cpu:
        x = f["cpu_ms_image"] / b["cpu_ms_image"]
        out.append(Target(f"{label}: CPU per image ≤ {CPU_TARGET} × baseline", x <= CPU_TARGET,
                          f"{x:.2f}× ({fmt(f['cpu_ms_image'], 0)} vs {fmt(b['cpu_ms_image'], 0)} ms)"))
    x = f["maxrss_mb"] / b["maxrss_mb"]
    out.append(Target(f"{label}: peak RSS ≤ {RSS_TARGET} × baseline", x <= RSS_TARGET,
                      f"{x:.2f}× ({fmt(f['maxrss_mb'], 0)} vs {fmt(b['maxrss_mb'], 0)} MB); per in-flight reply "
                      f"{fmt(f['per_reply_mb'])} MB = {f['per_reply_x']:.1f}× the {fmt(f['png_mb'])} MB PNG "
                      f"(baseline {b['per_reply_x']:.1f}×)"))
    return out


def run(quick: bool, work: Path) -> Report:
    n, concurrency, rounds = (16, 8, 1) if quick else (48, 16, 3)
    results = {size: compare(n, concurrency, size, rounds, work, size) for size in ("2K", "4K")}
    rows = rows_for("2K", results["2K"]) + rows_for("4K", results["4K"])
    targets = targets_for("2K", results["2K"]) + targets_for("4K", results["4K"])
    return Report(
        name=NAME,
        title=TITLE,
        setup=(f"{n} items per run at 2K and at 4K ({RATIO}), real-entropy noise PNGs of real pixel size "
               f"(mock `--image-mode noise`), mock latency {LATENCY_MS} ms, concurrency {concurrency}, one image "
               f"per reply (no thought images); {rounds} alternating round(s), medians; memory per in-flight reply "
               f"= (peak RSS − peak RSS of a 1-item run) / (concurrency − 1)"),
        header=["", "baseline", "batchfuse", "batchfuse / baseline"],
        rows=rows,
        targets=targets,
        data=results,
        quick=quick,
    )
