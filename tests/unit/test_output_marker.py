"""The shared output folder's marker under runners that start at the same moment."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchfuse.errors import InputError
from batchfuse.outputs.marker import MARKER, check_output_folder


def test_a_runner_that_became_live_while_we_looked_is_not_taken_for_a_missing_marker(tmp_path: Path) -> None:
    folder = tmp_path / "out"

    def another_runner_finishes_its_start() -> int:
        # the other runner writes the marker and registers as live exactly now, between the
        # moment this runner starts its check and the moment it counts the live runners
        check_output_folder("token", lambda: 0, "job", folder)
        return 1

    check_output_folder("token", another_runner_finishes_its_start, "job", folder)
    assert (folder / MARKER).read_text(encoding="utf-8") == "token\n"
    assert sorted(p.name for p in folder.iterdir()) == [MARKER]  # no temp file left


def test_a_folder_without_the_marker_is_refused_while_others_are_live(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="marker is missing"):
        check_output_folder("token", lambda: 1, "job", tmp_path / "elsewhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / MARKER).write_text("another-token\n", encoding="utf-8")
    with pytest.raises(InputError, match="marker is different"):
        check_output_folder("token", lambda: 1, "job", tmp_path / "other")
