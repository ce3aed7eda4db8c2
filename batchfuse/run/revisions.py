"""Where the review meets the plan: revisions applied to the planned rows, earlier outputs kept.

The planner knows nothing of the store; the run composes the two here.  A planned row whose
manifest spec hash is the one an item's revision was made from becomes that revision (the
spec plus the added prompt lines and seed salt, with its own hash); any other row passes as it
is, so an edited manifest still wins.  After planning, the outputs of every item whose spec
changed are kept as versions before anything is sent (:mod:`batchfuse.outputs.versions`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from batchfuse.outputs.versions import keep_version
from batchfuse.records import ItemSpec, Job, PlannedRow
from batchfuse.store.output_versions import record_versions, superseded_outputs
from batchfuse.store.queries import Store
from batchfuse.store.verdicts import Revision, revise_spec, revised_hash


def revised_rows(rows: Iterator[PlannedRow], revisions: dict[str, Revision]) -> Iterator[PlannedRow]:
    """``rows`` with each item's revision applied where it was made from the row's spec."""
    for row in rows:
        rev = revisions.get(row.key)
        if rev is None or rev.base_hash != row.spec_hash:
            yield row
            continue
        spec = ItemSpec.from_json(revise_spec(row.spec.to_json(), rev))
        yield replace(row, spec=spec, spec_hash=revised_hash(rev))


def revised_digest(
    digest: Mapping[str, tuple[Any, ...]] | None, revisions: dict[str, Revision]
) -> Mapping[str, tuple[Any, ...]] | None:
    """The plan in brief (:attr:`Planner.digest`) with the same revisions as :func:`revised_rows`,
    so that comparing it with the store sees a revised item as unchanged, not as a manifest edit."""
    if digest is None or not revisions:
        return digest
    out = dict(digest)
    for key, rev in revisions.items():
        brief = out.get(key)
        if brief is not None and brief[0] == rev.base_hash:
            out[key] = (revised_hash(rev), *brief[1:])
    return out


def keep_superseded(store: Store, job: Job, output_dir: Path) -> int:
    """Keep (link into the versions folder, and record) every output made under an earlier spec."""
    found = superseded_outputs(store, job)
    kept = [(s, keep_version(output_dir, s.name, s.revision, s.sha256)) for s in found]
    return record_versions(store, kept)


def settled_as_planned(settled: dict[str, str], revisions: dict[str, Revision]) -> dict[str, str]:
    """``settled`` (key -> spec hash of done or failed items) as the planner's hashes see it, for
    the estimate: an item done under its current revision counts as done, one whose reject still
    waits for a run does not."""
    out = dict(settled)
    for key, rev in revisions.items():
        if key not in out:
            continue
        if out[key] == revised_hash(rev):
            out[key] = rev.base_hash
        elif out[key] == rev.base_hash:
            del out[key]
    return out
