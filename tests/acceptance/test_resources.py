"""The database held by another process: a run waits for it (busy timeout), and says so
clearly when it cannot go on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli, cli_process, manifest, wait_for

HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()  # until the test says so
conn.execute("COMMIT")
"""


def hold_lock(db) -> subprocess.Popen:
    """A process holding the database's write lock until a line arrives on its stdin."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line == "locked", proc.stderr.read()
    return proc


def waiting_on(pid: int, db: Path) -> bool:
    """Whether process ``pid`` has ``db`` open and one of its threads sleeps in SQLite's busy
    handler (Linux /proc: an open file and a thread in nanosleep)."""
    if not any(os.readlink(fd) == str(db) for fd in Path(f"/proc/{pid}/fd").iterdir()):
        return False
    return any((task / "wchan").read_text() == "hrtimer_nanosleep" for task in Path(f"/proc/{pid}/task").iterdir())


def test_a_run_waits_for_a_lock_held_briefly_by_another_process(job, mock):
    if not Path("/proc/self/wchan").exists():
        pytest.skip("needs Linux /proc to see the run wait on the lock")
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    first = cli("run", job.manifest)
    assert first.exit_code == 0, first.stderr  # the database exists now
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}]))
    holder = hold_lock(job.db)
    proc = cli_process("run", job.manifest, env={"BATCHFUSE_DB_BUSY_TIMEOUT_S": "300"})
    try:
        # the run is waiting for the lock (not failing) before the holder lets go
        wait_for(lambda: waiting_on(proc.pid, job.db), "the run to wait on the locked database", proc=proc)
    finally:
        holder.communicate("go\n", timeout=30)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert job.state_of() == {"a": "succeeded", "b": "succeeded"}


def test_a_lock_held_too_long_is_reported_clearly(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    first = cli("run", job.manifest)
    assert first.exit_code == 0, first.stderr
    holder = hold_lock(job.db)  # held until the run has given up
    try:
        proc = cli_process("run", job.manifest, env={"BATCHFUSE_DB_BUSY_TIMEOUT_S": "1"})
        _, err = proc.communicate(timeout=60)
    finally:
        holder.communicate("go\n", timeout=30)
    assert proc.returncode == 3, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "locked" in lines[0], err
    assert "another process held it" in lines[0]
    assert job.integrity_ok()


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
        assert result.exit_code == 3, result.stderr
        assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
        states = job.state_of()
        assert "failed" not in states.values()  # the run stopped; it did not fail every item
        assert list(states.values()).count("pending") >= 12 - 2 * 2 - 1
        for name in (p.name for p in disk.iterdir() if p.name != "filler"):
            assert name.endswith(".png") and states[name.removesuffix(".png")] == "succeeded", name
        assert not (disk / ".batchfuse-tmp").exists() or not any((disk / ".batchfuse-tmp").iterdir())
    finally:
        subprocess.run(["umount", str(disk)], check=False)
