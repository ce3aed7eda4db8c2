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
