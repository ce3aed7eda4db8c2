"""The example manifests in jobs/ stay valid as the code changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, cli

EXAMPLES = sorted((ROOT / "jobs").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_manifest_validates(example: Path, tmp_path):
    result = cli("validate", example, "--db", tmp_path / "x.db")
    assert result.exit_code == 0, result.stderr
    assert "ok — job" in result.stdout
    assert not (tmp_path / "x.db").exists()  # validate writes nothing
