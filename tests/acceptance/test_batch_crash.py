"""Batch mode under SIGKILL: a kill at each step of a submission and collection (before
``create``, right after the server accepted it, while polling, in the middle of the results
download, between groups of applied lines), then a rerun: never a second batch, no item made
twice, every item done with its own output.  And the online fallback at the deadline."""

from __future__ import annotations

import collections

import pytest

from tests.conftest import TEST_KEY, cli, cli_process, manifest
from tests.conftest import items as numbered
from tests.test_mock_server import http

N = 20


def batch_job(url: str, **batch: object) -> dict:
    data = manifest(url, numbered(N), batch={"poll_s": 0.05, **batch})
    data["provider"]["mode"] = "batch"
    return data


def creates(mock) -> int:
    return len([r for r in mock.requests() if r["path"].endswith(":batchGenerateContent")])


def killed_at(job, mock, point: str) -> None:
    """Write the batch job (results of about a MiB: several download pieces) and run it until
    SIGKILL at the fault point ``point``."""
    mock.configure(image_mode="noise", image_scale=1 / 8)
    job.write(batch_job(mock.url))
    proc = cli_process("run", job.manifest, env={"BATCHFUSE_FAULTPOINT": point})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err  # it died at the fault point


def check_done_once(job, mock) -> None:
    keys = [f"i{i:03d}" for i in range(N)]
    assert job.state_of() == dict.fromkeys(keys, "succeeded")
    assert creates(mock) == 1, "a second batch was created"
    made = collections.Counter(r["prompt"] for r in mock.requests() if r["api"] in ("gemini-batch", "gemini"))
    assert made == {f"prompt {i}": 1 for i in range(N)}, "an item was made (paid for) twice"
    assert job.sql("SELECT outcome, count(*) FROM attempts GROUP BY outcome") == [("succeeded", N)]
    assert sorted(p.name for p in job.out.glob("*.png")) == [f"{k}.png" for k in keys]
    assert not list((job.out / ".batchfuse-batches").glob("*")), "a batch's work file was left behind"
    assert job.integrity_ok()


@pytest.mark.parametrize("point", [
    "batch.create:1:kill",     # recorded, input uploaded, create not sent
    "batch.created:1:kill",    # the server made the batch; its answer never recorded
    "batch.poll:2:kill",       # while polling
    "batch.download:1:kill",   # in the middle of the results download
    "batch.apply:1:kill",      # after a group of lines was applied, before the batch is closed
    "output.rename:3:kill",    # while a result's image takes its final name
    "db.record:1:kill",        # inside the transaction recording the first results
])
def test_a_kill_at_each_step_of_a_batch_never_makes_a_second_batch_or_pays_twice(job, mock, point):
    killed_at(job, mock, point)
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0, rerun.stderr
    if point == "batch.created:1:kill":
        assert "adopted" in rerun.stderr
    check_done_once(job, mock)


def test_a_download_cut_midway_resumes_with_range(job, mock):
    killed_at(job, mock, "batch.download:1:kill")
    (partial,) = (job.out / ".batchfuse-batches").glob("*-results.jsonl")
    assert partial.stat().st_size > 0
    assert cli("run", job.manifest).exit_code == 0
    downloads = [r for r in mock.requests() if ":download" in r["path"]]
    assert [d["status"] for d in downloads] == [200, 206], downloads
    check_done_once(job, mock)


def test_a_kill_while_applying_resumes_from_the_results_on_disk_without_asking_again(job, mock):
    killed_at(job, mock, "batch.apply:1:kill")
    assert cli("run", job.manifest).exit_code == 0
    downloads = [r for r in mock.requests() if ":download" in r["path"]]
    assert [d["status"] for d in downloads] == [200], downloads
    check_done_once(job, mock)


def test_the_fallback_runs_stragglers_online_before_the_deadline(job, mock):
    mock.configure(batch_pending_s=None)  # the batch never starts
    job.write(batch_job(mock.url, wait=False))
    assert cli("run", job.manifest).exit_code == 3
    assert creates(mock) == 1
    job.write(batch_job(mock.url, fallback_lead_s=600))  # the deadline is 10 min away: fall back now
    run = cli("run", job.manifest, "--max-runtime", "10m")
    assert run.exit_code == 0, run.stderr
    assert set(job.state_of().values()) == {"succeeded"}
    assert job.sql("SELECT state FROM batches") == [("cancelled",)]
    assert [r for r in mock.requests() if r["path"].endswith(":cancel")]
    online = [r for r in mock.requests() if r["api"] == "gemini"]
    assert len(online) == N
    assert f"{N} items run online at the full price ($0.134/image at 1K)" in run.stderr
    assert creates(mock) == 1


def test_ten_thousand_items_sharing_one_reference_upload_it_once_and_the_input_stays_small(job, mock):
    mock.configure(batch_pending_s=None)  # submitted, not made: the test is about what is sent
    n = 10_000
    data = manifest(mock.url, [], batch={"max_requests": 5000, "wait": False}, limits={"timeout_s": 120})
    data["provider"]["mode"] = "batch"
    del data["items"]
    data["prompt"] = "product {sku} in the scene"
    data["images"] = ["images/scene.png"]
    data["matrix"] = {"sku": [f"P{i:05d}" for i in range(n)]}
    data["output"] = {"dir": "out", "filename": "{sku}.png"}
    job.write(data)
    run = cli("run", job.manifest)
    assert run.exit_code == 3, run.stderr  # submitted; a later run collects
    assert f"{n} items still out in 2 batches" in run.stderr
    assert creates(mock) == 2
    assert job.scalar("SELECT count(*) FROM uploaded_files") == 1
    assert "1 reference image uploaded" in run.stderr
    files = http("GET", f"{mock.url}/v1beta/files?pageSize=100", headers={"x-goog-api-key": TEST_KEY}).json()["files"]
    inputs = [int(f["sizeBytes"]) for f in files if f["mimeType"] == "application/jsonl"]
    images = [f for f in files if f["mimeType"].startswith("image/")]
    assert len(inputs) == 2 and len(images) == 1
    assert sum(inputs) / n < 500, "the input file carries more than a reference per line"
    assert job.scalar("SELECT count(DISTINCT item_id) FROM batch_items") == n


@pytest.mark.parametrize("backend", ["postgres"])
def test_on_postgresql_a_kill_after_create_is_adopted_and_two_runners_never_share_a_batch(job, mock, backend):
    mock.configure(image_mode="noise", image_scale=1 / 8)
    job.write(batch_job(mock.url, max_requests=5))
    proc = cli_process("run", job.manifest, env={"BATCHFUSE_FAULTPOINT": "batch.created:2:kill"})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err  # killed once its second batch was made, before it was recorded
    runners = [cli_process("run", job.manifest) for _ in range(2)]  # two runners share the job
    for r in runners:
        _, err = r.communicate(timeout=180)
        assert r.returncode == 0, err
    keys = [f"i{i:03d}" for i in range(N)]
    assert job.state_of() == dict.fromkeys(keys, "succeeded")
    made = collections.Counter(r["prompt"] for r in mock.requests() if r["api"] in ("gemini-batch", "gemini"))
    assert made == {f"prompt {i}": 1 for i in range(N)}, "an item was made (paid for) twice"
    assert creates(mock) == N // 5, "a batch was created twice"
    assert job.scalar("SELECT count(*) FROM batches") == N // 5
    assert job.sql("SELECT outcome, count(*) FROM attempts GROUP BY outcome") == [("succeeded", N)]
