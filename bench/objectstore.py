"""Which S3 library for the object-store output target: obstore or aiobotocore, measured.

Uploads ``--count`` PNGs of ``--mb`` MB each (random pixels, so incompressible, real PNGs
made with Pillow) to moto's S3 server on 127.0.0.1 (``moto.server.ThreadedMotoServer`` in its
own process, pinned to the first core), at most 8 at a time, with each library in turn, in
alternating rounds (``--rounds``, medians reported).  Each upload round is its own client
process, pinned to the second core: its wall time and CPU (user + system, from
``resource.getrusage`` around the uploads only, so imports are not counted) and its import
time are printed as JSON and collected here.

A client that prints its figures and then dies (obstore 0.12.1 aborts with SIGABRT at
interpreter exit in about half the runs here) is counted in the last column.

Variants: single PUT (``put_object`` / ``put_async(use_multipart=False)``) and multipart with
5 MiB parts (aiobotocore: create/upload_part/complete by hand, parts in sequence; obstore:
``put_async`` with its default chunking and 12 parts in parallel).

    .venv/bin/pip install obstore                    # the other candidate (not a dependency)
    .venv/bin/python bench/objectstore.py            # 20 x 8 MB, 3 rounds; writes its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PY = sys.executable
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
SERVER_CPU, CLIENT_CPU = (CPUS[0], CPUS[1]) if len(CPUS) >= 2 else (None, None)
BEGIN, END = "<!-- objectstore:begin -->", "<!-- objectstore:end -->"
CHOICE = (
    "**Choice: aiobotocore.** obstore moves the bytes with about half the client CPU (8 vs 16 ms per 8 MB "
    "image: noise next to a generation) and a little faster against this server, but it cannot be kept: its "
    "process died with SIGABRT at interpreter exit in most runs (which would turn batchfuse's exit codes into "
    "134), its `head` returns no user metadata (adoption would need a ranged GET), and it reads no "
    "`~/.aws` profiles without boto3. aiobotocore brings botocore's whole credential chain (environment, "
    "profiles, SSO, instance and container roles), `head_object` with the metadata, `IfNoneMatch` on PUT and "
    "on completing a multipart upload, error codes to tell a missing bucket from refused credentials, and its "
    "retry modes; it rides on aiohttp, which batchfuse already uses. Its cost: botocore (31 MB installed) and "
    "a narrow botocore pin; multipart is a few lines of our own."
)
VARIANTS = ["aiobotocore-put", "obstore-put", "aiobotocore-multipart", "obstore-multipart"]

SERVER = """
import os, sys
from moto.server import ThreadedMotoServer
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
s.start()
print(s.get_host_and_port()[1], flush=True)
sys.stdin.read()
"""

CLIENT = r"""
import asyncio, json, os, resource, sys, time
from pathlib import Path
variant, endpoint, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
t0 = time.perf_counter()
if variant.startswith("obstore"):
    import obstore
    from obstore.store import S3Store
else:
    from aiobotocore.session import get_session
import_s = time.perf_counter() - t0
files = sorted(folder.glob("*.png"))
bodies = [f.read_bytes() for f in files]
PART = 5 * 1024 * 1024

async def main():
    sem = asyncio.Semaphore(8)
    if variant.startswith("obstore"):
        store = S3Store("bench", endpoint=endpoint, region="us-east-1", client_options={"allow_http": True})
        multipart = variant.endswith("multipart")
        async def one(i, body):
            async with sem:
                await obstore.put_async(store, f"{variant}/{i}.png", body, use_multipart=multipart,
                                        attributes={"Content-Type": "image/png", "batchfuse-item": str(i)})
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        return r0, w0
    session = get_session()
    async with session.create_client("s3", endpoint_url=endpoint, region_name="us-east-1") as s3:
        async def one(i, body):
            key = f"{variant}/{i}.png"
            async with sem:
                if variant.endswith("put"):
                    await s3.put_object(Bucket="bench", Key=key, Body=body, ContentType="image/png",
                                        Metadata={"batchfuse-item": str(i)})
                    return
                up = await s3.create_multipart_upload(Bucket="bench", Key=key, ContentType="image/png",
                                                      Metadata={"batchfuse-item": str(i)})
                parts = []
                for n, start in enumerate(range(0, len(body), PART), start=1):
                    r = await s3.upload_part(Bucket="bench", Key=key, UploadId=up["UploadId"], PartNumber=n,
                                             Body=body[start:start + PART])
                    parts.append({"PartNumber": n, "ETag": r["ETag"]})
                await s3.complete_multipart_upload(Bucket="bench", Key=key, UploadId=up["UploadId"],
                                                   MultipartUpload={"Parts": parts})
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
        return r0, w0

