"""``status`` and the run's own lines tell the truth: a killed runner's claims are not shown as
running, a runner's summary is its own (not a share of a plan others finished), rates carry
units, counts have their grammar, a run with nothing to do says so, and each job's report is
its own."""

from __future__ import annotations

import json
import re
import signal

import pytest
import yaml

from tests.conftest import POSTGRES_URL, cli, cli_process, generation_requests, manifest, wait_for


def items(n: int) -> list[dict]:
    return [{"id": f"i{k:03d}", "prompt": f"picture {k}"} for k in range(n)]


def running(job) -> int:
    try:
        return job.sql("SELECT count(*) FROM items WHERE state = 'running'")[0][0]
    except Exception:  # the database is still being made
        return 0


def last_lines(stderr: str) -> tuple[str, str]:
    """The run's closing lines: its own summary and the job's."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-2], lines[-1]


def test_status_after_a_kill_shows_the_dead_runners_claims_as_such(job, mock):
    mock.faults(hold=True)  # the runner's requests wait at the mock: it dies with claims in hand
    job.write(manifest(mock.url, items(30), limits={"concurrency": 4}))
    proc = cli_process("run", job.manifest)
    wait_for(lambda: running(job) >= 4 and mock.faults()["held"] >= 4, "four requests in flight", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    claimed = running(job)  # what the dead runner had claimed, as the database keeps it

    shown = cli("status", job.manifest, "--json")
    assert shown.exit_code == 0, shown.stderr
    counts = json.loads(shown.stdout)["items"]
    assert counts["running"] == 0 and counts["orphaned"] == claimed
    assert counts["pending"] + counts["orphaned"] == 30
    text = cli("status", job.manifest).stdout
    assert re.search(r"^  running +0$", text, re.M), text
    assert f"orphaned   {claimed} (claimed by a runner that died; they run next time)" in text

    mock.faults(hold=False)
    again = cli("run", job.manifest)
    assert again.exit_code == 0, again.stderr
    assert json.loads(cli("status", job.manifest, "--json").stdout)["items"]["orphaned"] == 0


def test_a_second_run_while_one_is_live_is_the_callers_mistake_exit_2(job, mock, backend):
    if backend == "postgres":
        pytest.skip("runners share a job on PostgreSQL: a second run is welcome there")
    mock.faults(hold=True)  # the first run stays live, waiting at the mock
    job.write(manifest(mock.url, items(10), limits={"concurrency": 2}))
    first = cli_process("run", job.manifest)
    try:
        wait_for(lambda: mock.faults()["held"] >= 1, "the first run's request in flight", proc=first)
        second = cli("run", job.manifest)
        assert second.exit_code == 2, second.stderr
        assert f"being run by process {first.pid}" in second.stderr
        assert job.sql("SELECT count(*) FROM runs") == [(1,)]  # the second never started a run
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)


def test_status_json_gives_rates_with_units(job, mock):
    job.write(manifest(mock.url, items(3)))
    assert cli("run", job.manifest).exit_code == 0
    info = json.loads(cli("status", job.manifest, "--json").stdout)
    assert "throughput" not in info
    assert info["items_per_s"] > 0 and info["eta_s"] == 0.0


def test_the_plan_line_says_how_many_failed_items_retry_failed_retries(job, mock):
    bad = [{"id": f"bad{k}", "prompt": "[[mock:safety*always]] blocked"} for k in range(3)]
    job.write(manifest(mock.url, [*items(2), *bad]))
    first = cli("run", job.manifest)
    assert first.exit_code == 1, first.stderr
    plain = cli("run", job.manifest)
    assert "3 failed, 0 removed" in plain.stderr
    assert "nothing to do: 2 of 5 items succeeded, 3 failed; --retry-failed gives them another go" in plain.stderr
    retried = cli("run", job.manifest, "--retry-failed")
    assert "3 failed, retried now" in retried.stderr, retried.stderr
    assert "to do: 3 of 5 items" in retried.stderr


def test_one_item_one_request_and_a_run_with_nothing_to_do_says_so(job, mock):
    job.write(manifest(mock.url, items(1)))
    first = cli("run", job.manifest)
    assert first.exit_code == 0, first.stderr
    assert "to do: 1 of 1 item\n" in first.stderr
    own, whole = last_lines(first.stderr)
    assert own.startswith("completed: this run finished 1 item (1 succeeded, 0 failed), 1 request, 0 retries")
    assert whole == "job: 1/1 succeeded, 0 failed, 0 pending"
    assert not re.search(r"(?<![\d.])1 (items|requests)\b", first.stderr)  # not "0.1 items/s"

    second = cli("run", job.manifest)
    assert second.exit_code == 0
    assert "nothing to do: 1 of 1 item succeeded, 0 failed" in second.stderr
    assert "completed: nothing to do" in second.stderr and "ETA" not in second.stderr

    status = cli("status", job.manifest).stdout
    assert status.startswith("job test-job: 1 item\n") and "nothing left to do" in status and "ETA" not in status


def test_the_summary_says_how_many_outputs_were_adopted_and_from_where(job, mock):
    work = items(2)
    job.write(manifest(mock.url, work))
    assert cli("run", job.manifest).exit_code == 0
    # the same outputs, the job's database lost: adopted, not sent again -- and said so up front
    planned = cli("validate", job.manifest, "--db", job.root / "fresh.db")
    assert planned.exit_code == 0, planned.stderr
    adopt = f"; 2 items to adopt from outputs already in {job.out} (made by an earlier run, not sent again)"
    assert adopt in planned.stdout, planned.stdout
    result = cli("run", job.manifest, "--db", job.root / "fresh.db")
    assert result.exit_code == 0, result.stderr
    assert adopt in result.stderr, result.stderr
    assert len(generation_requests(mock)) == 2
    own, _ = last_lines(result.stderr)
    assert (
        f"this run finished 2 items (2 succeeded, 0 failed, 2 of them adopted from outputs already in {job.out} "
        "(not sent again)), 0 requests" in own
    ), own


@pytest.mark.skipif(not POSTGRES_URL, reason="PostgreSQL not configured: set BATCHFUSE_TEST_POSTGRES_URL")
def test_each_runner_on_postgresql_sums_up_its_own_work_not_a_share_of_the_plan(job, mock, backend, monkeypatch):
    if backend != "postgres":
        pytest.skip("several runners on one job need PostgreSQL")
    monkeypatch.setenv("BATCHFUSE_LEASE_S", "3")
    mock.configure(latency_ms=30, image_mode="solid", record_bodies=False)
    n = 60
    job.write(manifest(mock.url, items(n), limits={"concurrency": 4}))
    procs = [cli_process("run", job.manifest) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    finished = []
    for _, err in outs:
        own, whole = last_lines(err)
        assert "ETA" not in own and not re.search(r"\d+/\d+ done", own), own
        match = re.match(r"completed: (?:this run finished (\d+) items?|nothing to do)", own)
        assert match, own
        finished.append(int(match.group(1) or 0))
        assert whole == f"job: {n}/{n} succeeded, 0 failed, 0 pending"
    assert sum(finished) == n
    per_run = sorted(r[0] for r in job.sql("SELECT succeeded FROM runs"))
    assert per_run == sorted(finished)


def test_two_manifests_in_one_folder_get_a_report_each_and_o_still_works(job, mock):
    job.write(manifest(mock.url, items(1)))
    second = job.root / "other.yaml"  # another job beside it, with its own output folder
    other = manifest(mock.url, items(1), output={"dir": "other-out"}) | {"job": "other job/v2"}
    second.write_text(yaml.safe_dump(other, sort_keys=False), encoding="utf-8")
    for path in (job.manifest, second):
        assert cli("run", path).exit_code == 0
        assert cli("report", path).exit_code == 0
    first_html, second_html = job.root / "test-job.report.html", job.root / "other-job-v2.report.html"
    assert "test-job" in first_html.read_text() and "other job/v2" in second_html.read_text()
    assert (job.root / "test-job.report_thumbs").is_dir() and (job.root / "other-job-v2.report_thumbs").is_dir()
    (job.root / "review").mkdir()
    chosen = cli("report", job.manifest, "-o", job.root / "review" / "morning.html")
    assert chosen.exit_code == 0 and (job.root / "review" / "morning_thumbs").is_dir()


def test_the_plan_does_not_promise_to_adopt_an_output_of_an_older_spec(job, mock):
    job.write(manifest(mock.url, items(2)))
    assert cli("run", job.manifest).exit_code == 0
    changed = items(2)
    changed[0]["prompt"] += " (reworded)"
    job.write(manifest(mock.url, changed))
    result = cli("run", job.manifest, "--db", job.root / "fresh.db")
    assert result.exit_code == 0, result.stderr
    assert "1 item to adopt from outputs already in" in result.stderr, result.stderr
    assert len(generation_requests(mock)) == 3  # the reworded item is paid for again, the other adopted
