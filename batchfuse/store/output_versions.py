"""Kept versions in the store: outputs made under a spec the item no longer has, and their records.

A run finds them after planning (:func:`superseded_outputs`), links their files into the versions
folder (:mod:`batchfuse.outputs.versions`) and records them here (:func:`record_versions`) before
anything is sent, so regenerating never loses an earlier image or what is known about it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, update

from batchfuse.errors import OutputError
from batchfuse.records import Job
from batchfuse.store.schema import attempts, conflict_insert, items, output_versions, outputs, reviews


@dataclass(frozen=True)
class Superseded:
    """A recorded output made under a spec the item no longer has: to be kept as a version."""

    item_id: int
    key: str
    spec_hash: str
    revision: int
    idx: int
    name: str
    sha256: str
    width: int
    height: int
    bytes: int
    made_at: float


def superseded_outputs(store: Any, job: Job) -> list[Superseded]:
    """Outputs whose attempt's spec is not the item's spec any more and that are not kept yet."""
    with store._read() as conn:
        rows = conn.execute(
            select(
                items.c.id, items.c.key, attempts.c.spec_hash, outputs.c.idx, outputs.c.path, outputs.c.sha256,
                outputs.c.width, outputs.c.height, outputs.c.bytes, outputs.c.created_at,
            )
            .select_from(
                outputs.join(items, outputs.c.item_id == items.c.id).join(attempts, outputs.c.attempt_id == attempts.c.id)
            )
            .outerjoin(
                output_versions,
                and_(
                    output_versions.c.item_id == items.c.id,
                    output_versions.c.spec_hash == attempts.c.spec_hash,
                    output_versions.c.idx == outputs.c.idx,
                ),
            )
            .where(items.c.job_id == job.id, attempts.c.spec_hash != items.c.spec_hash, output_versions.c.id.is_(None))
        ).all()
        counts = dict(
            conn.execute(
                select(output_versions.c.item_id, func.count(func.distinct(output_versions.c.spec_hash)))
                .where(output_versions.c.item_id.in_({r.id for r in rows} or {0}))
                .group_by(output_versions.c.item_id)
            ).all()
        )
    numbers: dict[tuple[int, str], int] = {}  # (item, spec) -> its version number, 1, 2, ... per item
    next_n = dict(counts)
    found = []
    for r in sorted(rows, key=lambda r: (r.id, r.created_at, r.idx)):
        if (r.id, r.spec_hash) not in numbers:
            next_n[r.id] = next_n.get(r.id, 0) + 1
            numbers[(r.id, r.spec_hash)] = next_n[r.id]
        found.append(Superseded(r.id, r.key, r.spec_hash, numbers[(r.id, r.spec_hash)], r.idx, r.path, r.sha256,
                                r.width, r.height, r.bytes, r.created_at))
    return found


def record_versions(store: Any, kept: Iterable[tuple[Superseded, str | None]]) -> int:
    """Record kept versions (each with its path in the versions folder, None if its file was gone)."""
    now = time.time()
    rows = [
        dict(item_id=s.item_id, spec_hash=s.spec_hash, revision=s.revision, idx=s.idx, name=s.name, path=path,
             sha256=s.sha256, width=s.width, height=s.height, bytes=s.bytes, made_at=s.made_at, kept_at=now)
        for s, path in kept
    ]
    if rows:
        with store._write() as conn:
            # runners sharing a job (PostgreSQL) may keep the same version at once: the first wins
            conn.execute(conflict_insert(conn, output_versions).on_conflict_do_nothing(), rows)
    return len(rows)


# ---------------------------------------------------------------- picks


@dataclass(frozen=True)
class Placement:
    """One stable name whose file must change to follow the item's pick (or its undo): the file
    now holds ``current_sha``; ``keep`` (the attempt's own image, not kept yet) is kept first,
    then the kept version at ``source`` is copied over ``name`` and the output row follows."""

    output_id: int
    name: str
    current_sha: str
    keep: Superseded | None
    source: str
    sha256: str
    width: int
    height: int
    bytes: int


def placements(store: Any, job: Job, key: str, pick: str | None) -> list[Placement]:
    """What must move so that each of the item's stable names holds its target image: the picked
    kept version (``pick``, a versions-folder path) under the name it was made as, every other name
    the image its own attempt made.  Empty when the files already agree."""
    with store._read() as conn:
        item = conn.execute(select(items.c.id).where(items.c.job_id == job.id, items.c.key == key)).first()
        if item is None:
            return []
        current = conn.execute(
            select(outputs, attempts.c.spec_hash.label("made_spec"))
            .join_from(outputs, attempts, outputs.c.attempt_id == attempts.c.id)
            .where(outputs.c.item_id == item.id)
        ).all()
        kept = conn.execute(select(output_versions).where(output_versions.c.item_id == item.id)).all()
    by_spec = {(v.spec_hash, v.idx): v for v in kept}
    picked = next((v for v in kept if pick is not None and v.path == pick), None)
    number = len({v.spec_hash for v in kept}) + 1
    out = []
    for o in current:
        original = by_spec.get((o.made_spec, o.idx))
        target = picked if picked is not None and picked.name == o.path else original
        if target is None or target.path is None or target.sha256 == o.sha256:
            continue
        keep = None
        if original is None:  # the file is its attempt's own image: kept before it is displaced
            keep = Superseded(item.id, key, o.made_spec, number, o.idx, o.path, o.sha256, o.width, o.height,
                              o.bytes, o.created_at)
        elif not any(v.sha256 == o.sha256 and v.path for v in kept):
            raise OutputError(f"item {key!r}: the image at {o.path} is not kept anywhere; not replacing it")
        out.append(Placement(o.id, o.path, o.sha256, keep, target.path, target.sha256, target.width,
                             target.height, target.bytes))
    return out


def place_output(store: Any, placement: Placement) -> bool:
    """Record that the output row's file now holds the placement's image (only if it still records
    the image that was displaced: a run that wrote meanwhile wins)."""
    p = placement
    with store._write() as conn:
        done = conn.execute(
            update(outputs)
            .where(outputs.c.id == p.output_id, outputs.c.sha256 == p.current_sha)
            .values(sha256=p.sha256, width=p.width, height=p.height, bytes=p.bytes)
        ).rowcount == 1
        # the review page's live update notices the change (its marker follows reviews.updated_at)
        item_id = select(outputs.c.item_id).where(outputs.c.id == p.output_id).scalar_subquery()
        conn.execute(update(reviews).where(reviews.c.item_id == item_id).values(updated_at=time.time()))
    return done
