"""Refusing a plan whose output names are another job's outputs in the same database, and
finding the unrecorded outputs of this job that a run will adopt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from batchfuse.errors import InputError, ManifestError, ManifestProblems, printable
from batchfuse.outputs.names import PathProblem, item_names, same_file_key
from batchfuse.plan.manifest import load_manifest
from batchfuse.plan.path_claims import MAX_PROBLEMS, Owner
from batchfuse.plan.planner import Planner
from batchfuse.providers import provider_class
from batchfuse.records import ItemSpec, PlanSummary
from batchfuse.store.queries import Store, job_outputs


@dataclass(frozen=True)
class _OtherJob:
    root: Path
    template: str
    images_per_item: Callable[[dict[str, Any]], int]


def _other_job(manifest_path: str) -> _OtherJob | None:
    """Where another job writes, from its manifest as it is now (None if it is gone or broken)."""
    path = Path(manifest_path)
    try:
        m = load_manifest(path)
        provider = provider_class(m.provider.kind)
    except (InputError, KeyError, OSError):
        return None
    root = (path.parent.absolute() / m.output.dir).resolve()
    return _OtherJob(root, m.output.filename, provider.images_per_item)


def check_other_jobs(store: Store | None, planner: Planner) -> dict[str, str]:
    """Refuse the plan if a name it claims is a recorded output of another item of this job (a
    changed output.filename), or an output, recorded or planned, of another job in
    the database (a job whose manifest is this one, renamed, does not count), or an existing PNG
    that is not this job's recorded output and whose metadata names another job.

    Returns the items whose current spec already has an unrecorded PNG of this job on disk
    (item -> spec hash): a run adopts those instead of sending them (see :func:`with_adoptions`)."""
    claims = planner.claims
    if claims is None:
        return {}
    own = str(planner.manifest_path.resolve())
    job = planner.manifest.job
    others: dict[str, tuple[_OtherJob, Callable[[str], str | None]]] = {}

    def wanted(name: str, manifest_path: str) -> bool:
        if name == job:
            return True  # its recorded outputs: no other item may be given one of them
        other = _other_job(manifest_path) if manifest_path != own else None
        mapped = claims.relative(other.root) if other else None
        if other is None or mapped is None:
            return False
        others[name] = (other, mapped)
        return True

    planner.claims = None  # checked once; a large plan's names need not stay in memory
    problems: dict[str, ManifestError] = {}

    def add(owner: Owner, message: str) -> None:
        if owner[0] not in problems:
            problems[owner[0]] = ManifestError(planner.file, message, item=owner[0], field="output.filename")
        if len(problems) >= MAX_PROBLEMS:
            raise ManifestProblems(list(problems.values()))

    ours: set[str] = set()
    for found in job_outputs(store, job, wanted) if store is not None else ():
        if found.name == job:
            ours = {same_file_key(path) for _, path in found.recorded}
            for their_key, path in found.recorded:
                hit = claims.clash(same_file_key(path))
                if hit is not None and hit[0][0] != their_key:
                    add(hit[0], (
                        f"{hit[1]!r} is the recorded output of item {printable(their_key)} of this job; "
                        f"give output.filename a form that keeps item {printable(their_key)}'s name, "
                        "or use another output.dir"
                    ))
            continue
        other, mapped = others[found.name]
        names = list(found.recorded)
        for key, spec in found.specs:
            try:
                item = ItemSpec.from_json(spec)
                names += [(key, n) for n in item_names(other.template, item, other.images_per_item(item.params))]
            except (PathProblem, KeyError, TypeError):
                continue
        for their_key, name in names:
            rel = mapped(name)
            hit = claims.clash(rel) if rel is not None else None
            if hit is not None:
                add(hit[0], (
                    f"{hit[1]!r} of job {job!r} clashes with {other.root / name}, an output of item "
                    f"{printable(their_key)} of job {found.name!r} ({found.manifest_path}) in the same database; "
                    "give each job its own output.dir"
                ))
    for owner, message in claims.foreign(ours):
        add(owner, message)
    if problems:
        raise ManifestProblems(list(problems.values()))
    return claims.adoptable(ours)


def with_adoptions(summary: PlanSummary, found: dict[str, str], settled: dict[str, str], folder: Path | str) -> PlanSummary:
    """``summary`` with the number of items a run will adopt from ``found`` (see
    :func:`check_other_jobs`) in ``folder``: those not already settled (done or failed) with that spec."""
    adoptable = sum(1 for key, spec in found.items() if settled.get(key) != spec)
    return replace(summary, adoptable=adoptable, adopt_from=str(folder))
