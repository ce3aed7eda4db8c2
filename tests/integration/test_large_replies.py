"""Replies checked on the fast path: a reply's PNG is decoded from base64 in pieces straight into a
temp file and checked on the way (chunk CRCs, the zlib stream, the IHDR's dimensions against the
data), large bodies are spooled to disk, and whatever is wrong with an image, it is never
recorded as a success and leaves no file behind.

Crafted replies come from a tiny HTTP server on 127.0.0.1 that answers every POST with the
body it was given; real-size images come from the mock's ``noise`` mode."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchfuse.providers.http import SPOOL_BODY_BYTES
from tests.conftest import cli, cli_process, generation_requests, manifest

# -- crafted PNGs --------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(width: int, height: int, fault: str = "none", seed: int = 7) -> bytes:
    """An RGB PNG of random pixels, whole or with one ``fault``: ``bad_crc`` (the first IDAT
    chunk's CRC wrong, its data intact: only the CRC check can tell), ``truncated_zlib`` (the
    zlib stream cut short, every chunk's CRC right), ``ihdr_dims`` (IHDR one row taller than
    the data, every CRC right)."""
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))
    stream = zlib.compress(rows, 1)
    if fault == "truncated_zlib":
        stream = stream[: len(stream) * 2 // 3]
    ihdr_height = height + 1 if fault == "ihdr_dims" else height
    idats = [_chunk(b"IDAT", stream[i : i + 65536]) for i in range(0, len(stream), 65536)]
    png = bytearray(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, ihdr_height, 8, 2, 0, 0, 0))
        + b"".join(idats)
        + _chunk(b"IEND", b"")
    )
    if fault == "bad_crc":
        png[8 + 25 + len(idats[0]) - 1] ^= 0x5A  # the last byte of the first IDAT's CRC
    return bytes(png)


#: Small: prepared in memory.  Large: its body (base64 in JSON) is over the spool threshold, so
#: the body goes to a temp file and the PNG is staged as it is decoded.
SIZES = {"small": (40, 30), "large": (1400, 1100)}


def gemini_reply(png: bytes) -> bytes:
    return json.dumps({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "here it is"},
                {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}},
            ]},
            "finishReason": "STOP",
        }],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1120, "totalTokenCount": 1130},
    }).encode()


def openai_reply(png: bytes) -> bytes:
    return json.dumps({"created": 1767225600, "data": [{"b64_json": base64.b64encode(png).decode()}]}).encode()


class CraftedServer:
    """Answers every POST on 127.0.0.1 with ``body`` (200, application/json) and counts them."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.posts = 0
        #: False: no Content-Length, the body ends when the connection closes (HTTP/1.0)
        self.sized = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if outer.sized:
                    self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def crafted():
    server = CraftedServer()
    try:
        yield server
    finally:
        server.close()


