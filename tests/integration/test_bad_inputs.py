"""The catalogue of bad input in ``tests/bad_inputs/``: each file starts with
``# expect: MESSAGE``.  Each must give exactly that one line, exit 2, no traceback, send
nothing to the mock and leave an existing database unchanged."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_IMAGES, cli, manifest

CASES = sorted((Path(__file__).parent.parent / "bad_inputs").glob("*.yaml"))


def expected_message(case: Path) -> str:
    first = case.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect: "), f"{case.name} lacks its '# expect:' line"
    return first.removeprefix("# expect: ")


def dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return list(conn.iterdump())


@pytest.fixture(scope="module")
def reference_db(tmp_path_factory, request):
    """A database holding one finished job, made once for the module."""
    from batchfuse.mock import MockConfig, MockServerThread

    root = tmp_path_factory.mktemp("ref")
    import yaml

    with MockServerThread(MockConfig(image_scale=1 / 16)) as server:
        (root / "good.yaml").write_text(yaml.safe_dump(manifest(server.url, [{"id": "a", "prompt": "p"}])))
        mp = pytest.MonkeyPatch()
        mp.setenv("DMXAPI_KEY", "k")
        try:
            assert cli("run", root / "good.yaml").exit_code == 0
        finally:
            mp.undo()
    return root / "batchfuse.db"


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 28


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_input_is_refused_with_one_clear_line(case, tmp_path, mock, monkeypatch, reference_db):
    shutil.copytree(SAMPLE_IMAGES, tmp_path / "images")
    for data_file in case.parent.glob(f"{case.stem}.*"):  # a case's own catalog
        if data_file.suffix != ".yaml":
            shutil.copy(data_file, tmp_path / data_file.name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "truncated.png").write_bytes((SAMPLE_IMAGES / "scene.png").read_bytes()[:600])
    target = tmp_path / case.name
    target.write_text(case.read_text(encoding="utf-8").replace("MOCK_URL", mock.url), encoding="utf-8")
    db = tmp_path / "existing.db"
    shutil.copy(reference_db, db)
    before = dump(db)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DMXAPI_KEY", "k")

    for command in ("validate", "run"):
        result = cli(command, case.name, "--db", db)
        assert result.exit_code == 2, (command, result.stderr)
        assert result.stderr == f"error: {expected_message(case)}\n"
        assert "Traceback" not in result.stdout + result.stderr
    assert mock.requests() == []
    assert dump(db) == before
    assert not (tmp_path / "batchfuse.db").exists()
    assert not (tmp_path / "out").exists()
