"""A fake API that echoes the key in every place a reply can hold text, at every offset around
the cuts batchfuse makes: no piece of the key may reach anything a run or a review leaves."""

from __future__ import annotations

import pytest
from PIL import Image

from batchfuse.mock.echo import PLACES
from batchfuse.store.schema import metadata
from tests.conftest import TEST_KEY, cli, generation_requests, manifest

K = len(TEST_KEY)


def around(limit: int, before: int = 0) -> range:
    """Offsets that put the key across a cut at ``limit`` (``before`` characters precede the echo)."""
    return range(max(0, limit - before - K - 1), limit - before + 2)


#: Where each place's text is cut (message 300, status/code 60, said 120, finish reason 48, the
#: body's 29-character preamble before the echo, and its byte limit).
GEMINI = {
    "message": around(300),
    "field": around(60),
    "body": [*around(300, before=29), *around(1200, before=29)],
    "header": [0],
    "text": [0, 300],
    "said": around(120),
    "finish": around(48),
    "finish_noimage": around(48),
    "block": around(60),
    "usage": [0],
}
OPENAI = {
    "message": around(300),
    "field": around(60),
    "body": [*around(300, before=29), *around(1200, before=29)],
    "header": [0],
    "url": [0, 200],
}


def echo_items(places: dict) -> list[dict]:
    return [
        {"id": f"{place}-{offset}", "prompt": f"[[mock-echo:{place}@{offset}]] a cat"}
        for place, offsets in places.items()
        for offset in offsets
    ]


def pieces(key: str) -> set[str]:
    """The key and every 8-character piece of it."""
    return {key} | {key[i : i + 8] for i in range(len(key) - 7)}


def test_every_place_of_the_echo_fault_is_covered():
    assert set(GEMINI) | set(OPENAI) == PLACES


@pytest.mark.parametrize("kind", ["gemini", "openai_images"])
def test_no_piece_of_an_echoed_key_reaches_storage_logs_or_outputs(job, mock, monkeypatch, kind):
    mock.configure(api_key=TEST_KEY)
    monkeypatch.setenv("BATCHFUSE_DEBUG", "1")
    items = echo_items(GEMINI if kind == "gemini" else OPENAI)
    if kind == "openai_images":  # links with the key whose download fails: kept for the next attempt
        items.append({"id": "url-resume", "prompt": "[[mock:download_fail*1]] [[mock-echo:url@0]] a cat"})
    data = manifest(mock.url, items)
    data["limits"] |= {"max_attempts": 1, "concurrency": 8, "outage_threshold": 100000}
    if kind == "openai_images":
        data["provider"] |= {"kind": "openai_images", "model": "gemini-3-pro-image-preview-2k"}
        data["defaults"] = {"size": "1:1", "response_format": "url", "n": 1}
        data["network"] = {"allow_private": True}
    job.write(data)
    outputs = [cli("run", job.manifest, "--log-file", job.root / "run.jsonl", "--log-format", "json")]
    tables = [repr(job.sql(f"SELECT * FROM {table}")) for table in metadata.tables]  # PostgreSQL too
    outputs += [
        cli("run", job.manifest, "--retry-failed", "--log-file", job.root / "run.log", "--log-format", "text"),
        cli("status", job.manifest, "--json"),
        cli("status", job.manifest),
        cli("report", job.manifest),
        cli("export", job.manifest, "--format", "csv"),
        cli("export", job.manifest, "--format", "jsonl", "-o", job.root / "items.jsonl"),
        cli("export", job.manifest, "--format", "csv", "-o", job.root / "items.csv"),
    ]
    assert all(r["key_ok"] for r in generation_requests(mock))
    assert {r["fault"] for r in generation_requests(mock)} == {"echo"}
    states = set(job.state_of().values())
    assert states == {"succeeded", "failed"}, states  # both kinds of attempt were recorded
    assert kind == "gemini" or any("echo=***" in t for t in tables)  # url-resume's kept links, scrubbed
    texts = [r.stdout + r.stderr for r in outputs]
    files = [f for f in job.root.rglob("*") if f.is_file() and not f.is_relative_to(job.root / "images")]
    names = {f.name for f in files}
    assert {"run.jsonl", "run.log", "test-job.report.html", "items.jsonl", "items.csv"} <= names, names
    pngs = [f for f in files if f.suffix == ".png"]
    assert pngs
    for png in pngs:
        with Image.open(png) as image:
            texts.append(repr(getattr(image, "text", {})) + repr(image.info))
    texts += tables + [repr(job.sql(f"SELECT * FROM {table}")) for table in metadata.tables]
    blobs = [f.read_bytes() for f in files]
    for piece in pieces(TEST_KEY):
        for text in texts:
            assert piece not in text, (piece, text[:2000])
        for file, blob in zip(files, blobs, strict=True):
            assert piece.encode() not in blob, (piece, file)
