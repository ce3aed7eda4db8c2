"""The output folder's marker: runners sharing a job must write to the same folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from batchfuse.errors import InputError, OutputError
from batchfuse.outputs.atomic import atomic_file

MARKER = ".batchfuse-job"


def check_output_folder(token: str, live_runners: Callable[[], int], job_name: str, folder: Path) -> None:
    """Runners sharing a job must share its output folder: the first writes a marker with the
    job's ``token``; a runner joining live ones refuses to start if it cannot see that marker.

    Live runners are counted *before* the marker is read: a runner registers as live only after
    it saw or wrote the marker, so runners starting at the same moment never take each other's
    half-done start for a missing marker.  The marker appears atomically (never empty)."""
    marker = folder / MARKER
    others = live_runners()
    try:
        seen = marker.read_text(encoding="utf-8").strip()
    except OSError:
        seen = None
    if seen == token:
        return
    if others > 0:
        raise InputError(
            f"output folder {folder} is not the one the other runners of job {job_name!r} write to "
            f"(its {MARKER} marker is {'missing' if seen is None else 'different'}); on several machines "
            "output.dir must be shared storage mounted at the same path"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(marker, "w", fsync=True, encoding="utf-8") as f:
            f.write(token + "\n")
    except OSError as exc:  # read-only or full: one line naming the folder
        raise OutputError(f"cannot write {marker}: {exc.strerror or exc}") from None
