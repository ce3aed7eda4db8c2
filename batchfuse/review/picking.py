"""A pick moves files: the picked image becomes the item's output under its stable name.

Picking a kept version (``approve`` with ``pick`` naming a path in the versions folder) puts a
copy of it at the name it was made as, so tools reading ``out/{item}.png`` see it, and records the
output row as that image; the image displaced — the attempt's own — is kept as a version first, so
nothing is ever destroyed.  Undoing the pick (``clear``), picking the current output again, or a
reject (whose run will make a new image anyway) puts the attempt's own image back the same way.

Order, for a crash at any point: the verdict is recorded, then for each name the displaced image
is linked into the versions folder and recorded, the kept copy renamed over the name, and the
output row updated.  Every image is on disk in the versions folder before its name is replaced;
:func:`settle` is idempotent and runs again on the next verdict and when the review starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchfuse.errors import OutputError
from batchfuse.outputs.versions import keep_version, restore_version
from batchfuse.records import Job
from batchfuse.store.output_versions import place_output, placements, record_versions
from batchfuse.store.verdicts import record_verdict


def judge(store: Any, job: Job, output_dir: Path, key: str, verdict: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`record_verdict`, then the item's files follow its standing pick."""
    review = record_verdict(store, job, key, verdict, **kwargs)
    settle(store, job, output_dir, key, review.get("pick"))
    return review


def settle(store: Any, job: Job, output_dir: Path, key: str, pick: str | None) -> int:
    """Make the item's stable names hold its pick (or, without one, what its attempt made);
    returns how many names changed."""
    changed = 0
    for p in placements(store, job, key, pick):
        if p.keep is not None:
            kept = keep_version(output_dir, p.name, p.keep.revision, p.keep.sha256)
            if kept is None:
                raise OutputError(f"{output_dir / p.name} is not the image recorded for item {key!r}; not replacing it")
            record_versions(store, [(p.keep, kept)])
        restore_version(output_dir, p.source, p.name, p.sha256)
        changed += place_output(store, p)
    return changed


def settle_all(store: Any, job: Job, output_dir: Path, picks: dict[str, str | None]) -> int:
    """:func:`settle` for every judged item (``key -> pick``): a crash between a verdict and its
    files is finished here."""
    return sum(settle(store, job, output_dir, key, pick) for key, pick in picks.items())
