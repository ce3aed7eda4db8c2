"""Running unattended: signals, deadlines, one runner per job, adaptive rate, the outage
breaker and the logs — through the CLI in subprocesses, as cron runs it."""

from __future__ import annotations

import json
import signal

from tests.conftest import TEST_KEY, cli, cli_process, generation_requests, items, manifest, wait_for


def test_sigterm_lets_in_flight_requests_finish_then_exits_3_and_a_rerun_completes(job, mock):
    mock.faults(hold=True)  # requests reach the mock and wait there until released
    job.write(manifest(mock.url, items(30), limits={"concurrency": 4}))
    proc = cli_process("run", job.manifest)
    wait_for(lambda: mock.faults()["held"] == 4, "4 requests in flight at the mock", proc=proc)
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "SIGTERM: stopping" in proc.err(), "the run to acknowledge SIGTERM", proc=proc)
    mock.faults(hold=False)  # the in-flight requests are answered after the stop began
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "interrupted by SIGTERM" in err
    sent = len(generation_requests(mock))
    assert sent == 4, err  # nothing new started after the signal
    # every request the mock answered was recorded, none was cut short
    assert job.scalar("SELECT count(*) FROM attempts") == sent
    assert job.scalar("SELECT count(*) FROM attempts WHERE outcome = 'interrupted'") == 0
    assert job.scalar("SELECT count(*) FROM items WHERE state = 'running'") == 0
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0, rerun.stderr
    assert len(generation_requests(mock)) == 30


def test_a_second_signal_cancels_in_flight_requests_as_interrupted(job, mock):
    mock.faults(hold=True)
    job.write(manifest(mock.url, items(6), limits={"concurrency": 3, "timeout_s": 30}))
    proc = cli_process("run", job.manifest)
    wait_for(lambda: mock.faults()["held"] == 3, "3 requests in flight at the mock", proc=proc)
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "SIGINT: stopping" in proc.err(), "the run to acknowledge the first SIGINT", proc=proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert job.scalar("SELECT count(*) FROM attempts WHERE outcome = 'interrupted'") == 3, err
    assert job.scalar("SELECT count(*) FROM items WHERE state = 'pending' AND attempts = 0") == 6, err
    mock.faults(hold=False)
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0, rerun.stderr


def test_the_grace_period_bounds_how_long_a_stop_waits(job, mock):
    # the held requests never come back on their own: only the grace period can end the run
    mock.faults(hold=True)
    job.write(manifest(mock.url, items(2), limits={"concurrency": 2, "timeout_s": 300}))
    proc = cli_process("run", job.manifest, "--grace", "0.5s")
    wait_for(lambda: mock.faults()["held"] == 2, "2 requests in flight at the mock", proc=proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert job.scalar("SELECT count(*) FROM attempts WHERE outcome = 'interrupted'") == 2, err


def test_no_request_starts_after_the_deadline(job, mock):
    # ~20 items/s (latency 100 ms, 2 at a time): far more items than the run can reach
    mock.configure(latency_ms=100)
    job.write(manifest(mock.url, items(1000), limits={"concurrency": 2}))
    proc = cli_process("run", job.manifest, "--max-runtime", "4s")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "deadline reached at" in err
    assert "pending" in err  # says what is left
    # the deadline was fixed when the command started, before its run began: no attempt may
    # start later than 4 s after the run's own start (both times recorded by the run itself)
    last_start = job.scalar("SELECT max(started_at) FROM attempts")
    run_start = job.scalar("SELECT started_at FROM runs")
    assert last_start <= run_start + 4.0, err
    done = job.scalar("SELECT count(*) FROM items WHERE state = 'succeeded'")
    assert 0 < done < 1000, err


def test_a_second_runner_of_the_same_job_is_refused_and_a_dead_ones_lock_is_not(job, mock):
    mock.faults(hold=True)
    job.write(manifest(mock.url, items(40), limits={"concurrency": 2}))
    first = cli_process("run", job.manifest)
    wait_for(lambda: mock.faults()["held"] == 2, "the first runner's requests at the mock", proc=first)
    second = cli("run", job.manifest)
    assert second.exit_code == 2, second.stderr  # the caller's mistake: nothing was sent
    assert f"being run by process {first.pid}" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    mock.faults(hold=False)
    third = cli("run", job.manifest)
    assert third.exit_code == 0, third.stderr


def test_adaptive_rate_finishes_a_run_whose_configured_rate_is_too_high(job, mock):
    # the mock answers 429 to a share of requests (drawn per request, so a slow, loaded client sees
    # them too); the manifest claims 6000/min
    mock.configure(rate_429=0.15, seed=11)
    job.write(manifest(mock.url, items(60), limits={"concurrency": 8, "requests_per_minute": 6000,
                                                    "max_attempts": 10}))
    log_file = job.root / "run.jsonl"
    proc = cli_process("run", job.manifest, "--log-file", log_file, "--log-format", "json")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    cuts = [e for e in events if e["event"] == "rate"]
    assert cuts and cuts[-1]["rpm"] < 6000
    status = json.loads(cli("status", job.manifest, "--json").stdout)
    assert status["items"]["succeeded"] == 60
    share = status["rate_limited"] / status["attempts"]
    assert 0 < share < 0.5, share


def test_the_outage_breaker_pauses_instead_of_spending_attempts(job, mock):
    # the outage lasts until the run has paused for it: without a breaker it would never end
    mock.faults(outage="open")
    job.write(manifest(mock.url, items(20), limits={"concurrency": 4, "max_attempts": 6,
                                                    "outage_threshold": 5, "outage_pause_s": 0.5}))
    log_file = job.root / "run.log"
    proc = cli_process("run", job.manifest, "--log-file", log_file)
    wait_for(lambda: "pausing" in proc.err(), "the breaker to pause the run", proc=proc)
    mock.faults(outage="closed")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert job.scalar("SELECT count(*) FROM items WHERE state = 'succeeded'") == 20, err
    text = log_file.read_text()
    assert "pausing" in text and "API answers again" in text
    assert "API failing" in err  # said on the terminal too
    # far fewer requests than 20 items × 6 attempts burnt during the outage
    failures = [r for r in generation_requests(mock) if r["status"] == 503]
    assert len(failures) < 20, err


def test_json_log_lines_parse_and_never_contain_the_key(job, mock):
    mock.configure(api_key=TEST_KEY)
    job.write(manifest(mock.url, [{"id": "a", "prompt": "[[mock:503]] x"}, {"id": "b", "prompt": "y"},
                                  {"id": "c", "prompt": "[[mock:safety*always]] z"}]))
    log_file = job.root / "logs" / "run.jsonl"
    proc = cli_process("run", job.manifest, "--log-file", log_file, "--log-format", "json")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    text = log_file.read_text()
    assert TEST_KEY not in text
    events = [json.loads(line) for line in text.splitlines()]
    kinds = {e["event"] for e in events}
    assert {"run_start", "attempt", "run_end"} <= kinds
    attempts = [e for e in events if e["event"] == "attempt"]
    assert len(attempts) == 4
    ok = [e for e in attempts if e["class"] == "ok"]
    assert {e["item"] for e in ok} == {"a", "b"} and all(e["outputs"] for e in ok)
    assert {"item", "attempt", "status", "class", "latency_ms"} <= set(attempts[0])
    text_log = job.root / "run.txt"
    assert cli("run", job.manifest, "--retry-failed", "--log-file", text_log).exit_code == 1
    assert "attempt item=c" in text_log.read_text() and TEST_KEY not in text_log.read_text()
