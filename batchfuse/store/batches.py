"""The store's batch side: batches and their items, applied result lines, uploaded files.

A batch's items are held under the lease owner ``batch:<token>`` (the token ends the batch's
display name) with a lease that never runs out, so no runner claims them — online or for
another batch — until the batch has ended and its items are applied or handed back.
Everything here is one transaction per call; the order of calls is the batch layer's
(:mod:`batchfuse.batch`), which writes before it pays and adopts after a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, select, update

from batchfuse.records import ClaimedItem, ItemState, Job
from batchfuse.store.lite import BATCH_OWNER
from batchfuse.store.queries import Store
from batchfuse.store.schema import batch_items, batches, items, uploaded_files

#: The lease of an item in a batch: never expires (the batch hands it back when it ends).
FOREVER = 1e15
#: States of a batch row that may still hold items.
OPEN_STATES = ("preparing", "pending", "running", "succeeded")
CHUNK = 500


def owner_of(display_name: str) -> str:
    """The lease owner of a batch's items: ``batch:`` and the token that ends its display name."""
    return BATCH_OWNER + display_name.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class BatchRow:
    id: int
    display_name: str
    remote_name: str | None
    state: str
    input_file: str | None
    result_file: str | None
    request_count: int
    created_at: float
    submitted_at: float | None
    download_offset: int
    applied_offset: int

    @property
    def owner(self) -> str:
        return owner_of(self.display_name)


@dataclass(frozen=True)
class Member:
    """An item of a batch as a result line finds it."""

    item: ClaimedItem
    line_key: str
    attempt: int
    #: Still the batch's to apply: held by it, under the spec it was sent with, not yet applied.
    open: bool
    #: A line with this key was applied already.
    applied: bool = False


def _batch_row(r: Any) -> BatchRow:
    return BatchRow(r.id, r.display_name, r.remote_name, r.state, r.input_file, r.result_file, r.request_count,
                    r.created_at, r.submitted_at, r.download_offset or 0, r.applied_offset or 0)


