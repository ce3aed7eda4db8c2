"""Running unattended: signals, deadlines, one runner per job, adaptive rate, the outage
breaker and the logs — through the CLI in subprocesses, as cron runs it."""

from __future__ import annotations

import json
import signal
import sqlite3
import time

from tests.conftest import TEST_KEY, cli, cli_process, generation_requests, manifest


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def count(db, query: str) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(query).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def items(n: int) -> list[dict]:
    return [{"id": f"i{i:03d}", "prompt": f"p{i}"} for i in range(n)]


def test_sigterm_lets_in_flight_requests_finish_then_exits_3_and_a_rerun_completes(job, mock):
    mock.configure(latency_ms=400)
    job.write(manifest(mock.url, items(30), limits={"concurrency": 4}))
    proc = cli_process("run", job.manifest)
    wait_for(lambda: count(job.db, "SELECT count(*) FROM attempts") >= 4)
    time.sleep(0.1)  # requests are in flight now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "interrupted by SIGTERM" in err
    sent = len(generation_requests(mock))
    # every request the mock answered was recorded, none was cut short
    assert count(job.db, "SELECT count(*) FROM attempts") == sent
    assert count(job.db, "SELECT count(*) FROM attempts WHERE outcome = 'interrupted'") == 0
    assert count(job.db, "SELECT count(*) FROM items WHERE state = 'running'") == 0
    rerun = cli("run", job.manifest)
    assert rerun.exit_code == 0
    assert len(generation_requests(mock)) == 30


def test_a_second_signal_cancels_in_flight_requests_as_interrupted(job, mock):
    mock.configure(latency_ms=5000)
    job.write(manifest(mock.url, items(6), limits={"concurrency": 3, "timeout_s": 30}))
    proc = cli_process("run", job.manifest)
    wait_for(lambda: count(job.db, "SELECT count(*) FROM runs") >= 1)
    time.sleep(0.8)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 3, err
    assert count(job.db, "SELECT count(*) FROM attempts WHERE outcome = 'interrupted'") == 3
    assert count(job.db, "SELECT count(*) FROM items WHERE state = 'pending' AND attempts = 0") == 6
    mock.configure(latency_ms=0)
    assert cli("run", job.manifest).exit_code == 0


def test_the_grace_period_bounds_how_long_a_stop_waits(job, mock):
    mock.configure(latency_ms=8000)
    job.write(manifest(mock.url, items(2), limits={"concurrency": 2, "timeout_s": 30}))
    proc = cli_process("run", job.manifest, "--grace", "0.5s")
    wait_for(lambda: count(job.db, "SELECT count(*) FROM runs") >= 1)
    time.sleep(0.8)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 3
    assert time.monotonic() - started < 5
    assert count(job.db, "SELECT count(*) FROM attempts WHERE outcome = 'interrupted'") == 2


def test_no_request_starts_after_the_deadline(job, mock):
    mock.configure(latency_ms=100)
    job.write(manifest(mock.url, items(200), limits={"concurrency": 2}))
    started = time.time()
    proc = cli_process("run", job.manifest, "--max-runtime", "1.5s")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "deadline reached at" in err
    assert "pending" in err  # says what is left
    last_start = count(job.db, "SELECT max(started_at) FROM attempts")
    assert last_start <= started + 1.5 + 2.0  # the deadline counts from after start-up (imports)
    done = count(job.db, "SELECT count(*) FROM items WHERE state = 'succeeded'")
    assert 0 < done < 200


def test_a_second_runner_of_the_same_job_is_refused_and_a_dead_ones_lock_is_not(job, mock):
    mock.configure(latency_ms=300)
    job.write(manifest(mock.url, items(40), limits={"concurrency": 2}))
    first = cli_process("run", job.manifest)
    wait_for(lambda: count(job.db, "SELECT count(*) FROM attempts") >= 1)
    second = cli("run", job.manifest)
    assert second.exit_code == 2  # the caller's mistake: nothing was sent
    assert f"being run by process {first.pid}" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    mock.configure(latency_ms=0)
    third = cli("run", job.manifest)
    assert third.exit_code == 0, third.stderr


def test_adaptive_rate_finishes_a_run_whose_configured_rate_is_too_high(job, mock):
    # the mock allows 10 requests per 1 s window (600/min); the manifest claims 6000/min
    mock.configure(rpm_limit=10, rpm_window_s=1.0)
    job.write(manifest(mock.url, items(60), limits={"concurrency": 8, "requests_per_minute": 6000,
                                                    "max_attempts": 10}))
    log_file = job.root / "run.jsonl"
    proc = cli_process("run", job.manifest, "--log-file", log_file, "--log-format", "json")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    cuts = [e for e in events if e["event"] == "rate"]
    assert cuts and cuts[-1]["rpm"] < 6000
    status = json.loads(cli("status", job.manifest, "--json").stdout)
    assert status["items"]["succeeded"] == 60
    share = status["rate_limited"] / status["attempts"]
    assert 0 < share < 0.5, share


def test_the_outage_breaker_pauses_instead_of_spending_attempts(job, mock):
    mock.configure(outage_s=1.5)
    job.write(manifest(mock.url, items(20), limits={"concurrency": 4, "max_attempts": 3,
                                                    "outage_threshold": 5, "outage_pause_s": 0.5}))
    log_file = job.root / "run.log"
    proc = cli_process("run", job.manifest, "--log-file", log_file)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert count(job.db, "SELECT count(*) FROM items WHERE state = 'succeeded'") == 20
    text = log_file.read_text()
    assert "pausing" in text and "API answers again" in text
    assert "API failing" in err  # said on the terminal too
    # far fewer requests than 20 items × 3 attempts burnt during the outage
    failures = [r for r in generation_requests(mock) if r["status"] == 503]
    assert len(failures) < 20


def test_json_log_lines_parse_and_never_contain_the_key(job, mock):
    mock.configure(api_key=TEST_KEY)
    job.write(manifest(mock.url, [{"id": "a", "prompt": "[[mock:503]] x"}, {"id": "b", "prompt": "y"},
                                  {"id": "c", "prompt": "[[mock:safety*always]] z"}]))
    log_file = job.root / "logs" / "run.jsonl"
    proc = cli_process("run", job.manifest, "--log-file", log_file, "--log-format", "json")
    proc.communicate(timeout=30)
    assert proc.returncode == 1
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
