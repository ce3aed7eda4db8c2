"""``variants: N``: N requests per item with different seeds, each its own item row
(``<id>#1`` ...) named like ``n``'s outputs, shown by status and export."""

from __future__ import annotations

import json

from batchfuse.plan.planner import derived_seed
from tests.conftest import cli, generation_requests, manifest


def test_variants_make_one_request_each_with_their_own_seed_and_name(job, mock):
    items = [{"id": "mug", "prompt": "a mug", "variants": 3},
             {"id": "cup", "prompt": "a cup", "variants": 2, "seed": 100},
             {"id": "plate", "prompt": "a plate"}]
    job.write(manifest(mock.url, items))
    result = cli("validate", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert "6 items" in result.stdout and "would send 6 requests" in result.stdout
    run = cli("run", job.manifest)
    assert run.exit_code == 0, run.stderr
    assert sorted(p.name for p in job.out.glob("*.png")) == [
        "cup-1.png", "cup-2.png", "mug-1.png", "mug-2.png", "mug-3.png", "plate.png"]
    rows = dict(job.sql("SELECT items.key, outputs.path FROM outputs JOIN items ON items.id = outputs.item_id"))
    assert rows == {"mug#1": "mug-1.png", "mug#2": "mug-2.png", "mug#3": "mug-3.png",
                    "cup#1": "cup-1.png", "cup#2": "cup-2.png", "plate": "plate.png"}
    seeds = sorted((r["prompt"], r["body"]["generationConfig"].get("seed")) for r in generation_requests(mock))
    base = derived_seed("mug")
    assert seeds == [("a cup", 100), ("a cup", 101), ("a mug", base), ("a mug", base + 1), ("a mug", base + 2),
                     ("a plate", None)]
    # status and export show each variant as an item
    status = json.loads(cli("status", job.manifest, "--json").stdout)
    assert status["items"]["succeeded"] == 6
    export = cli("export", job.manifest, "--format", "jsonl")
    assert export.exit_code == 0, export.stderr
    keys = sorted(json.loads(line)["key"] for line in export.stdout.splitlines())
    assert keys == ["cup#1", "cup#2", "mug#1", "mug#2", "mug#3", "plate"]


def test_fewer_variants_keep_the_ones_made_and_more_make_only_the_new(job, mock):
    job.write(manifest(mock.url, [{"id": "mug", "prompt": "a mug", "variants": 2}]))
    assert cli("run", job.manifest).exit_code == 0
    job.write(manifest(mock.url, [{"id": "mug", "prompt": "a mug", "variants": 4}]))
    plan = cli("validate", job.manifest)
    assert "2 new, 0 changed, 2 unchanged done" in plan.stdout, plan.stdout
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 4
    assert sorted(p.name for p in job.out.glob("*.png")) == ["mug-1.png", "mug-2.png", "mug-3.png", "mug-4.png"]


def test_variant_in_the_filename_template(job, mock):
    job.write(manifest(mock.url, [{"id": "mug", "prompt": "a mug", "variants": 2}],
                       output={"filename": "{item}/v{variant}.png"}))
    assert cli("run", job.manifest).exit_code == 0
    assert sorted(str(p.relative_to(job.out)) for p in job.out.rglob("*.png")) == ["mug/v1.png", "mug/v2.png"]


def test_only_takes_an_item_for_all_its_variants_or_one_variant(job, mock):
    job.write(manifest(mock.url, [{"id": "mug", "prompt": "a mug", "variants": 3}, {"id": "cup", "prompt": "a cup"}]))
    one = cli("run", job.manifest, "--only", "mug#2")
    assert one.exit_code == 0, one.stderr
    assert {k for k, s in job.state_of().items() if s == "succeeded"} == {"mug#2"}
    rest = cli("run", job.manifest, "--only", "mug")
    assert rest.exit_code == 0, rest.stderr
    assert {k for k, s in job.state_of().items() if s == "succeeded"} == {"mug#1", "mug#2", "mug#3"}
    assert len(generation_requests(mock)) == 3
    wrong = cli("run", job.manifest, "--only", "mug#9")
    assert wrong.exit_code == 2 and "has no item 'mug#9'" in wrong.stderr
