"""The baseline: a minimal aiohttp client that does what batchfuse does on the wire and on disk,
and nothing else.

Same requests (POST ``/v1beta/models/MODEL:generateContent``, header ``x-goog-api-key``, the
same JSON body: ``contents[0].parts`` = text + ``inline_data`` per reference image, the same
``generationConfig``), the same concurrency, the same rate limiter
(:class:`batchfuse.ratelimit.RateLimiter`), and the same images written (the reply's
``inlineData`` base64-decoded into a file). It records nothing, checks nothing, writes plainly
(no temp file, no fsync) and retries a non-200 answer after ``Retry-After`` (or 1 s).

    python bench/baseline.py --url http://127.0.0.1:PORT --n 2000 --concurrency 64 --out DIR \
        [--rpm 1200] [--image ref.png ...] [--aspect-ratio 16:9 --image-size 4K]

Prints one JSON line: items written, requests, answers by status, elapsed seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import mimetypes
import os
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

from batchfuse.run.ratelimit import RateLimiter


async def main(args: argparse.Namespace) -> dict:
    key = os.environ.get(args.key_env, "")
    if not key:
        sys.exit(f"set {args.key_env}")
    refs = [
        {"inline_data": {"mime_type": mimetypes.guess_type(p)[0] or "image/png",
                         "data": base64.b64encode(Path(p).read_bytes()).decode("ascii")}}
        for p in args.image
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = f"{args.url}/v1beta/models/{args.model}:generateContent"
    headers = {"x-goog-api-key": key, "Content-Type": "application/json"}
    limiter = RateLimiter(args.rpm)
    statuses: Counter[int] = Counter()
    written = 0
    next_index = 0

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal written
        body = {
            "contents": [{"parts": [{"text": args.prompt.format(id=f"item-{i:06d}", title=f"product {i}")}, *refs]}],
            "generationConfig": {"imageConfig": {"aspectRatio": args.aspect_ratio, "imageSize": args.image_size},
                                 "responseModalities": ["IMAGE"]},
        }
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        for _ in range(args.max_attempts):
            await limiter.acquire()
            async with session.post(url, data=payload, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
            statuses[status] += 1
            if status == 200:
                data = json.loads(raw)
                parts = data["candidates"][0]["content"]["parts"]
                image = next(p["inlineData"]["data"] for p in parts if "inlineData" in p)
                with open(out / f"item-{i:06d}.png", "wb") as f:
                    f.write(base64.b64decode(image))
                written += 1
                return
            await asyncio.sleep(float(retry_after or 1))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index
        while next_index < args.n:
            i = next_index
            next_index += 1
            await one(session, i)

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    return {
        "written": written,
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "elapsed_s": time.monotonic() - started,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rpm", type=float, default=None, help="requests per minute (RateLimiter); none by default")
    p.add_argument("--out", required=True)
    p.add_argument("--image", action="append", default=[], help="reference image sent with every item")
    p.add_argument("--prompt", default="A studio photograph of {title} ({id})")
    p.add_argument("--model", default="gemini-3-pro-image-preview")
    p.add_argument("--aspect-ratio", default="1:1")
    p.add_argument("--image-size", default="1K")
    p.add_argument("--key-env", default="BENCH_API_KEY")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--max-attempts", type=int, default=8)
    return p.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args()))))
