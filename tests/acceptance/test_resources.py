"""The database held by another process: a run waits for it (busy timeout), and says so
clearly when it cannot go on."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

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


def test_a_full_disk_stops_the_run_without_failing_items_or_leaving_partial_files(job, mock, tmp_path):
    """A real disk-full: the output folder on a 64 KiB tmpfs, nearly filled beforehand."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (disk / "filler").write_bytes(b"\0" * (56 * 1024))
        mock.configure(image_mode="collage", image_scale=0.25)  # ~10 KB images: the disk fills at once
        job.write(manifest(mock.url, [{"id": f"i{i}", "prompt": f"picture {i}"} for i in range(12)],
                           output={"dir": str(disk), "filename": "{item}.png"}, limits={"concurrency": 2}))
        result = cli("run", job.manifest)
        assert result.exit_code == 3
        assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
        states = job.state_of()
        assert "failed" not in states.values()  # the run stopped; it did not fail every item
        assert list(states.values()).count("pending") >= 12 - 2 * 2 - 1
        for name in (p.name for p in disk.iterdir() if p.name != "filler"):
            assert name.endswith(".png") and states[name.removesuffix(".png")] == "succeeded", name
        assert not (disk / ".batchfuse-tmp").exists() or not any((disk / ".batchfuse-tmp").iterdir())
    finally:
        subprocess.run(["umount", str(disk)], check=False)
