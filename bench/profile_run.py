"""Where the time goes: the diagnostics behind the figures in RESULTS.md (not run by run.py).

    .venv/bin/python bench/profile_run.py cpu [--n 2000]   # py-spy --gil of `batchfuse run` in the
                                                           # throughput scenario, CPU ms/item by part
    .venv/bin/python bench/profile_run.py components       # each per-item step alone, ms/item
    .venv/bin/python bench/profile_run.py limiter          # RateLimiter pacing, idle and busy loop
    .venv/bin/python bench/profile_run.py raw FILE         # top frames of a py-spy raw profile
    .venv/bin/python bench/profile_run.py large [--size 4K] [--n 48]
                                     # py-spy (all threads, line level) of `batchfuse run` on real-size
                                     # noise images (the `large` benchmark's setup), ms/image by part
    .venv/bin/python bench/profile_run.py steps [--size 4K]   # each step on one real-size reply, alone

``cpu`` needs py-spy (``.venv/bin/pip install py-spy``). It samples only the thread holding
the GIL (``--gil``), so the parts add up to the process's Python CPU time; system time spent
with the GIL released (fsync, socket I/O) shows in the user/system split instead.
``components`` calls package internals (``Store.claim/record``, ``outputs.prepare``,
``OutputFolder.write``) on a throw-away job; if their signatures change, adapt it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CLIENT_CPU,
    MOCK_CPU,
    PY,
    ROOT,
    Mock,
    manifest,
    pin_self,
    run_measured,
    solid_png,
    write_catalog,
    write_manifest,
)

#: (part, pattern): a sample belongs to the first part whose pattern matches a frame of its stack
#: (frames searched from the innermost outwards, parts in this order).
PARTS = [
    ("imports (start-up)", r"<frozen importlib\._bootstrap"),
    ("store: record attempts + outputs", r"Store\.record "),
    ("store: claim", r"Store\.claim "),
    ("store: plan sync", r"Store\.sync_plan "),
    ("store: other", r"batchfuse/store/"),
    ("outputs: adopt check (first attempts)", r"OutputFolder\.adoptable |Scheduler\._adopt "),
    ("outputs: prepare (decode, add text)", r"prepare \(batchfuse/outputs"),
    ("outputs: write (temp, fsync, rename)", r"OutputFolder\.write "),
    ("planning (manifest, catalog, hashes)", r"batchfuse/(plan|catalog|manifest|templates)\.py"),
    ("HTTP (aiohttp, JSON, base64)", r"aiohttp/|post_json|parse_reply|json/"),
    ("thread hand-off (executor)", r"concurrent/futures|run_in_executor|to_thread|threading\.py"),
    ("logging", r"logging/"),
    ("scheduler, limiter, event loop", r"batchfuse/|asyncio/"),
]


#: The parts of handling one large reply; a sample goes to the first part one of whose patterns
#: matches a frame of its stack (frames carry line numbers: ``write (batchfuse/outputs.py:175)``).
LARGE_PARTS = [
    ("imports (start-up)", r"<frozen importlib\._bootstrap"),
    ("reply JSON: json.loads of the whole body", r"json/(__init__|decoder)\.py"),
    ("base64 decode of the image", r"_b64 \(batchfuse/providers|base64\.py"),
    ("image check: Pillow opens and decodes every pixel", r"open_image \(|PIL/"),
    ("PNG text chunks inserted (a copy of the image)", r"add_png_text"),
    ("output write: sha256 of the image", r"write \(batchfuse/outputs\.py:180\)"),
    ("output write: temp file write", r"write \(batchfuse/outputs\.py:171\)"),
    ("output write: fsync of the file", r"write \(batchfuse/outputs\.py:175\)"),
    ("output write: other (rename, folder fsync)", r"OutputFolder\.write|fsync_dirs"),
    ("HTTP: aiohttp reading the body", r"aiohttp/"),
    ("store: record attempts + outputs", r"batchfuse/store/"),
    ("planning (manifest, catalog, hashes)", r"batchfuse/(plan|catalog|manifest|templates)\.py"),
    ("thread hand-off (executor)", r"concurrent/futures|threading\.py"),
    ("scheduler, limiter, event loop", r"batchfuse/|asyncio/"),
]


def _key(frame: str) -> str:
    return re.sub(r":\d+\)", ")", frame)


def summarize_raw(path: Path, items: int | None, rate: int, top: int = 25,
                  part_list: list[tuple[str, str]] | None = None) -> None:
    """Print CPU per part (and per item) and the heaviest frames of a py-spy ``--format raw`` file."""
    total = 0
    parts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    compiled = [(name, re.compile(p)) for name, p in (part_list or PARTS)]
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[re.sub(r"\s*\(\d+\)", "", frames[0])] += n
        for f in set(map(_key, frames[1:])):
            inclusive[f] += n
        leaves[_key(frames[-1])] += n
        for name, pattern in compiled:
            if any(pattern.search(f) for f in frames[1:]):
                parts[name] += n
                break
        else:
            parts["other"] += n
    per = f", ms/item over {items}" if items else ""
    held = " with the GIL held" if part_list is None else " of CPU, all threads"
    print(f"\n{total} samples at {rate}/s = {total / rate:.2f} s{held}{per}")
    for name, n in parts.most_common():
        ms = f"{1000 * n / rate / items:7.3f} ms/item" if items else ""
        print(f"  {100 * n / total:5.1f}%  {ms}  {name}")
    print("threads: " + ", ".join(f"{t.replace('thread', '').strip(' :') or 'unnamed'} {100 * n / total:.0f}%"
                                  for t, n in threads.most_common(6)))
    print(f"heaviest batchfuse functions (with what they call), top {top}:")
    own = [(f, n) for f, n in inclusive.most_common() if "batchfuse/" in f and n < 0.15 * total]
    for f, n in own[:top]:
        print(f"  {100 * n / total:5.1f}%  {f}")
    print(f"heaviest frames by own time, top {top}:")
    for f, n in leaves.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {f}")


def profile_cpu(n: int, rate: int) -> None:
    """py-spy --gil of `batchfuse run` in the throughput scenario."""
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy).exists():
        sys.exit("py-spy not found: .venv/bin/pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="batchfuse-profile-"))
    try:
        solid_png(work / "ref.png", (48, 48))
        write_catalog(work / "catalog.csv", n)
        with Mock("--latency-ms", "200", "--jitter-ms", "50", "--image-mode", "solid", "--image-scale", "0.0625",
                  "--seed", "1") as mock:
            path = write_manifest(work / "job.yaml", manifest(
                mock.url, "bench-profile", items_from={"file": "catalog.csv", "key": "{id}"},
                prompt="A studio photograph of {title} ({id})", images=["ref.png"],
                limits={"concurrency": 64, "requests_per_minute": None},
            ))
            out = work / "profile.txt"
            m = run_measured([spy, "record", "--gil", "--threads", "--rate", str(rate), "--format", "raw",
                              "-o", out, "--", PY, "-m", "batchfuse.cli", "run", path, "--db", work / "bf.db"],
                             timeout_s=600).check()
        print(f"batchfuse run of {n} items under py-spy: {m.wall_s:.1f} s wall, user {m.user_s:.2f} s, "
              f"system {m.sys_s:.2f} s (py-spy's own CPU included)")
        summarize_raw(out, n, rate)
        kept = Path(tempfile.gettempdir()) / "batchfuse-profile.txt"
        shutil.copy(out, kept)
        print(f"raw profile kept: {kept}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def profile_large(size: str, n: int, rate: int) -> None:
    """py-spy (every thread, not just the GIL holder: zlib, hashing and file writes release it)
    of `batchfuse run` on real-size noise images, as in the `large` benchmark."""
    from large import MOCK_ARGS, PROMPT, RATIO, warm

    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy).exists():
        sys.exit("py-spy not found: .venv/bin/pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="batchfuse-profile-"))
    try:
        write_catalog(work / "catalog.csv", n)
        with Mock(*MOCK_ARGS) as mock:
            warm(mock, size)
            path = write_manifest(work / "job.yaml", manifest(
                mock.url, "bench-profile-large", items_from={"file": "catalog.csv", "key": "{id}"}, prompt=PROMPT,
                defaults={"aspect_ratio": RATIO, "image_size": size},
                limits={"concurrency": 16, "requests_per_minute": None, "timeout_s": 300},
            ))
            out = work / "profile.txt"
            m = run_measured([spy, "record", "--threads", "--rate", str(rate), "--format", "raw",
                              "-o", out, "--", PY, "-m", "batchfuse.cli", "run", path, "--db", work / "bf.db"],
                             timeout_s=900).check()
        print(f"batchfuse run of {n} {size} images under py-spy: {m.wall_s:.1f} s wall, user {m.user_s:.2f} s, "
              f"system {m.sys_s:.2f} s (py-spy's own CPU included)")
        summarize_raw(out, n, rate, part_list=LARGE_PARTS)
        kept = Path(tempfile.gettempdir()) / f"batchfuse-profile-{size}.txt"
        shutil.copy(out, kept)
        print(f"raw profile kept: {kept}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def steps(size: str) -> None:
    """Each step of handling one real-size reply, alone, in this process (CPU ms, best of 3):
    what today's code does, and the fast paths of pngcheck / b64stream / jsonscan."""
    import base64
    import hashlib
    import json
    import urllib.request

    from large import MOCK_ARGS, RATIO

    from batchfuse import b64stream, jsonscan, outputs, pngcheck
    from batchfuse.providers.gemini import _b64

    with Mock(*MOCK_ARGS) as mock:
        body = {"contents": [{"parts": [{"text": "steps"}]}],
                "generationConfig": {"responseModalities": ["IMAGE"],
                                     "imageConfig": {"aspectRatio": RATIO, "imageSize": size}}}
        request = urllib.request.Request(
            mock.url + "/v1beta/models/gemini-3-pro-image-preview:generateContent", data=json.dumps(body).encode(),
            method="POST", headers={"Content-Type": "application/json", "x-goog-api-key": "k"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=120) as resp:
            raw = resp.read()
    data = json.loads(raw)
    b64 = next(p["inlineData"]["data"] for p in data["candidates"][0]["content"]["parts"] if "inlineData" in p)
    png = base64.b64decode(b64)
    text = {"prompt": "p" * 60, "model": "m", "batchfuse:job": "j", "batchfuse:item": "i", "batchfuse:spec": "s" * 64}
    folder = Path(tempfile.mkdtemp(prefix="batchfuse-steps-"))
    print(f"one {size} reply: {len(raw) / 2**20:.1f} MiB of JSON, {len(png) / 2**20:.1f} MiB PNG")

    def write_fsync() -> None:
        with open(folder / "x.part", "wb") as f:
            f.write(png)
            f.flush()
            os.fsync(f.fileno())

    def stream_all() -> None:
        skeleton = jsonscan.loads_skeleton(raw)
        span = next(p["inlineData"]["data"] for p in skeleton["candidates"][0]["content"]["parts"]
                    if "inlineData" in p)
        checker, digest = pngcheck.PngChecker(inflate=False), hashlib.sha256()
        with open(folder / "y.part", "wb") as f:
            b64stream.decode_into(span.view(), [checker.feed, digest.update, f.write])
            f.flush()
            os.fsync(f.fileno())
        checker.finish()

    rows = [
        ("today: json.loads of the body", lambda: json.loads(raw)),
        ("today: base64 decode (providers.gemini._b64)", lambda: _b64(b64)),
        ("today: Pillow open + load (images.open_image)", lambda: outputs.open_image(png)),
        ("today: add_png_text (a copy)", lambda: outputs.add_png_text(png, text)),
        ("today: sha256", lambda: hashlib.sha256(png).hexdigest()),
        ("today/baseline: write + fsync", write_fsync),
        ("fast: jsonscan.loads_skeleton", lambda: jsonscan.loads_skeleton(raw)),
        ("fast: pngcheck, structure (CRCs, IHDR, sizes)", lambda: pngcheck.check_png(png, inflate=False)),
        (f"fast: pngcheck, + inflate ({pngcheck._inflate_lib.__name__})", lambda: pngcheck.check_png(png)),
        ("fast: b64stream.decode_into(sha256)", lambda: b64stream.decode_into(b64, [hashlib.sha256().update])),
        ("fast: all in one pass: skeleton, decode+check+hash+write, fsync", stream_all),
    ]
    for label, fn in rows:
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            fn()
            best = min(best, time.process_time() - t0)
        print(f"  {1000 * best:7.1f} ms  {label}")
    shutil.rmtree(folder, ignore_errors=True)


def _ru() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _span(label: str, fn, n: int) -> None:  # type: ignore[no-untyped-def]
    u0, s0 = _ru()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    u1, s1 = _ru()
    print(f"  {label:46s} {1000 * (u1 - u0 + s1 - s0) / n:6.3f} ms CPU/item "
          f"(user {1000 * (u1 - u0) / n:.3f}, system {1000 * (s1 - s0) / n:.3f}; wall {1000 * wall / n:.3f})")


def components(n: int) -> None:
    """Each per-item step of a run, alone, on a throw-away job (no HTTP)."""
    from PIL import Image

    from batchfuse.outputs.files import OutputFolder
    from batchfuse.outputs.png import prepare
    from batchfuse.plan.preview import load
    from batchfuse.records import AttemptRecord, ItemState
    from batchfuse.run.job import open_store, sync

    work = Path(tempfile.mkdtemp(prefix="batchfuse-components-"))
    try:
        solid_png(work / "ref.png", (48, 48))
        write_catalog(work / "catalog.csv", n)
        write_manifest(work / "job.yaml", manifest(
            "http://127.0.0.1:9", "bench-components", items_from={"file": "catalog.csv", "key": "{id}"},
            prompt="A studio photograph of {title} ({id})", images=["ref.png"],
        ))
        loaded = load(work / "job.yaml")
        store = open_store(loaded, str(work / "bf.db"))
        job, _ = sync(store, loaded)
        run_id, runner = store.start_run(job, exclusive=True)
        claimed: list = []

        def claim() -> None:
            cursor = -1
            while batch := store.claim(job, runner, 128, 60.0, 8, cursor):
                claimed.extend(batch)
                cursor = batch[-1].ordinal

        print(f"per-item steps over {n} items:")
        _span("store.claim, pages of 128", claim, n)
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (120, 30, 200)).save(buf, "PNG")
        png = buf.getvalue()
        prepared: list = []

        def prep() -> None:
            for it in claimed:
                prepared.append(prepare(png, f"{it.key}.png", {"prompt": it.spec["prompt"], "batchfuse:item": it.key,
                                                               "batchfuse:spec": it.spec_hash}))

        _span("outputs.prepare (decode PNG, add iTXt)", prep, n)
        folder = OutputFolder(work / "out", runner)
        try:  # the API since outputs are written in groups: write(PendingOutputs, dirs)
            from batchfuse.outputs.files import PendingOutputs

            def write_one(name: str, image: object) -> list:
                return folder.write(PendingOutputs([name], [image]))
        except ImportError:  # the older write(names, images)

            def write_one(name: str, image: object) -> list:
                return folder.write([name], [image])

        written: list = []
        _span("OutputFolder.write (temp, fsync, rename, fsync dir)",
              lambda: written.extend(write_one(f"{it.key}.png", p) for it, p in zip(claimed, prepared, strict=True)),
              n)
        real_fsync = os.fsync
        os.fsync = lambda fd: None
        try:
            _span("  the same with fsync switched off",
                  lambda: [write_one(f"{it.key}-b.png", p) for it, p in zip(claimed, prepared, strict=True)], n)
        finally:
            os.fsync = real_fsync
        now = time.time()
        records = [
            AttemptRecord(item_id=it.id, number=1, spec_hash=it.spec_hash, started_at=now, ended_at=now,
                          outcome="succeeded", item_state=ItemState.succeeded, counts=True, http_status=200,
                          latency_ms=200.0, prompt_tokens=10, output_tokens=1210, total_tokens=1220,
                          finish_reason="STOP", outputs=tuple(w))
            for it, w in zip(claimed, written, strict=True)
        ]
        share = len(records) // 3
        for size in (1, 4, 32):
            part, records = records[:share], records[share:]

            def record(part: list = part, size: int = size) -> None:
                for i in range(0, len(part), size):
                    store.record(run_id, runner, part[i:i + size], 60.0)

            _span(f"store.record, {size} per transaction", record, len(part))
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def limiter(n: int) -> None:
    """How close RateLimiter(1200) gets to its 1,176/min, with the event loop idle or busy."""
    from batchfuse.run.ratelimit import RateLimiter

    async def one(busy_ms: float) -> None:
        lim = RateLimiter(1200)
        stop = False

        async def noise() -> None:  # other work on the loop: busy_ms of CPU every 5 ms
            while not stop:
                t = time.perf_counter()
                while time.perf_counter() - t < busy_ms / 1000:
                    pass
                await asyncio.sleep(0.005)

        task = asyncio.create_task(noise()) if busy_ms else None
        times: list[float] = []

        async def worker() -> None:
            while len(times) < n:
                await lim.acquire()
                times.append(time.monotonic())

        await asyncio.gather(*(worker() for _ in range(8)))
        stop = True
        if task:
            await task
        rate = (len(times) - 1) / (times[-1] - times[0]) * 60
        gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
        print(f"  loop busy {busy_ms:.0f} ms per 5 ms: {rate:7.1f}/min = {rate / 1200:.2%} of 1200 "
              f"(aims at {1200 * lim.headroom:.0f}); gap min {1000 * gaps[0]:.2f}, median "
              f"{1000 * gaps[len(gaps) // 2]:.2f}, p99 {1000 * gaps[int(len(gaps) * 0.99)]:.2f} ms "
              f"(interval {1000 * lim.interval:.2f})")

    print(f"RateLimiter(1200), {n} acquires by 8 tasks:")
    for busy in (0, 1, 2):
        asyncio.run(one(busy))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["cpu", "components", "limiter", "raw", "large", "steps"])
    p.add_argument("--size", default="4K", choices=["1K", "2K", "4K"], help="for large and steps")
    p.add_argument("file", nargs="?", help="for raw: the py-spy raw profile")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = p.parse_args()
    pin_self(CLIENT_CPU if args.what in ("components", "limiter", "steps") else MOCK_CPU)
    os.chdir(ROOT)
    if args.what == "cpu":
        profile_cpu(args.n or 2000, args.rate)
    elif args.what == "components":
        components(args.n or 2000)
    elif args.what == "large":
        profile_large(args.size, args.n or 48, args.rate)
    elif args.what == "steps":
        steps(args.size)
    elif args.what == "limiter":
        limiter(args.n or 300)
    else:
        if not args.file:
            sys.exit("raw needs the profile file")
        summarize_raw(Path(args.file), args.n, args.rate)


if __name__ == "__main__":
    main()
