"""Every fault the mock can inject ends the way the design says: transient faults are
retried until the item succeeds, rejections fail the item at once, fatal errors stop the job
and leave the rest pending."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.conftest import cli, generation_requests, items, manifest


@pytest.mark.parametrize("fault", ["500", "503", "reset", "truncate", "text_only", "no_image"])
def test_transient_faults_are_retried_until_success(job, mock, fault):
    items = [{"id": f"i{i}", "prompt": f"[[mock:{fault}*2]] item {i}"} for i in range(3)]
    job.write(manifest(mock.url, items))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert set(job.state_of().values()) == {"succeeded"}
    assert len(generation_requests(mock)) == 9
    outcomes = job.sql("SELECT outcome, count(*) FROM attempts GROUP BY outcome ORDER BY outcome")
    assert outcomes == [("succeeded", 3), ("transient", 6)]
    assert job.sql("SELECT max(attempts) FROM items") == [(3,)]


def test_hang_is_cut_by_the_timeout_and_retried(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "[[mock:hang*1]] slow"}], limits={"timeout_s": 0.5}))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    (first, second) = job.sql("SELECT outcome, error_message FROM attempts ORDER BY id")
    assert first[0] == "transient" and "timeout" in first[1]
    assert second[0] == "succeeded"


def test_rate_limit_429_honours_retry_after(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "[[mock:429*1]] busy"}]))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    first, second = generation_requests(mock)
    assert (first["status"], second["status"]) == (429, 200)
    # the retry waited for the server's Retry-After / RetryInfo (1 s), not the tiny backoff
    assert second["t"] - first["t"] >= 0.95
    ((msg,),) = job.sql("SELECT error_message FROM attempts WHERE http_status = 429")
    assert "rate limited" in msg


@pytest.mark.parametrize(
    ("marker", "reason"),
    [("safety", "IMAGE_SAFETY"), ("blocked", "blocked"), ("400", "INVALID_ARGUMENT")],
)
def test_rejections_fail_the_item_without_retrying(job, mock, marker, reason):
    job.write(manifest(mock.url, [{"id": "bad", "prompt": f"[[mock:{marker}*always]] x"}, {"id": "ok", "prompt": "y"}]))
    result = cli("run", job.manifest)
    assert result.exit_code == 1
    assert job.state_of() == {"bad": "failed", "ok": "succeeded"}
    assert len(generation_requests(mock)) == 2
    ((cls, msg),) = job.sql("SELECT error_class, last_error FROM items WHERE key = 'bad'")
    assert cls == "rejected" and reason in msg


def test_replies_without_image_are_rejected_after_a_few_tries(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "[[mock:no_image*always]] x"}], limits={"max_attempts": 10}))
    assert cli("run", job.manifest).exit_code == 1
    assert len(generation_requests(mock)) == 3
    assert job.sql("SELECT state, error_class FROM items") == [("failed", "rejected")]


def test_transient_failures_use_up_max_attempts_then_fail(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "[[mock:503*always]] x"}], limits={"max_attempts": 3}))
    assert cli("run", job.manifest).exit_code == 1
    assert len(generation_requests(mock)) == 3
    assert job.sql("SELECT state, attempts, error_class FROM items") == [("failed", 3, "exhausted")]
    # attempts are counted across runs: a rerun does not send it again
    assert cli("run", job.manifest).exit_code == 1
    assert len(generation_requests(mock)) == 3


def test_a_bad_key_stops_the_job_fast_and_leaves_items_pending(job, mock):
    mock.configure(api_key="the-right-key")
    job.write(manifest(mock.url, items(40), limits={"concurrency": 2}))
    result = cli("run", job.manifest)
    assert result.exit_code == 3, result.stderr
    assert "refused the key" in result.stderr
    assert len(generation_requests(mock)) <= 4
    states = job.state_of()
    assert set(states.values()) == {"pending"}
    assert job.sql("SELECT max(attempts) FROM items") == [(0,)]


def test_a_per_day_quota_is_fatal(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "[[mock:perday*always]] x"}, {"id": "b", "prompt": "y"}],
                       limits={"concurrency": 1}))
    result = cli("run", job.manifest)
    assert result.exit_code == 3
    assert "daily quota" in result.stderr
    assert job.state_of()["a"] == "pending"


def test_thought_images_are_not_outputs_and_extra_images_get_numbered_names(job, mock):
    mock.configure(thought_images=True, images_per_reply=2)
    job.write(manifest(mock.url, [{"id": "a", "prompt": "two please"}]))
    assert cli("run", job.manifest).exit_code == 0
    assert job.sql("SELECT idx, path FROM outputs ORDER BY idx") == [(1, "a-1.png"), (2, "a-2.png")]
    for name in ("a-1.png", "a-2.png"):
        with Image.open(job.out / name) as im:
            assert im.text["batchfuse:item"] == "a"


def test_an_image_inside_a_text_part_as_data_url_is_recognised(job, mock):
    mock.configure(data_url_in_text=True)
    job.write(manifest(mock.url, [{"id": "a", "prompt": "relay style"}]))
    assert cli("run", job.manifest).exit_code == 0
    assert job.sql("SELECT path FROM outputs") == [("a.png",)]
