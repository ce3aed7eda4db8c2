"""Once a stop begins (deadline, signal) no request leaves: items waiting for the rate limiter
give their claims back untouched; only requests already on the wire finish.

Requests are counted by their time at the mock and compared with the moment the run logged
its "stopping" event; nothing else here depends on the clock."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from tests.conftest import cli, cli_process, events, generation_requests, manifest, stop_time, wait_for


def slow_job(job, mock) -> None:
    mock.configure(latency_ms=0)
    items = [{"id": f"i{i:02d}", "prompt": f"p{i}"} for i in range(40)]
    job.write(manifest(mock.url, items, limits={"concurrency": 8, "requests_per_minute": 30}))


def check_nothing_left_after_the_stop(job, mock, log: Path) -> None:
    stopped = stop_time(log)
    sent = generation_requests(mock)
    late = [r for r in sent if r["received"] > stopped]  # by arrival: one on the wire at the stop may answer later
    assert sent and late == [], (stopped, [r["received"] for r in sent])
    # every request is one recorded attempt; the claims came back untouched
    assert job.sql("SELECT count(*) FROM attempts") == [(len(sent),)]
    assert job.sql("SELECT count(*) FROM items WHERE state = 'running'") == [(0,)]
    assert job.sql("SELECT count(*) FROM items WHERE state = 'pending' AND attempts > 0") == [(0,)]
    end = [e for e in events(log) if e["event"] == "run_end"][-1]
    assert end["returned"] >= 1 and "in_flight" in end
    assert cli("status", job.manifest).exit_code == 0


def test_no_request_leaves_after_the_deadline(job, mock):
    slow_job(job, mock)
    log = job.root / "run.jsonl"
    proc = cli_process("run", job.manifest, "--max-runtime", "5s", "--log-file", log, "--log-format", "json")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    check_nothing_left_after_the_stop(job, mock, log)
    assert "deadline reached" in err and "claims returned" in err, err


def test_no_request_leaves_after_sigint(job, mock):
    slow_job(job, mock)
    log = job.root / "run.jsonl"
    proc = cli_process("run", job.manifest, "--log-file", log, "--log-format", "json")
    wait_for(lambda: len(generation_requests(mock)) >= 2, "two requests at the mock", proc=proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    check_nothing_left_after_the_stop(job, mock, log)
    assert "interrupted by SIGINT" in err and "claims returned" in err, err


def test_a_fatal_answer_stops_the_run_before_a_waiting_request_takes_its_slot(job, mock):
    # one request at a time: the 404 of an unknown model must stop the run before the next item goes
    provider = {"kind": "gemini", "base_url": mock.url, "model": "no-such-image-model", "api_key_env": "DMXAPI_KEY"}
    job.write(manifest(mock.url, [{"id": f"i{i}", "prompt": f"p{i}"} for i in range(5)],
                       provider=provider, limits={"concurrency": 1}))
    result = cli("run", job.manifest)
    assert result.exit_code == 3, result.stderr
    assert len(generation_requests(mock)) == 1, result.stderr
    assert job.sql("SELECT outcome, http_status FROM attempts") == [("fatal", 404)]
    assert re.search(r"stopped: 0 requests in flight at the stop finished; \d+ claims? returned untouched", result.stderr), result.stderr
