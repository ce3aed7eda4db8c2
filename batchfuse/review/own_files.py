"""Refusing a file the operator names for writing (a log, an export, a report) that is one of the
job's own: its manifest, its SQLite database (or the database's -wal/-shm), or inside its output folder."""

from __future__ import annotations

from pathlib import Path

from batchfuse.errors import InputError
from batchfuse.plan.manifest import load_manifest
from batchfuse.plan.planner import Planner
from batchfuse.store.engine import resolve_db_url


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_not_own_file(dest: Path, manifest: Path, db: str | None, option: str) -> None:
    """InputError (one line, exit 2) if writing ``dest`` (given as ``option``) would overwrite or
    append to the manifest, the job's SQLite database files, or anything in its output folder."""
    target = dest.resolve()
    own = [(manifest, "the manifest")]
    url = resolve_db_url(db, manifest)
    if url.startswith("sqlite:///"):
        db_file = Path(url.removeprefix("sqlite:///"))
        own += [(Path(f"{db_file}{suffix}"), "the job's database") for suffix in ("", "-wal", "-shm", "-journal")]
    for path, what in own:
        if _same(dest, path):
            raise InputError(f"{option} {dest}: that is {what} ({path}); name another file")
    try:
        output_dir = Planner(load_manifest(manifest), manifest).output_dir
    except (InputError, OSError):  # a broken manifest is reported by the command itself
        return
    if target == output_dir or target.is_relative_to(output_dir):
        raise InputError(f"{option} {dest}: that is inside the job's output folder ({output_dir}); name a file outside it")
