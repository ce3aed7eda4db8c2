"""The database held by another process: a run waits for it (busy timeout), and says so
clearly when it cannot go on."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

from tests.conftest import cli, cli_process, manifest

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def hold_lock(db, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_run_waits_for_a_lock_held_briefly_by_another_process(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    assert cli("run", job.manifest).exit_code == 0  # the database exists now
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}]))
    holder = hold_lock(job.db, 1.5)
    started = time.monotonic()
    proc = cli_process("run", job.manifest, env={"BATCHFUSE_DB_BUSY_TIMEOUT_S": "10"})
    _, err = proc.communicate(timeout=30)
    holder.wait(timeout=10)
    assert proc.returncode == 0, err
    assert time.monotonic() - started >= 1.0


def test_a_lock_held_too_long_is_reported_clearly(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    assert cli("run", job.manifest).exit_code == 0
    holder = hold_lock(job.db, 6)
    try:
        proc = cli_process("run", job.manifest, env={"BATCHFUSE_DB_BUSY_TIMEOUT_S": "1"})
        _, err = proc.communicate(timeout=30)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 3
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "locked" in lines[0], err
    assert "another process held it" in lines[0]
    with sqlite3.connect(job.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
