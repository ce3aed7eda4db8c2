"""Fault soak: 2,000 items through every transient fault at once, 429s included. Every item must
end succeeded and every request must be accounted for. The faults are drawn per request, so they
show however slowly a loaded machine sends."""

from __future__ import annotations

from tests.conftest import cli, generation_requests, manifest


def test_two_thousand_items_through_mixed_faults(job, mock):
    mock.configure(
        rate_503=0.05, rate_500=0.02, rate_reset=0.01, rate_truncate=0.01, rate_hang=0.01, hang_s=3.0,
        rate_429=0.005,
        image_mode="solid", record_bodies=False, seed=7,
    )
    n, max_attempts = 2000, 10
    job.write(manifest(
        mock.url, [{"id": f"s{i:04d}", "prompt": f"soak {i}"} for i in range(n)],
        limits={"concurrency": 32, "requests_per_minute": 12000, "adaptive_rate": False,
                "max_attempts": max_attempts, "timeout_s": 1.0, "backoff_base_s": 0.05, "backoff_max_s": 1.0},
    ))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert job.sql("SELECT state, count(*) FROM items GROUP BY state") == [("succeeded", n)]
    assert job.sql("SELECT max(attempts) FROM items")[0][0] <= max_attempts
    sent = generation_requests(mock)
    recorded = job.sql("SELECT count(*) FROM attempts")[0][0]
    assert recorded == len(sent)  # every request the mock saw is an attempt, and no more
    assert job.sql("SELECT count(*) FROM attempts WHERE ended_at IS NULL OR ended_at < started_at") == [(0,)]
    outcomes = dict(job.sql("SELECT outcome, count(*) FROM attempts GROUP BY outcome"))
    assert outcomes["succeeded"] == n and outcomes["transient"] > 100
    faults = {r["fault"] for r in sent}
    assert {"503", "500", "reset", "truncate", "hang", "429"} <= faults
    assert len(list(job.out.iterdir())) == n