class BatchQueries:
    """Batch queries over one :class:`~batchfuse.store.queries.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ submission

    def new_batch(
        self, job: Job, display_name: str, backend: str, model: str, runner_id: str,
        members: list[tuple[int, str, int, str]],
    ) -> int | None:
        """Record a batch about to be created and move its items (claimed by ``runner_id``) under
        its lease, in one transaction.  ``members``: (item id, line key, attempt, spec hash).
        Returns the batch id, or None when the runner no longer holds every item."""
        now, owner = time.time(), owner_of(display_name)
        ids = [m[0] for m in members]
        with self.store._write() as conn:
            moved = 0
            for i in range(0, len(ids), CHUNK):
                moved += conn.execute(
                    update(items)
                    .where(items.c.id.in_(ids[i : i + CHUNK]), items.c.lease_owner == runner_id)
                    .values(lease_owner=owner, lease_expires_at=FOREVER, state=ItemState.running.value, updated_at=now)
                ).rowcount
            if moved != len(ids):
                conn.rollback()
                return None
            batch_id = conn.execute(
                insert(batches).values(
                    job_id=job.id, display_name=display_name, backend=backend, model=model, state="preparing",
                    request_count=len(members), created_at=now, download_offset=0, applied_offset=0,
                    unknown_lines=0, duplicate_lines=0, runner_id=runner_id,
                )
            ).inserted_primary_key[0]
            conn.execute(insert(batch_items), [
                dict(batch_id=batch_id, item_id=i, line_key=k, attempt=a, spec_hash=h) for i, k, a, h in members
            ])
        return int(batch_id)

    def update(self, batch_id: int, **values: Any) -> None:
        with self.store._write() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(**values))

    def open_batches(self, job: Job) -> list[BatchRow]:
        """The job's batches that may still hold items, oldest first."""
        with self.store._read() as conn:
            rows = conn.execute(
                select(batches).where(batches.c.job_id == job.id, batches.c.state.in_(OPEN_STATES))
                .order_by(batches.c.id)
            ).all()
        return [_batch_row(r) for r in rows]

    def take(self, job: Job, runner_id: str) -> list[BatchRow]:
        """The job's open batches this runner may work on, taken over from runners that are gone:
        a batch another live runner is creating or applying is left to it (on PostgreSQL several
        runners share a job; one of them creates each batch, once)."""
        with self.store._write() as conn:
            rows = conn.execute(
                select(batches).where(batches.c.job_id == job.id, batches.c.state.in_(OPEN_STATES))
                .order_by(batches.c.id).with_for_update()
            ).all()
            others = {r.runner_id for r in rows if r.runner_id not in (None, runner_id)}
            live = self.store._live_runners(conn, job) if others else set()
            mine = [r for r in rows if r.runner_id in (None, runner_id) or r.runner_id not in live]
            ids = [r.id for r in mine if r.runner_id != runner_id]
            if ids:
                conn.execute(update(batches).where(batches.c.id.in_(ids)).values(runner_id=runner_id))
        return [_batch_row(r) for r in mine]

    def batch(self, batch_id: int) -> BatchRow:
        with self.store._read() as conn:
            return _batch_row(conn.execute(select(batches).where(batches.c.id == batch_id)).one())

    def member_items(self, batch_id: int) -> list[Member]:
        """Every item of a batch, in line order (to rebuild its input file)."""
        return list(self.members(batch_id, None).values())

    def members(self, batch_id: int, line_keys: list[str] | None) -> dict[str, Member]:
        """The batch's items under ``line_keys`` (all when None), with whether each is still open."""
        owner = None
        cond = batch_items.c.batch_id == batch_id
        if line_keys is not None:
            cond = and_(cond, batch_items.c.line_key.in_(line_keys))
        with self.store._read() as conn:
            owner = owner_of(conn.execute(select(batches.c.display_name).where(batches.c.id == batch_id)).scalar_one())
            rows = conn.execute(
                select(
                    items.c.id, items.c.key, items.c.ordinal, items.c.spec_hash, items.c.spec, items.c.attempts,
                    items.c.resume_token, items.c.lease_owner, batch_items.c.line_key, batch_items.c.attempt,
                    batch_items.c.spec_hash.label("sent_hash"), batch_items.c.applied_at,
                )
                .join(items, items.c.id == batch_items.c.item_id)
                .where(cond)
                .order_by(batch_items.c.id)
            ).all()
        return {
            r.line_key: Member(
                ClaimedItem.from_row(r), r.line_key, r.attempt,
                r.applied_at is None and r.lease_owner == owner and r.spec_hash == r.sent_hash,
                r.applied_at is not None,
            )
            for r in rows
        }

    def mark_applied(self, batch_id: int, outcomes: dict[str, str], applied_offset: int, unknown: int = 0,
                     duplicate: int = 0) -> None:
        """Result lines applied (line key -> outcome) and how far the file has been read."""
        now = time.time()
        with self.store._write() as conn:
            if outcomes:  # one statement for the group's lines
                conn.execute(
                    update(batch_items)
                    .where(batch_items.c.batch_id == batch_id, batch_items.c.line_key == bindparam("b_key"))
                    .values(outcome=bindparam("b_outcome"), applied_at=now),
                    [{"b_key": key, "b_outcome": outcome} for key, outcome in outcomes.items()],
                )
            conn.execute(
                update(batches).where(batches.c.id == batch_id).values(
                    applied_offset=applied_offset,
                    unknown_lines=batches.c.unknown_lines + unknown,
                    duplicate_lines=batches.c.duplicate_lines + duplicate,
                )
            )

    def hand_back(
        self, batch_id: int, state: str, reason: str, outcome: str = "returned", max_attempts: int | None = None
    ) -> int:
        """End a batch: items it still holds go back to pending with ``reason``, their allowance
        intact — unless ``max_attempts`` is given (a batch that FAILED): then the batch counts as
        an attempt, and an item out of attempts is failed.  Returns how many were handed back."""
        now = time.time()
        with self.store._write() as conn:
            name = conn.execute(select(batches.c.display_name).where(batches.c.id == batch_id)).scalar_one()
            held = select(batch_items.c.item_id).where(batch_items.c.batch_id == batch_id)
            mine = and_(items.c.id.in_(held), items.c.lease_owner == owner_of(name))
            values: dict[str, Any] = dict(lease_owner=None, lease_expires_at=None, error_class="batch",
                                          last_error=reason, updated_at=now)
            n = 0
            if max_attempts is not None:
                n += conn.execute(update(items).where(mine, items.c.attempts + 1 >= max_attempts).values(
                    **values, state=ItemState.failed.value, attempts=items.c.attempts + 1)).rowcount
                values["attempts"] = items.c.attempts + 1
            n += conn.execute(update(items).where(mine).values(**values, state=ItemState.pending.value)).rowcount
            conn.execute(
                update(batch_items)
                .where(batch_items.c.batch_id == batch_id, batch_items.c.applied_at.is_(None))
                .values(outcome=outcome, applied_at=now)
            )
            ended: dict[str, Any] = dict(state=state, applied_at=now)
            if state != "applied":
                ended["error"] = reason
            conn.execute(update(batches).where(batches.c.id == batch_id).values(**ended))
            conn.execute(update(batches).where(batches.c.id == batch_id, batches.c.ended_at.is_(None))
                         .values(ended_at=now))
        return n

    # ------------------------------------------------------------ reading

    def items_out(self, job: Job) -> int:
        """Items held by the job's batches (submitted, not yet returned)."""
        with self.store._read() as conn:
            return conn.execute(
                select(func.count()).where(
                    items.c.job_id == job.id, items.c.state == ItemState.running.value,
                    items.c.lease_owner.startswith(BATCH_OWNER),
                )
            ).scalar_one()

    def summary(self, job: Job, keys_per_batch: int = 20) -> list[dict[str, Any]]:
        """Each batch of the job, newest first, with its items' keys (the first few)."""
        with self.store._read() as conn:
            rows = conn.execute(select(batches).where(batches.c.job_id == job.id).order_by(batches.c.id.desc())).all()
            result = []
            for r in rows:
                keys = conn.execute(
                    select(items.c.key).join(batch_items, batch_items.c.item_id == items.c.id)
                    .where(batch_items.c.batch_id == r.id).order_by(batch_items.c.id).limit(keys_per_batch)
                ).scalars().all()
                outcomes = dict(conn.execute(
                    select(batch_items.c.outcome, func.count()).where(batch_items.c.batch_id == r.id)
                    .group_by(batch_items.c.outcome)
                ).all())
                result.append(dict(
                    name=r.display_name, remote_name=r.remote_name, state=r.state, requests=r.request_count,
                    succeeded=r.succeeded_count, failed=r.failed_count, created_at=r.created_at,
                    submitted_at=r.submitted_at, ended_at=r.ended_at, applied_at=r.applied_at,
                    unknown_lines=r.unknown_lines, duplicate_lines=r.duplicate_lines, error=r.error,
                    outcomes={str(k): v for k, v in outcomes.items()}, items=list(keys),
                ))
        return result

    # ------------------------------------------------------------ uploaded files

    def uploaded(self, endpoint: str, digest: str, valid_until: float) -> dict[str, Any] | None:
        """A file uploaded earlier for ``digest`` that lives past ``valid_until``."""
        with self.store._read() as conn:
            r = conn.execute(
                select(uploaded_files).where(uploaded_files.c.endpoint == endpoint, uploaded_files.c.digest == digest)
            ).first()
        if r is None or (r.expires_at is not None and r.expires_at <= valid_until):
            return None
        return dict(name=r.remote_name, uri=r.uri, mime=r.mime, size=r.bytes, expires_at=r.expires_at)

    def put_uploaded(self, endpoint: str, digest: str, name: str, uri: str, mime: str, size: int,
                     expires_at: float | None) -> None:
        with self.store._write() as conn:
            conn.execute(delete(uploaded_files).where(
                uploaded_files.c.endpoint == endpoint, uploaded_files.c.digest == digest))
            conn.execute(insert(uploaded_files).values(
                endpoint=endpoint, digest=digest, remote_name=name, uri=uri, mime=mime, bytes=size,
                uploaded_at=time.time(), expires_at=expires_at))

    def upload_count(self, endpoint: str) -> int:
        with self.store._read() as conn:
            return conn.execute(
                select(func.count()).where(uploaded_files.c.endpoint == endpoint)
            ).scalar_one()
