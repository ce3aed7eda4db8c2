"""The read side of the store: what ``status``, ``report`` and ``export`` show.

Part of :class:`~batchfuse.store.queries.Store` (a mixin): every query still lives in the
store package, and these never write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, func, select

from batchfuse.records import ItemState, Job
from batchfuse.store.lite import BATCH_OWNER, live_runner_ids, shown, status_of
from batchfuse.store.schema import attempts, items, outputs, runs

PAGE = 1000


def tokens_by_item(conn: Connection, ids: list[int]) -> dict[int, int]:
    """Tokens of all attempts, per item of ``ids`` (a page of the export, report or review)."""
    return dict(
        conn.execute(
            select(attempts.c.item_id, func.coalesce(func.sum(attempts.c.total_tokens), 0))
            .where(attempts.c.item_id.in_(ids))
            .group_by(attempts.c.item_id)
        ).all()
    )


class StoreReads:
    """Queries that only read. Expects ``_read()`` from the store."""

    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def counts(self, job: Job) -> dict[str, int]:
        """Items in the plan by state, plus ``total``."""
        with self._read() as conn:
            rows = conn.execute(
                select(items.c.state, func.count())
                .where(items.c.job_id == job.id, items.c.in_plan)
                .group_by(items.c.state)
            ).all()
        result = {s.value: 0 for s in ItemState}
        for state, n in rows:
            result[state] = n
        result["total"] = sum(result.values())
        return result

    def _live_runners(self, conn: Connection, job: Job) -> set[str]:
        """The ids of the job's runners that are alive (an item claimed by any other is orphaned)."""
        open_runs = conn.execute(
            select(runs.c.runner_id, runs.c.host, runs.c.pid, runs.c.heartbeat_at).where(
                runs.c.job_id == job.id, runs.c.ended_at.is_(None)
            )
        ).all()
        return live_runner_ids(open_runs, time.time())

    def _in_flight(self, conn: Connection, job: Job) -> dict[str, int]:
        """How many of the job's items each runner holds (state ``running``)."""
        return dict(
            conn.execute(
                select(items.c.lease_owner, func.count())
                .where(items.c.job_id == job.id, items.c.in_plan, items.c.state == ItemState.running.value)
                .group_by(items.c.lease_owner)
            ).all()
        )

    def shown_counts(self, job: Job) -> dict[str, int]:
        """:meth:`counts` as status, report and export show them: ``running`` only for items a
        live runner holds; those claimed by a runner that is gone are ``orphaned`` (they run next time)."""
        counts = self.counts(job)
        with self._read() as conn:
            in_flight = self._in_flight(conn, job)
            return shown(counts, in_flight, self._live_runners(conn, job) if in_flight else set())

    def status(self, job: Job) -> dict[str, Any]:
        """Everything ``batchfuse status`` shows but the batches (the queries: :func:`lite.status_of`)."""
        with self._read() as conn:
            return status_of(lambda sql: conn.exec_driver_sql(sql).all(), job.id, job.name)

    def runnable_keys(self, job: Job, max_attempts: int) -> list[str]:
        """Keys a run would claim, in plan order."""
        with self._read() as conn:
            return list(
                conn.execute(
                    select(items.c.key)
                    .where(
                        items.c.job_id == job.id,
                        items.c.in_plan,
                        items.c.attempts < max_attempts,
                        items.c.state.in_([ItemState.pending.value, ItemState.running.value]),
                    )
                    .order_by(items.c.ordinal)
                ).scalars()
            )

    def settled(self, job: Job) -> dict[str, str]:
        """Key -> spec hash of items that are done or failed (a run skips them)."""
        with self._read() as conn:
            return dict(
                conn.execute(
                    select(items.c.key, items.c.spec_hash).where(
                        items.c.job_id == job.id,
                        items.c.state.in_([ItemState.succeeded.value, ItemState.failed.value]),
                    )
                ).all()
            )

    def thoughts_per_request(self, job: Job) -> float | None:
        """Thinking tokens per reply that reported them, on average over the job (None: none did)."""
        with self._read() as conn:
            value = conn.execute(
                select(func.avg(attempts.c.thoughts_tokens))
                .select_from(attempts.join(items, items.c.id == attempts.c.item_id))
                .where(items.c.job_id == job.id, attempts.c.thoughts_tokens.is_not(None))
            ).scalar()
        return None if value is None else float(value)

    def item_rows(self, job: Job) -> Iterator[dict[str, Any]]:
        """Every item in the plan with its outputs, a page at a time (for export and reports); an
        item claimed by a runner that is gone is in the state ``orphaned``, as in :meth:`shown_counts`."""
        with self._read() as conn:
            live = self._live_runners(conn, job)
        last = -1
        while True:
            with self._read() as conn:
                page = conn.execute(
                    select(items)
                    .where(items.c.job_id == job.id, items.c.in_plan, items.c.ordinal > last)
                    .order_by(items.c.ordinal)
                    .limit(PAGE)
                ).all()
                if not page:
                    return
                ids = [r.id for r in page]
                outs: dict[int, list[Any]] = {}
                for o in conn.execute(
                    select(outputs).where(outputs.c.item_id.in_(ids)).order_by(outputs.c.item_id, outputs.c.idx)
                ):
                    outs.setdefault(o.item_id, []).append(o)
                tokens = tokens_by_item(conn, ids)
            for r in page:
                yield {
                    "key": r.key,
                    "state": _shown_state(r.state, r.lease_owner, live),
                    "attempts": r.attempts,
                    "spec": json.loads(r.spec),
                    "error_class": r.error_class,
                    "last_error": r.last_error,
                    "tokens": int(tokens.get(r.id, 0)),
                    "outputs": [
                        {"path": o.path, "sha256": o.sha256, "width": o.width, "height": o.height}
                        for o in outs.get(r.id, [])
                    ],
                }
            last = page[-1].ordinal


def _shown_state(state: str, owner: str | None, live: set[str]) -> str:
    """An item's state as shown: ``in_batch`` when a batch holds it, ``orphaned`` when a runner
    that is gone does."""
    if state != ItemState.running.value:
        return state
    if owner and owner.startswith(BATCH_OWNER):
        return "in_batch"
    return "orphaned" if owner not in live else state
