"""Operator mistakes refused at the CLI: a changed output.filename that would overwrite another
item's recorded output, log/export/report files aimed at the job's own files, and more."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import cli, generation_requests, manifest


def dump(db: Path) -> list[str] | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        return list(conn.iterdump())


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


# ------------------------------------------------------------------ 1. output.filename changed


def test_a_changed_filename_cannot_give_a_recorded_output_to_another_item(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "title": "t1"}], output={"filename": "{item}.png"}))
    assert cli("run", job.manifest).exit_code == 0
    out = next(job.root.rglob("a.png"))
    before_bytes = out.read_bytes()
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "title": "t1"}, {"id": "c", "prompt": "q", "title": "a"}],
                       output={"filename": "{title}.png"}))
    before, sent = dump(job.db), len(generation_requests(mock))
    for command in ("validate", "run"):
        line = one_error_line(cli(command, job.manifest))
        assert "item c" in line and "item a" in line and "output.filename" in line, line
    assert len(generation_requests(mock)) == sent
    assert dump(job.db) == before
    assert out.read_bytes() == before_bytes


# ------------------------------------------------------------------ 2. writing over the job's own files


def _ran(job, mock) -> None:
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    assert cli("run", job.manifest).exit_code == 0


def _own_files(job) -> list[Path]:
    out = next(job.root.rglob("a.png")).parent
    files = [job.manifest, out / "new.csv"]
    if job.db.exists():
        files += [job.db, job.root / "batchfuse.db-wal"]
    return files


def test_log_file_export_and_report_refuse_the_jobs_own_files(job, mock):
    _ran(job, mock)
    for target in _own_files(job):
        before = {p: p.read_bytes() for p in (job.manifest, job.db) if p.exists()}
        for args in (("run", job.manifest, "--log-file", target),
                     ("export", job.manifest, "--format", "csv", "-o", target),
                     ("report", job.manifest, "-o", target)):
            line = one_error_line(cli(*args))
            assert str(target.name) in line, (args, line)
            assert {p: p.read_bytes() for p in before} == before, args
        if target.name == "new.csv":
            assert not target.exists()


# ------------------------------------------------------------------ 3. passwords in a database URL's query


def test_a_password_in_the_database_urls_query_is_never_printed(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    secret, other = "Qz7secretPASSword9", "Kx5sslSECRETpass3"
    url = f"postgresql+psycopg://postgres:{secret}x@127.0.0.1:1/test?password={secret}&sslpassword={other}&connect_timeout=2"
    for args in (("run", job.manifest), ("status", job.manifest), ("validate", job.manifest), ("db", "upgrade")):
        result = cli(*args, "--db", url)
        command = args[0]
        text = result.stdout + result.stderr
        assert result.exit_code != 0, (command, text)
        for s in (secret, other, secret[:8], other[:8]):
            assert s not in text, (command, text)
        assert "Traceback" not in text


# ------------------------------------------------------------------ 4. a dead runner's claims in export and report


def test_export_and_report_show_a_dead_runners_claims_as_orphaned(job, mock):
    import csv
    import io
    import signal

    from tests.conftest import cli_process, wait_for

    def running() -> int:
        try:
            return job.sql("SELECT count(*) FROM items WHERE state = 'running'")[0][0]
        except Exception:  # the database is still being made
            return 0

    mock.faults(hold=True)
    job.write(manifest(mock.url, [{"id": f"i{k}", "prompt": f"p{k}"} for k in range(6)], limits={"concurrency": 2}))
    proc = cli_process("run", job.manifest)
    wait_for(lambda: running() >= 2 and mock.faults()["held"] >= 2, "two requests in flight", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    claimed = running()
    mock.faults(hold=False)

    exported = cli("export", job.manifest, "--format", "csv")
    assert exported.exit_code == 0, exported.stderr
    states = [row["state"] for row in csv.DictReader(io.StringIO(exported.stdout))]
    assert states.count("orphaned") == claimed and "running" not in states, states
    reported = cli("report", job.manifest, "-o", job.root / "r.html")
    assert reported.exit_code == 0, reported.stderr
    assert "0 running" in reported.stdout and f"{claimed} orphaned" in reported.stdout, reported.stdout
    page = (job.root / "r.html").read_text(encoding="utf-8")
    assert f'<li data-count="orphaned"><b>{claimed}</b>' in page
    assert '<li data-count="running"><b>0</b>' in page


# ------------------------------------------------------------------ 5. the resolved deadline is said


def _said(deadline, now) -> str:
    if deadline.date() == now.date():
        return f"running until {deadline:%Y-%m-%d %H:%M}"
    if (deadline.date() - now.date()).days == 1:
        return f"running until {deadline:%H:%M} tomorrow ({deadline:%Y-%m-%d})"
    return f"running until {deadline:%Y-%m-%d %H:%M}"


def test_run_says_when_until_and_max_runtime_end_with_the_date(job, mock):
    from datetime import datetime, timedelta

    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    now = datetime.now()
    past = now - timedelta(minutes=3)
    until = past.replace(second=0, microsecond=0)
    if until <= now:
        until += timedelta(days=1)
    log = job.root / "logs" / "run.log"
    result = cli("run", job.manifest, "--until", f"{past:%H:%M}", "--log-file", log)
    assert result.exit_code == 0, result.stderr
    expected = _said(until, now)
    assert [line for line in result.stderr.splitlines() if line.startswith("running until")] == [expected], result.stderr
    assert expected in log.read_text(encoding="utf-8")

    result = cli("run", job.manifest, "--max-runtime", "2h")
    lines = [line for line in result.stderr.splitlines() if line.startswith("running until")]
    assert len(lines) == 1, result.stderr
    assert lines[0] in {_said(now + timedelta(hours=2, minutes=d), now) for d in (0, 1, 2)}, lines
