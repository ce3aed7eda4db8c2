"""Batch mode through the CLI against the mock's Batch and Files APIs over loopback: results
matched by key under shuffled lines, per-line errors, ended batches, unknown and repeated keys,
reference images uploaded once, budgets, status and cancel."""

from __future__ import annotations

import json
from typing import Any

from PIL import Image

from tests.conftest import cli, manifest, wait_for
from tests.conftest import items as numbered

RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9"]


def batch_manifest(url: str, items: list[dict[str, Any]], **batch: Any) -> dict[str, Any]:
    data = manifest(url, items, batch={"poll_s": 0.05, **batch})
    data["provider"]["mode"] = "batch"
    return data


def creates(mock: Any) -> list[dict[str, Any]]:
    return [r for r in mock.requests() if r["path"].endswith(":batchGenerateContent")]


def batch_rows(job: Any) -> list[tuple]:
    return job.sql("SELECT display_name, remote_name, state, request_count FROM batches ORDER BY id")


def test_items_of_several_ratios_come_back_each_to_its_own_item(job, mock):
    items = [{**it, "aspect_ratio": RATIOS[i % len(RATIOS)]} for i, it in enumerate(numbered(18))]
    job.write(batch_manifest(mock.url, items, max_requests=7))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert job.state_of() == {it["id"]: "succeeded" for it in items}
    assert len(creates(mock)) == 3  # 18 items, at most 7 a batch
    assert [r[2] for r in batch_rows(job)] == ["applied"] * 3
    assert not generation_requests_online(mock)
    for it in items:
        w, h = Image.open(job.out / f"{it['id']}.png").size
        rw, rh = map(int, it["aspect_ratio"].split(":"))
        assert abs(w / h - rw / rh) < 0.05, (it, w, h)  # its own item's ratio, not a neighbour's
    attempts = job.sql("SELECT outcome, count(*) FROM attempts GROUP BY outcome")
    assert attempts == [("succeeded", 18)]
    members = job.sql("SELECT line_key, outcome FROM batch_items ORDER BY line_key")
    assert members == [(f"{it['id']}#1", "succeeded") for it in sorted(items, key=lambda x: x["id"])]
    assert "batch: 3 batches created" in result.stderr


def generation_requests_online(mock: Any) -> list[dict[str, Any]]:
    return [r for r in mock.requests() if r["path"].endswith(":generateContent")]