r0, w0 = asyncio.run(main())
wall = time.perf_counter() - w0
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "import_s": import_s, "peak_rss_mb": r1.ru_maxrss / 1024}))
"""


def make_pngs(folder: Path, count: int, mb: float) -> int:
    from PIL import Image

    side = int((mb * 1_000_000 / 3) ** 0.5)
    total = 0
    for i in range(count):
        buf = io.BytesIO()
        Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, "PNG", compress_level=1)
        (folder / f"{i:03d}.png").write_bytes(buf.getvalue())
        total += len(buf.getvalue())
    return total


def pinned(cpu: int | None):  # noqa: ANN201
    return (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--mb", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("AWS_PROFILE", None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        total = make_pngs(folder, args.count, args.mb)
        server = subprocess.Popen([PY, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  stderr=subprocess.DEVNULL,
                                  env=env, preexec_fn=pinned(SERVER_CPU))
        try:
            port = int(server.stdout.readline())
            endpoint = f"http://127.0.0.1:{port}"
            import boto3

            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                         aws_secret_access_key="bench-secret").create_bucket(Bucket="bench")
            runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
            for rnd in range(args.rounds):
                order = VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    out = subprocess.run([PY, "-c", CLIENT, variant, endpoint, str(folder)], env=env,
                                         capture_output=True, text=True, preexec_fn=pinned(CLIENT_CPU))
                    if not out.stdout.strip():
                        raise SystemExit(f"{variant} failed ({out.returncode}):\n{out.stderr[-3000:]}")
                    fig = json.loads(out.stdout.strip().splitlines()[-1])  # the uploads finished
                    fig["exit_crash"] = float(out.returncode != 0)  # ... but the process died at exit
                    runs[variant].append(fig)
                    print(f"round {rnd + 1} {variant:22s} wall {fig['wall_s']:.2f} s cpu {fig['cpu_s']:.2f} s", flush=True)
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    rows = []
    for variant in VARIANTS:
        med = {k: statistics.median(r[k] for r in runs[variant]) for k in runs[variant][0]}
        rows.append(
            f"| {variant} | {med['wall_s']:.2f} | {total / 1e6 / med['wall_s']:.0f} | {med['cpu_s']:.2f} | "
            f"{med['cpu_s'] * 1000 / args.count:.0f} | {med['import_s'] * 1000:.0f} | {med['peak_rss_mb']:.0f} | "
            f"{sum(r['exit_crash'] for r in runs[variant]):.0f} of {len(runs[variant])} |"
        )
    section = "\n".join([
        BEGIN,
        "## Object store: obstore vs aiobotocore (`bench/objectstore.py`)",
        "",
        f"*{args.count} PNGs of {total / args.count / 1e6:.1f} MB (random pixels), at most 8 uploads at a time, to moto's "
        f"S3 server on 127.0.0.1 (its own process, one core; client on the other); {args.rounds} alternating rounds, "
        f"medians. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Moto (Python) is the server, so wall "
        "time is bounded by it; the client's CPU is the library's own cost.*",
        "",
        "| variant | wall s | MB/s | client CPU s | CPU ms/image | import ms | peak RSS MB | died at exit |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
        *rows,
        "",
        CHOICE,
        END,
    ])
    print(section)
    if not args.no_write:
        path = BENCH / "RESULTS.md"
        text = path.read_text(encoding="utf-8")
        if BEGIN in text:
            text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
