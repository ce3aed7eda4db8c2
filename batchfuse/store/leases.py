"""The store's runner side: heartbeats, claims under a lease, lease checks and hand-backs,
the live-runner count that sets each runner's share, and the spool of paid results.

Part of :class:`~batchfuse.store.queries.Store` (a mixin), like the read side.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager

from sqlalchemy import Connection, and_, exists, func, or_, select, update

from batchfuse.records import ClaimedItem, ItemState, Job, SpooledImage
from batchfuse.store.lite import BATCH_OWNER, STALE_RUNNER_S
from batchfuse.store.reads import StoreReads
from batchfuse.store.schema import items, jobs, runs, spool


class StoreLeases(StoreReads):
    """Runs, claims and leases. Expects ``_write()`` and ``_read()`` from the store."""

    def _write(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    @staticmethod
    def _release_leases(conn: Connection, runner_id: str) -> int:
        return conn.execute(
            update(items)
            .where(items.c.lease_owner == runner_id, items.c.state == ItemState.running.value)
            .values(state=ItemState.pending.value, lease_owner=None, lease_expires_at=None)
        ).rowcount

    def heartbeat(self, run_id: int, runner_id: str, lease_s: float) -> None:
        """Prove this runner is alive and extend the leases on its in-flight items."""
        now = time.time()
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(heartbeat_at=now))
            conn.execute(
                update(items)
                .where(items.c.lease_owner == runner_id, items.c.state == ItemState.running.value)
                .values(lease_expires_at=now + lease_s)
            )

    def claim(
        self,
        job: Job,
        runner_id: str,
        limit: int,
        lease_s: float,
        max_attempts: int,
        after_ordinal: int = -1,
        only_keys: list[str] | None = None,
    ) -> list[ClaimedItem]:
        """Lease up to ``limit`` runnable items, in plan order, after ``after_ordinal``.

        Runnable: in the plan, with attempts left, and pending or running under an expired
        lease (its runner died).  On PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED``
        so concurrent runners never claim the same item.
        """
        now = time.time()
        cond = and_(
            items.c.job_id == job.id,
            items.c.in_plan,
            items.c.attempts < max_attempts,
            items.c.ordinal > after_ordinal,
            or_(
                items.c.state == ItemState.pending.value,
                and_(items.c.state == ItemState.running.value, items.c.lease_expires_at < now),
            ),
        )
        if only_keys is not None:
            cond = and_(cond, items.c.key.in_(only_keys))
        with self._write() as conn:
            rows = conn.execute(
                select(
                    items.c.id,
                    items.c.key,
                    items.c.ordinal,
                    items.c.spec_hash,
                    items.c.spec,
                    items.c.attempts,
                    items.c.resume_token,
                    exists()
                    .where(spool.c.item_id == items.c.id, spool.c.spec_hash == items.c.spec_hash)
                    .label("spooled"),
                )
                .where(cond)
                .order_by(items.c.ordinal)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if rows:
                conn.execute(
                    update(items)
                    .where(items.c.id.in_([r.id for r in rows]))
                    .values(
                        state=ItemState.running.value,
                        lease_owner=runner_id,
                        lease_expires_at=now + lease_s,
                        updated_at=now,
                    )
                )
        return [ClaimedItem.from_row(r) for r in rows]

    def held_specs(self, item_ids: list[int], runner_id: str, lease_s: float, *, extend: bool) -> dict[int, str]:
        """The items of ``item_ids`` this runner still holds, with their current spec hash.

        Called before a group's outputs take their final names: a runner that stalled past its
        lease (and whose item another runner took over) never overwrites that runner's outputs,
        and a result made from a spec the item no longer has is not written.  With ``extend``
        (runners sharing the job) the leases are extended in the same statement.
        """
        if not extend:
            with self._read() as conn:
                rows = conn.execute(
                    select(items.c.id, items.c.spec_hash).where(
                        items.c.id.in_(item_ids), items.c.lease_owner == runner_id
                    )
                ).all()
            return {r.id: r.spec_hash for r in rows}
        with self._write() as conn:
            rows = conn.execute(
                update(items)
                .where(items.c.id.in_(item_ids), items.c.lease_owner == runner_id)
                .values(lease_expires_at=time.time() + lease_s)
                .returning(items.c.id, items.c.spec_hash)
            ).all()
        return {r.id: r.spec_hash for r in rows}

    def live_runners(self, job: Job, stale_s: float = STALE_RUNNER_S) -> int:
        """How many runners of ``job`` are alive: open runs with a heartbeat in ``stale_s``."""
        with self._read() as conn:
            return conn.execute(
                select(func.count()).where(
                    runs.c.job_id == job.id,
                    runs.c.ended_at.is_(None),
                    runs.c.heartbeat_at > time.time() - stale_s,
                )
            ).scalar_one()

    def held_by_others(self, job: Job, runner_id: str) -> int:
        """Items other runners hold leases on (they come back if those runners die)."""
        with self._read() as conn:
            return conn.execute(
                select(func.count()).where(
                    items.c.job_id == job.id,
                    items.c.state == ItemState.running.value,
                    items.c.lease_owner != runner_id,
                    ~items.c.lease_owner.startswith(BATCH_OWNER),  # a batch's items come back when it ends
                )
            ).scalar_one()

    def output_token(self, job: Job, *, create: bool) -> str | None:
        """The job's output-folder token; with ``create``, made if the job has none yet.

        Runners starting together all get the same token: only the first write of one lands
        (``WHERE output_token IS NULL``), and each then reads the one that landed."""
        if create:
            with self._write() as conn:
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job.id, jobs.c.output_token.is_(None))
                    .values(output_token=os.urandom(16).hex())
                )
        with self._read() as conn:
            return conn.execute(select(jobs.c.output_token).where(jobs.c.id == job.id)).scalar_one()

    def release(self, runner_id: str, item_ids: list[int]) -> None:
        """Hand claimed but unsent items back (the run is stopping)."""
        if not item_ids:
            return
        with self._write() as conn:
            conn.execute(
                update(items)
                .where(items.c.id.in_(item_ids), items.c.lease_owner == runner_id)
                .values(state=ItemState.pending.value, lease_owner=None, lease_expires_at=None)
            )

    def spooled(self, item_id: int, spec_hash: str) -> list[SpooledImage]:
        """The spooled images of ``item_id``'s current spec, in reply order."""
        with self._read() as conn:
            rows = conn.execute(
                select(spool.c.idx, spool.c.data, spool.c.source_url, spool.c.source_at)
                .where(spool.c.item_id == item_id, spool.c.spec_hash == spec_hash)
                .order_by(spool.c.attempt_id.desc(), spool.c.idx)
            ).all()
        latest: dict[int, SpooledImage] = {}
        for r in rows:  # the newest spooled attempt's images only
            latest.setdefault(r.idx, SpooledImage(r.idx, bytes(r.data), r.source_url, r.source_at))
        return [latest[i] for i in sorted(latest)]
