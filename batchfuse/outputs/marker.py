"""The output folder's marker: runners sharing a job must write to the same folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from batchfuse.errors import InputError, OutputError

MARKER = ".batchfuse-job"


def check_output_folder(token: str, live_runners: Callable[[], int], job_name: str, folder: Path) -> None:
    """Runners sharing a job must share its output folder: the first writes a marker with the
    job's ``token``; a runner joining live ones refuses to start if it cannot see that marker."""
    marker = folder / MARKER
    try:
        seen = marker.read_text(encoding="utf-8").strip()
    except OSError:
        seen = None
    if seen == token:
        return
    if live_runners() > 0:
        raise InputError(
            f"output folder {folder} is not the one the other runners of job {job_name!r} write to "
            f"(its {MARKER} marker is {'missing' if seen is None else 'different'}); on several machines "
            "output.dir must be shared storage mounted at the same path"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(token + "\n", encoding="utf-8")
    except OSError as exc:  # read-only or full: one line naming the folder
        raise OutputError(f"cannot write {marker}: {exc.strerror or exc}") from None
