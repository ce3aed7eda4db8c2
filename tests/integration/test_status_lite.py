"""`status` reads an SQLite job database with sqlite3 (no SQLAlchemy import) and says exactly what
the store says; what it cannot answer the store answers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from batchfuse.review.reading import job_status
from batchfuse.store import engine, lite
from tests.conftest import cli, run_review_job


def test_the_lite_schema_head_is_the_stores():
    assert lite.SCHEMA_HEAD == engine.SCHEMA_HEAD


def test_sqlite_status_is_the_stores_status_with_orphans_and_removed_items(job, mock, backend):
    run_review_job(job, mock)  # 2 succeeded, 1 failed (with its error), 2 pending
    if backend == "postgres":  # a URL: left to the store, which reads it through the same queries
        assert lite.sqlite_status(None, job.manifest, "test-job") is None
        assert json.loads(cli("status", job.manifest, "--json").stdout)["items"]["failed"] == 1
        return
    with sqlite3.connect(job.db) as conn:  # a claim of a runner that is gone, and an item no longer planned
        conn.execute("UPDATE items SET state = 'running', lease_owner = 'gone' WHERE key = 'later'")
        conn.execute("UPDATE items SET in_plan = 0 WHERE key = 'remote'")
    quick = lite.sqlite_status(None, job.manifest, "test-job")
    assert quick is not None
    assert quick == job_status(job.manifest)
    assert quick["items"] == {"total": 4, "succeeded": 2, "failed": 1, "pending": 0, "running": 0,
                              "orphaned": 1, "removed": 1}
    assert quick["errors"][0]["example"] == "unsafe" and quick["attempts"] >= 3
    shown = cli("status", job.manifest, "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout) == quick


def test_what_sqlite_status_cannot_answer_is_left_to_the_store(job, mock, backend):
    if backend == "postgres":
        pytest.skip("about SQLite files")
    assert lite.sqlite_status(None, job.manifest, "test-job") is None  # no database yet
    run_review_job(job, mock)
    assert lite.sqlite_status(None, job.manifest, "another-job") is None  # not in this database
    assert lite.sqlite_status(f"sqlite:///{job.db}?mode=ro", job.manifest, "test-job") is None  # a URL with options
    assert lite.sqlite_status(f"sqlite:///{job.db}", job.manifest, "test-job") is not None
    with sqlite3.connect(job.db) as conn:  # an older schema: the store says so
        conn.execute("UPDATE alembic_version SET version_num = '0004'")
    assert lite.sqlite_status(None, job.manifest, "test-job") is None
    shown = cli("status", job.manifest)
    assert shown.exit_code == 2 and "older schema (0004)" in shown.stderr, shown.stderr


def test_status_of_an_sqlite_job_does_not_import_sqlalchemy(job, mock, backend):
    if backend == "postgres":
        pytest.skip("about SQLite files")
    run_review_job(job, mock)
    code = (
        "import sys\n"
        "from batchfuse.cli import main\n"
        f"try:\n    main(['status', {str(job.manifest)!r}])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('sqlalchemy' in sys.modules, 'aiohttp' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False False", result.stdout + result.stderr
    assert "succeeded  2" in result.stdout
