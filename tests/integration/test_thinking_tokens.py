"""Thinking tokens (``thoughtsTokenCount``): recorded with the other counts, in the estimate, and
in ``limits.max_cost`` when pricing is per token."""

from __future__ import annotations

from tests.conftest import cli, generation_requests, items, manifest


def test_thinking_tokens_count_against_max_cost(job, mock):
    # 3 Pro Image at 1K: 1,210 image tokens; the mock reports as many thinking tokens per reply.
    # At 1,000 per million tokens an image costs 1.21 and its thinking 1.21 more: with max_cost 5,
    # two images fit (4.84), where counting images alone would have allowed four.
    job.write(manifest(mock.url, items(10), limits={"concurrency": 1, "max_cost": 5},
                       pricing={"per_million_tokens": 1000}))
    validate = cli("validate", job.manifest)
    assert "thinking tokens (unknown until the first replies report them)" in validate.stdout, validate.stdout
    run = cli("run", job.manifest)
    assert run.exit_code == 3, run.stderr
    assert "budget reached: 4.84 spent of max_cost 5 (2 images, 2,420 thinking tokens)" in run.stderr, run.stderr
    assert len(generation_requests(mock)) == 2
    assert job.sql("SELECT thoughts_tokens FROM attempts") == [(1210,), (1210,)]
    # the estimate now prices the thinking at the job's average
    again = cli("validate", job.manifest)
    assert "estimate: 8 images, 9,680 output tokens + about 9,680 thinking tokens (the job's average so far), " \
           "about 19.36 in money" in again.stdout, again.stdout


def test_a_model_that_does_not_think_spends_on_images_only(job, mock):
    provider = {"kind": "gemini", "base_url": mock.url, "model": "gemini-2.5-flash-image", "api_key_env": "DMXAPI_KEY"}
    job.write(manifest(mock.url, items(10), provider=provider, defaults={},
                       limits={"concurrency": 1, "max_cost": 0.16}, pricing={"per_million_tokens": 30}))
    validate = cli("validate", job.manifest)
    assert "thinking" not in validate.stdout
    run = cli("run", job.manifest)
    assert run.exit_code == 3, run.stderr
    assert len(generation_requests(mock)) == 4  # 4 x 1,290 tokens x $30/M = 0.1548
    assert job.sql("SELECT DISTINCT thoughts_tokens FROM attempts") == [(None,)]
