"""Bringing the items table in line with a manifest's plan (a mixin of the store)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from batchfuse.records import ItemState, Job, PlannedRow, PlanSummary
from batchfuse.store.schema import items, jobs

PLAN_BATCH = 1000


def _spec_json(row: PlannedRow) -> str:
    return json.dumps(row.spec.to_json(), sort_keys=True, ensure_ascii=False)


def _unchanged_category(state: str, attempts_used: int) -> str:
    """Where an item whose spec did not change stands in the plan summary."""
    if state == ItemState.succeeded.value:
        return "unchanged_done"
    if state == ItemState.failed.value:
        return "failed"
    return "to_retry" if attempts_used > 0 else "to_run"


def _update_by_id(rows: list[dict[str, Any]]) -> Any:
    """An executemany UPDATE of the columns the rows carry, by ``b_id``."""
    return update(items).where(items.c.id == bindparam("b_id")).values(
        **{k: bindparam(k) for k in rows[0] if k != "b_id"}
    )



class StorePlanSync:
    """:meth:`sync_plan`. Expects ``_write()`` and ``_lock_job()`` from the store."""

    def _write(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _lock_job(self, conn: Connection, name: str) -> None:
        raise NotImplementedError

    def sync_plan(
        self, job: Job, planned: Iterable[PlannedRow], max_attempts: int, *, dry_run: bool = False,
        digest: Mapping[str, tuple[Any, ...]] | None = None,
    ) -> PlanSummary:
        """Bring the items table in line with the manifest's plan.

        New keys are added as pending; a key whose spec hash changed is reset to pending with a
        fresh attempt allowance (its old outputs stay on record until replaced); keys no longer
        in the manifest are marked ``in_plan = false`` and left alone.  With ``dry_run`` nothing
        is written and the summary says what would happen.

        With the plan's ``digest`` (key -> spec hash, ordinal, ...: :attr:`Planner.digest`) the
        comparison needs no rows; ``planned`` is then read only for the new and changed keys,
        and not at all on a resume of an unchanged plan.
        """
        with self._write() as conn:
            if not dry_run:
                self._lock_job(conn, job.name)
            existing: dict[str, Any] = {
                r.key: r
                for r in conn.execute(
                    select(
                        items.c.key, items.c.id, items.c.spec_hash, items.c.state, items.c.attempts,
                        items.c.ordinal, items.c.in_plan,
                    ).where(items.c.job_id == job.id)
                )
            }
            now = time.time()
            counts = dict(new=0, changed=0, unchanged_done=0, to_run=0, to_retry=0, failed=0)
            new_rows: list[dict[str, Any]] = []
            changed_rows: list[dict[str, Any]] = []
            moved_rows: list[dict[str, Any]] = []
            #: new (None) and changed (old id) keys whose rows are written from ``planned``
            fresh: dict[str, int | None] = {}

            def flush(final: bool = False) -> None:
                for batch in (new_rows, changed_rows, moved_rows):
                    if batch and (final or len(batch) >= PLAN_BATCH):
                        conn.execute(insert(items) if batch is new_rows else _update_by_id(batch), batch)
                        batch.clear()

            def write(row: PlannedRow, old_id: int | None) -> None:
                if old_id is None:
                    new_rows.append(dict(
                        job_id=job.id, key=row.key, ordinal=row.ordinal, spec_hash=row.spec_hash,
                        spec=_spec_json(row), state=ItemState.pending.value, attempts=0, in_plan=True, updated_at=now,
                    ))
                else:
                    changed_rows.append(dict(
                        b_id=old_id, ordinal=row.ordinal, spec_hash=row.spec_hash, spec=_spec_json(row),
                        state=ItemState.pending.value, attempts=0, in_plan=True, error_class=None,
                        last_error=None, resume_token=None, updated_at=now,
                    ))

            briefs = ((k, h, o, None) for k, (h, o, *_) in digest.items()) if digest is not None else (
                (row.key, row.spec_hash, row.ordinal, row) for row in planned)
            for key, spec_hash, ordinal, row in briefs:
                old = existing.pop(key, None)  # what is left at the end was removed
                if old is None or old.spec_hash != spec_hash:
                    counts["new" if old is None else "changed"] += 1
                    if dry_run:
                        continue
                    if row is None:
                        fresh[key] = None if old is None else old.id
                    else:
                        write(row, None if old is None else old.id)
                else:
                    counts[_unchanged_category(old.state, old.attempts)] += 1
                    if not dry_run and (old.ordinal != ordinal or not old.in_plan):
                        moved_rows.append(dict(b_id=old.id, ordinal=ordinal, in_plan=True))
                flush()
            for row in planned if fresh else ():
                if row.key in fresh:
                    write(row, fresh[row.key])
                    flush()
            removed = sorted(k for k, old in existing.items() if old.in_plan)
            if dry_run:
                conn.rollback()
            else:
                flush(final=True)
                ids = [existing[k].id for k in removed]
                for i in range(0, len(ids), PLAN_BATCH):
                    conn.execute(update(items).where(items.c.id.in_(ids[i : i + PLAN_BATCH])).values(in_plan=False))
                conn.execute(update(jobs).where(jobs.c.id == job.id).values(planned_at=now))
        return PlanSummary(
            **counts,
            removed=len(removed),
            removed_keys=tuple(removed[:20]),
        )
