"""The review loop through the library and the CLI: verdicts in the store, a reject makes a revision
that the next run sends exactly once, approved and unjudged items are never sent again, every
earlier image is kept as a version, and a manifest edit still wins."""

from __future__ import annotations

import hashlib

import pytest

from batchfuse.review.reading import reading_job
from batchfuse.store.verdicts import VerdictRefused, list_items, record_verdict, verdict_counts
from tests.conftest import cli, generation_requests, items, manifest


def _judge(job, key, verdict, **kw):
    with reading_job(job.manifest, None, writable=True) as (_, store, j):
        return record_verdict(store, j, key, verdict, reviewer="tester", **kw)


def _sent_prompts(mock) -> list[str]:
    return [r["prompt"] for r in generation_requests(mock)]


def test_reject_regenerates_exactly_the_rejected_items_and_keeps_every_version(job, mock):
    job.write(manifest(mock.url, items(4)))
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 4
    first = {k: hashlib.sha256((job.out / f"{k}.png").read_bytes()).hexdigest() for k in ("i000", "i001")}

    _judge(job, "i000", "approve")
    _judge(job, "i001", "reject", note="logo misspelt", prompt_extra="spell the logo ACME")
    _judge(job, "i002", "reject", new_seed=True)
    counts = _judge(job, "i003", "approve")
    assert counts["verdict"] == "approve"

    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    prompts = _sent_prompts(mock)[4:]
    assert sorted(prompts) == ["prompt 1\n\nspell the logo ACME", "prompt 2"]

    # nothing more on a third run: each rejection is sent exactly once
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 6

    # the earlier image of i001 is kept, the stable name holds the new one
    kept = job.out / ".batchfuse-versions" / "i001.v1.png"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == first["i001"]
    assert hashlib.sha256((job.out / "i000.png").read_bytes()).hexdigest() == first["i000"]
    with reading_job(job.manifest, None) as (_, store, j):
        rows, total = list_items(store, j, verdict="rejected")
        assert total == 2 and [r["key"] for r in rows] == ["i001", "i002"]
        assert [v["path"] for v in rows[0]["versions"]] == [".batchfuse-versions/i001.v1.png"]
        assert rows[0]["history"][0]["note"] == "logo misspelt" and rows[0]["history"][0]["reviewer"] == "tester"
        assert verdict_counts(store, j) == {"approved": 2, "rejected": 2, "unjudged": 0}

    # a second reject of the same item: sent once more, with both added lines
    _judge(job, "i001", "reject", prompt_extra="and a blue sky")
    assert cli("run", job.manifest).exit_code == 0
    assert _sent_prompts(mock)[6:] == ["prompt 1\n\nspell the logo ACME\nand a blue sky"]
    assert (job.out / ".batchfuse-versions" / "i001.v2.png").is_file()


def test_undo_of_a_reject_until_a_run_takes_it(job, mock):
    job.write(manifest(mock.url, items(2)))
    assert cli("run", job.manifest).exit_code == 0
    _judge(job, "i000", "reject", prompt_extra="brighter")
    with pytest.raises(VerdictRefused):
        _judge(job, "i000", "approve")  # a waiting reject must be cleared first
    _judge(job, "i000", "clear")
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 2  # undone: nothing sent

    _judge(job, "i001", "reject")
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 3
    with pytest.raises(VerdictRefused, match="already taken revision 1"):
        _judge(job, "i001", "clear")
    _judge(job, "i001", "approve")  # the regenerated image is approved
    with reading_job(job.manifest, None) as (_, store, j):
        history = list_items(store, j, q="i001")[0][0]["history"]
    assert [h["verdict"] for h in history] == ["approve", "reject"]


def test_a_manifest_edit_after_a_reject_wins(job, mock):
    job.write(manifest(mock.url, items(1)))
    assert cli("run", job.manifest).exit_code == 0
    _judge(job, "i000", "reject", prompt_extra="old idea")
    job.write(manifest(mock.url, items(1, prompt="new prompt {i}")))
    assert cli("run", job.manifest).exit_code == 0
    assert _sent_prompts(mock)[1:] == ["new prompt 0"]
    assert (job.out / ".batchfuse-versions" / "i000.v1.png").is_file()


def test_validate_counts_a_waiting_reject_and_not_a_regenerated_one(job, mock):
    job.write(manifest(mock.url, items(3)))
    assert cli("run", job.manifest).exit_code == 0
    _judge(job, "i001", "reject", prompt_extra="closer")
    before = cli("validate", job.manifest).stdout
    assert "1 changed" in before and "would send 1 request " in before and "estimate: 1 image," in before
    assert cli("run", job.manifest).exit_code == 0
    after = cli("validate", job.manifest).stdout
    assert "0 changed" in after and "would send 0 requests" in after and "estimate: 0 images" in after


def test_the_review_pages_change_queries_work_on_both_backends(job, mock):
    from batchfuse.store.verdicts import change_marker, changed_keys

    job.write(manifest(mock.url, items(2)))
    assert cli("run", job.manifest).exit_code == 0
    with reading_job(job.manifest, None) as (_, store, j):
        marker = change_marker(store, j)
        assert sorted(changed_keys(store, j, 0.0)) == ["i000", "i001"]
        since = max(t for (t,) in job.sql("SELECT updated_at FROM items"))
    _judge(job, "i001", "approve")
    with reading_job(job.manifest, None) as (_, store, j):
        assert change_marker(store, j) != marker
        assert changed_keys(store, j, since) == ["i001"]
