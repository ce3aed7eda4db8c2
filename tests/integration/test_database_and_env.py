"""The database and the environment, as a person gets them wrong: a file that is no database, a
damaged one, one from a newer batchfuse, an in-memory URL, a folder, a server that is down, a
driver not installed, read-only media, a key with a newline, a log file that cannot be written.

Each gets one line saying what is wrong and what to do, the same from every command, with a
documented exit code, no traceback, and nothing sent.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from batchfuse.cli import Group
from tests.conftest import SAMPLE_IMAGES, TEST_KEY, JobDir, cli, cli_process, generation_requests, manifest

ITEMS = [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}]
#: Every command that opens the job's database, with the arguments it needs after the manifest.
COMMANDS = {
    "validate": (),
    "run": (),
    "status": (),
    "report": ("-o", "{tmp}/r.html"),
    "export": ("--format", "csv"),
}
DOWN_POSTGRES = "postgresql+psycopg://batch:s3cret-pw@127.0.0.1:1/catalog"


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobDir:
    """The job folder on SQLite only (conftest's runs on PostgreSQL too): these are SQLite's cases."""
    shutil.copytree(SAMPLE_IMAGES, tmp_path / "images")
    monkeypatch.setenv("DMXAPI_KEY", TEST_KEY)
    return JobDir(tmp_path)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    return lines[0]


def each_command(job: JobDir, *db: str) -> dict[str, tuple[int, str]]:
    """Every command's exit code and stderr against the job (``--db`` when given)."""
    results = {}
    for name, extra in COMMANDS.items():
        args = [a.format(tmp=job.root) for a in extra]
        result = cli(name, job.manifest, *args, *(["--db", *db] if db else []))
        results[name] = (result.exit_code, result.stderr)
    return results


def test_a_file_that_is_not_a_database_gets_the_same_answer_from_every_command(job, mock):
    job.write(manifest(mock.url, ITEMS))
    notes = job.root / "notes.txt"
    notes.write_text("shopping list: eggs, milk, and a much longer line so SQLite reads a page\n" * 20)
    before = notes.read_bytes()
    for name, (code, stderr) in each_command(job, str(notes)).items():
        line = one_error_line(stderr)
        assert code == 2, (name, stderr)
        assert f"{notes} is not an SQLite database" in line and "--db" in line, (name, line)
    assert notes.read_bytes() == before
    assert generation_requests(mock) == []


def test_a_damaged_database_is_called_damaged_and_stops_with_exit_3(job, mock):
    job.write(manifest(mock.url, ITEMS))
    assert cli("run", job.manifest).exit_code == 0
    data = bytearray(job.db.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # the header survives, every page is garbage
    job.db.write_bytes(bytes(data))
    for name, (code, stderr) in each_command(job).items():
        line = one_error_line(stderr)
        assert code == 3, (name, stderr)
        assert "is damaged" in line and "backup" in line, (name, line)
    assert len(generation_requests(mock)) == 2


def test_a_database_from_a_newer_batchfuse_says_so_everywhere_and_db_upgrade_does_not_touch_it(job, mock):
    job.write(manifest(mock.url, ITEMS))
    assert cli("run", job.manifest).exit_code == 0
    with sqlite3.connect(job.db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    results = each_command(job)
    upgrade = cli("db", "upgrade", "--db", job.db)
    results["db upgrade"] = (upgrade.exit_code, upgrade.stderr)
    for name, (code, stderr) in results.items():
        line = one_error_line(stderr)
        assert code == 2, (name, stderr)
        assert "made by a newer batchfuse" in line and "0099" in line and "upgrade batchfuse" in line, (name, line)
        assert "older" not in line
    assert job.sql("SELECT version_num FROM alembic_version") == [("0099",)]
    assert len(generation_requests(mock)) == 2


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(job, mock, url):
    job.write(manifest(mock.url, ITEMS))
    for name, (code, stderr) in each_command(job, url).items():
        line = one_error_line(stderr)
        assert code == 2, (name, stderr)
        assert "in-memory database forgets the job" in line, (name, line)
    assert generation_requests(mock) == []


def test_a_folder_given_as_the_database_is_named_as_a_folder(job, mock):
    job.write(manifest(mock.url, ITEMS))
    folder = job.root / "data"
    folder.mkdir()
    for name, (code, stderr) in each_command(job, str(folder)).items():
        line = one_error_line(stderr)
        assert code == 2, (name, stderr)
        assert f"{folder} is a folder, not a database file" in line, (name, line)
    assert list(folder.iterdir()) == []


def test_a_database_in_a_folder_that_does_not_exist(job, mock):
    job.write(manifest(mock.url, ITEMS))
    db = job.root / "no" / "such" / "folder" / "jobs.db"
    status = cli("status", job.manifest, "--db", db)
    assert status.exit_code == 2 and "has not been run yet" in one_error_line(status.stderr)
    assert not db.parent.exists()  # readers never create anything
    assert cli("run", job.manifest, "--db", db).exit_code == 0  # a run makes the folder
    assert cli("status", job.manifest, "--db", db).exit_code == 0


def test_a_database_whose_folder_cannot_be_made_is_one_line(job, mock):
    job.write(manifest(mock.url, ITEMS))
    blocker = job.root / "a-file"
    blocker.write_text("x")
    result = cli("run", job.manifest, "--db", blocker / "jobs.db")
    assert result.exit_code == 3
    assert "jobs.db" in one_error_line(result.stderr)
    assert generation_requests(mock) == []


def test_a_postgresql_server_that_is_down_is_one_line_without_the_password(job, mock):
    job.write(manifest(mock.url, ITEMS))
    results = each_command(job, DOWN_POSTGRES)
    upgrade = cli("db", "upgrade", "--db", DOWN_POSTGRES)
    results["db upgrade"] = (upgrade.exit_code, upgrade.stderr)
    for name, (code, stderr) in results.items():
        line = one_error_line(stderr)
        assert code == 3, (name, stderr)
        assert line.startswith("error: cannot reach database postgresql+psycopg://batch:***@127.0.0.1:1/catalog")
        assert "s3cret-pw" not in stderr
    assert generation_requests(mock) == []


def test_a_missing_postgresql_driver_names_the_extra_to_install(job, tmp_path):
    """psycopg shadowed by a package that cannot be imported, as where the extra is not installed."""
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    job.write(manifest("mock", ITEMS))
    env = {"PYTHONPATH": f"{shadow.parent}:{Path(__file__).resolve().parents[2]}"}
    for args in (["run", job.manifest], ["status", job.manifest], ["db", "upgrade"]):
        proc = cli_process(*args, "--db", "postgresql+psycopg://batch@127.0.0.1/catalog", env=env)
        _, err = proc.communicate(timeout=60)
        line = one_error_line(err)
        assert proc.returncode == 2, (args, err)
        assert "driver psycopg is not installed" in line and "pip install 'batchfuse[postgres]'" in line


@pytest.fixture
def read_only_job(job, mock, tmp_path):
    """A job run to completion on a small tmpfs, then remounted read-only (root only)."""
    disk = tmp_path / "media"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        ro = JobDir(disk)
        ro.write(manifest(mock.url, ITEMS))
        assert cli("run", ro.manifest, "--db", ro.db).exit_code == 0
        remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
        assert remount.returncode == 0, remount.stderr
        yield ro
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_status_report_and_export_read_a_database_on_read_only_media(read_only_job, tmp_path):
    ro = read_only_job
    status = cli("status", ro.manifest, "--db", ro.db, "--json")
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout)["items"]["succeeded"] == 2
    export = cli("export", ro.manifest, "--db", ro.db, "--format", "jsonl")
    assert export.exit_code == 0, export.stderr
    assert [json.loads(line)["state"] for line in export.stdout.splitlines()] == ["succeeded", "succeeded"]
    report = cli("report", ro.manifest, "--db", ro.db, "-o", tmp_path / "review.html")
    assert report.exit_code == 0, report.stderr
    assert (tmp_path / "review.html").is_file()


def test_writing_on_read_only_media_is_one_line(read_only_job, mock):
    ro = read_only_job
    run = cli("run", ro.manifest, "--db", ro.db, "--retry-failed")
    assert run.exit_code == 3 and "is read-only" in one_error_line(run.stderr)
    report = cli("report", ro.manifest, "--db", ro.db)
    assert report.exit_code == 3 and "Read-only file system" in one_error_line(report.stderr)
    log = cli("run", ro.manifest, "--db", ro.db, "--log-file", ro.root / "run.log")
    assert log.exit_code == 2
    assert f"--log-file {ro.root / 'run.log'}: cannot write there" in one_error_line(log.stderr)
    assert len(generation_requests(mock)) == 2


def test_status_reads_while_another_process_holds_the_write_lock(job, mock):
    job.write(manifest(mock.url, ITEMS))
    assert cli("run", job.manifest).exit_code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.read()", str(job.db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        status = cli("status", job.manifest, "--json")
        assert status.exit_code == 0, status.stderr
        assert json.loads(status.stdout)["items"]["succeeded"] == 2
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_a_key_with_a_trailing_newline_is_used_without_it_and_the_value_never_shown(job, mock, monkeypatch):
    mock.configure(api_key=TEST_KEY)
    monkeypatch.setenv("DMXAPI_KEY", TEST_KEY + "\n")
    job.write(manifest(mock.url, ITEMS))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert "DMXAPI_KEY had whitespace around the key" in result.stderr
    assert TEST_KEY not in result.stderr + result.stdout and "Traceback" not in result.stderr
    assert all(r["key_ok"] for r in generation_requests(mock)) and len(generation_requests(mock)) == 2


def test_a_key_with_a_control_character_inside_is_refused_before_anything_is_sent(job, mock, monkeypatch):
    monkeypatch.setenv("DMXAPI_KEY", TEST_KEY[:8] + "\x07" + TEST_KEY[8:])
    job.write(manifest(mock.url, ITEMS))
    result = cli("run", job.manifest)
    line = one_error_line(result.stderr)
    assert result.exit_code == 2
    assert "environment variable DMXAPI_KEY holds a control or non-ASCII character" in line
    assert TEST_KEY[:8] not in result.stderr
    assert generation_requests(mock) == []
    assert not job.db.exists() or job.sql("SELECT count(*) FROM attempts") == [(0,)]


def test_an_item_id_with_a_newline_cannot_forge_a_line_in_the_text_log(job, mock):
    forged = "2026-01-01 00:00:00,000 INFO run ended: completed"
    job.write(manifest(mock.url, [{"id": f"a\n{forged}", "prompt": "one"}], output={"filename": "{n}.png"}))
    log_file = job.root / "run.log"
    result = cli("run", job.manifest, "--log-file", log_file)
    if result.exit_code == 2:  # ids with control characters refused outright: nothing to forge with
        assert "Traceback" not in result.stderr
        return
    assert result.exit_code == 0, result.stderr
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert not any(line.startswith(forged) for line in lines), lines
    assert any("item=a\\n2026" in line for line in lines), lines


def test_a_bug_exits_4_with_one_line_not_3():
    @click.group(cls=Group)
    def main() -> None:
        pass

    @main.command()
    def boom() -> None:
        raise RuntimeError("something\nunexpected")

    result = CliRunner().invoke(main, ["boom"], catch_exceptions=False)
    assert result.exit_code == 4
    line = one_error_line_allowing_internal(result.stderr)
    assert line == "error: internal error (a bug in batchfuse): RuntimeError: something unexpected " \
                   "(BATCHFUSE_DEBUG=1 shows more)"


def one_error_line_allowing_internal(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]
