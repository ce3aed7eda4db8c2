"""A prompt the API blocks: the attempt records Gemini's ``promptFeedback.blockReason``."""

from __future__ import annotations

from tests.conftest import cli, manifest


def test_a_blocked_prompt_records_its_block_reason(job, mock):
    job.write(manifest(mock.url, [{"id": "bad", "prompt": "[[mock:blocked*always]] x"}, {"id": "ok", "prompt": "y"}]))
    assert cli("run", job.manifest).exit_code == 1
    rows = job.sql(
        "SELECT items.key, attempts.outcome, attempts.block_reason FROM attempts "
        "JOIN items ON items.id = attempts.item_id ORDER BY items.key"
    )
    assert rows == [("bad", "rejected", "SAFETY"), ("ok", "succeeded", None)]