def leftovers(out: Path) -> list[str]:
    """Files under the output folder other than the marker: temp files and outputs."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != ".batchfuse-job")


def recorded_output_matches_file(job) -> Path:
    ((path, sha, size, width, height),) = job.sql("SELECT path, sha256, bytes, width, height FROM outputs")
    data = (job.out / path).read_bytes()
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha, size)
    with Image.open(job.out / path) as im:
        im.load()  # the whole image decodes
        assert im.size == (width, height)
        assert im.text["batchfuse:item"] == "a" and im.text["prompt"] == "make it"
    return job.out / path


# -- the tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["small", "large", "large-unsized"])
def test_a_whole_crafted_png_is_written_with_its_metadata(job, crafted, size):
    width, height = SIZES[size.partition("-")[0]]
    png = crafted_png(width, height)
    crafted.body = gemini_reply(png)
    crafted.sized = size != "large-unsized"  # spooled once it grows past the threshold
    assert (len(crafted.body) > SPOOL_BODY_BYTES) == size.startswith("large")
    job.write(manifest(crafted.url, [{"id": "a", "prompt": "make it"}]))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    path = recorded_output_matches_file(job)
    with Image.open(path) as written, Image.open(io.BytesIO(png)) as sent:
        assert written.tobytes() == sent.tobytes()  # the pixels as sent, metadata added
    assert leftovers(job.out) == ["a.png"]


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("bad_crc", "CRC mismatch in IDAT chunk"),
        ("truncated_zlib", "zlib stream is truncated"),
        ("ihdr_dims", "needs"),  # "IDAT inflates to N bytes; the IHDR's WxH needs M"
    ],
)
def test_a_corrupt_png_is_never_a_success_and_leaves_no_file(job, crafted, size, fault, said):
    width, height = SIZES[size]
    crafted.body = gemini_reply(crafted_png(width, height, fault))
    job.write(manifest(crafted.url, [{"id": "a", "prompt": "make it"}], limits={"max_attempts": 2}))
    result = cli("run", job.manifest)
    assert result.exit_code == 1, result.stderr
    assert crafted.posts == 2  # a bad image is transient: tried again, then the item fails
    assert job.sql("SELECT state, error_class FROM items") == [("failed", "exhausted")]
    messages = [m for (m,) in job.sql("SELECT error_message FROM attempts ORDER BY id")]
    assert len(messages) == 2 and all("cannot be decoded" in m and said in m for m in messages), messages
    assert job.sql("SELECT count(*) FROM outputs") == [(0,)]
    assert job.sql("SELECT count(*) FROM attempts WHERE outcome = 'succeeded'") == [(0,)]
    assert leftovers(job.out) == []  # no final file, no staged temp file


def test_openai_b64_json_takes_the_same_path(job, crafted, monkeypatch):
    monkeypatch.setenv("RELAY_KEY", "relay-test-key-123")

    def openai_job() -> dict:
        data = manifest(crafted.url, [{"id": "a", "prompt": "make it"}], limits={"max_attempts": 1})
        data["defaults"] = {"size": "1:1", "response_format": "b64_json", "n": 1}
        data["provider"] = {"kind": "openai_images", "base_url": crafted.url,
                            "model": "gemini-3-pro-image-preview-2k", "api_key_env": "RELAY_KEY"}
        return data

    crafted.body = openai_reply(crafted_png(*SIZES["large"], "truncated_zlib"))
    job.write(openai_job())
    assert cli("run", job.manifest).exit_code == 1
    ((message,),) = job.sql("SELECT error_message FROM attempts")
    assert "zlib stream is truncated" in message
    assert leftovers(job.out) == []

    crafted.body = openai_reply(crafted_png(*SIZES["large"]))
    assert cli("run", job.manifest, "--retry-failed").exit_code == 0
    recorded_output_matches_file(job)
    assert leftovers(job.out) == ["a.png"]


def test_a_large_paid_result_that_cannot_be_renamed_is_spooled_and_written_next_run(job, noise_mock):
    data = manifest(noise_mock.url, [{"id": "a", "prompt": "make it"}], limits={"max_attempts": 3},
                    defaults={"aspect_ratio": "1:1", "image_size": "2K"})
    job.write(data)
    broken = {"BATCHFUSE_FAULTPOINT": "output.rename:1:erofs"}  # staged fine, the rename fails
    first = cli_process("run", job.manifest, env=broken)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 3, err
    assert "cannot write outputs" in err and "Read-only file system" in err and "Traceback" not in err
    ((spooled,),) = job.sql("SELECT data FROM spool")
    assert bytes(spooled[:8]) == b"\x89PNG\r\n\x1a\n" and len(spooled) > 4_000_000  # the decoded image
    assert leftovers(job.out) == []  # the staged file went with the failed rename

    second = cli_process("run", job.manifest)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert len(generation_requests(noise_mock)) == 1  # written from the spool, not paid again
    assert job.sql("SELECT outcome FROM attempts ORDER BY id") == [("spooled",), ("unspooled",)]
    path = recorded_output_matches_file(job)
    with Image.open(path) as im:
        assert im.size == (2048, 2048)
        assert bytes(spooled) == _without_text(path.read_bytes())
    assert job.sql("SELECT count(*) FROM spool") == [(0,)]
    assert leftovers(job.out) == ["a.png"]


def test_large_images_of_one_run_are_all_written_and_verified(job, noise_mock):
    job.write(manifest(noise_mock.url, [{"id": f"i{i}", "prompt": f"p {i}"} for i in range(3)],
                       defaults={"aspect_ratio": "16:9", "image_size": "2K"}, output={"filename": "{item}.png"}))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    rows = job.sql("SELECT path, sha256, width, height FROM outputs ORDER BY path")
    assert [r[0] for r in rows] == ["i0.png", "i1.png", "i2.png"]
    for path, sha, width, height in rows:
        data = (job.out / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
        with Image.open(job.out / path) as im:
            im.load()
            assert im.size == (width, height) and width > height > 1000
    assert leftovers(job.out) == ["i0.png", "i1.png", "i2.png"]


def _without_text(png: bytes) -> bytes:
    """The PNG with its iTXt chunks taken out (what the reply carried)."""
    out, pos = bytearray(png[:8]), 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        end = pos + 12 + length
        if png[pos + 4 : pos + 8] != b"iTXt":
            out += png[pos:end]
        pos = end
    return bytes(out)
