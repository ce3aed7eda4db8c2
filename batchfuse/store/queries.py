"""The store: jobs, planning, runs and recording (claims and leases in ``leases.py``, reads in ``reads.py``).

The methods are synchronous and short; the scheduler calls them from one worker thread so
the event loop never waits on the database.  Each public method is one transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    insert,
    select,
    text,
    update,
)

from batchfuse import faultpoints
from batchfuse.errors import EmptyDatabase, InputError, JobLockedError
from batchfuse.records import (
    NO_REQUEST_OUTCOMES,
    AttemptOutcome,
    AttemptRecord,
    ItemState,
    Job,
)
from batchfuse.store.engine import (
    SCHEMA_HEAD,
    create_store_engine,
    describe_url,
    known_revision,
    translated,
    upgrade,
)
from batchfuse.store.leases import StoreLeases
from batchfuse.store.lite import runner_alive
from batchfuse.store.plan_sync import StorePlanSync
from batchfuse.store.schema import attempts, items, jobs, outputs, runs, spool

#: One executemany UPDATE for every item a group of attempts finished with.
_ITEM_AFTER_ATTEMPT = (
    update(items)
    .where(items.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        attempts=items.c.attempts + bindparam("b_inc"),
        lease_owner=bindparam("b_owner"),
        lease_expires_at=bindparam("b_expires"),
        error_class=bindparam("b_error_class"),
        last_error=bindparam("b_last_error"),
        resume_token=bindparam("b_resume"),
        updated_at=bindparam("b_now"),
    )
)


def _item_row(rec: AttemptRecord, runner_id: str, now: float, lease_s: float) -> dict[str, Any]:
    waiting = rec.item_state == ItemState.running  # waiting for a retry: keep the lease
    done = rec.item_state == ItemState.succeeded
    return dict(
        b_id=rec.item_id,
        b_state=rec.item_state.value,
        b_inc=1 if rec.counts else 0,
        b_owner=runner_id if waiting else None,
        b_expires=now + lease_s if waiting else None,
        b_error_class=None if done else rec.error_class,
        b_last_error=None if done else rec.error_message,
        b_resume=json.dumps(rec.resume) if rec.resume else None,
        b_now=now,
    )


def _attempt_row(rec: AttemptRecord, run_id: int, dropped: AttemptOutcome | None) -> dict[str, Any]:
    return dict(
        item_id=rec.item_id,
        run_id=run_id,
        number=rec.number,
        spec_hash=rec.spec_hash,
        started_at=rec.started_at,
        ended_at=rec.ended_at,
        outcome=AttemptOutcome(dropped or rec.outcome).value,
        http_status=rec.http_status,
        error_class=rec.error_class,
        error_message=rec.error_message,
        latency_ms=rec.latency_ms,
        prompt_tokens=rec.prompt_tokens,
        output_tokens=rec.output_tokens,
        total_tokens=rec.total_tokens,
        thoughts_tokens=rec.thoughts_tokens,
        finish_reason=rec.finish_reason,
        block_reason=rec.block_reason,
        text=rec.text,
    )



class Store(StorePlanSync, StoreLeases):
    """The job database. Open with :meth:`open`; close with :meth:`close`.

    The write side (jobs, planning, runs, recording) is here; claims and leases are in
    :class:`~batchfuse.store.leases.StoreLeases`, what ``status``, ``report`` and ``export``
    read in :class:`~batchfuse.store.reads.StoreReads`."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.is_sqlite = engine.dialect.name == "sqlite"

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Open the database at ``url``, creating or upgrading its schema as needed.

        Readers (``status``, ``report``, ``export``) pass ``migrate=False``: they never write,
        and a database without the current schema is an :class:`InputError` for them.
        """
        engine = create_store_engine(url, readonly=not migrate)
        try:
            with translated(url):
                if migrate:
                    upgrade(engine, url)
                else:
                    revision = known_revision(engine, url)
                    if revision is None:
                        raise EmptyDatabase(f"no job has run against {describe_url(url)} yet")
                    if revision != SCHEMA_HEAD:
                        raise InputError(
                            f"{describe_url(url)} has an older schema ({revision}); "
                            "run a job or `batchfuse db upgrade` to upgrade it"
                        )
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, url)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with translated(self.url), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translated(self.url), self.engine.connect().execution_options(readonly=True) as conn, conn.begin():
            yield conn

    # ---------------------------------------------------------------- jobs

    def find_job(self, name: str) -> Job | None:
        with self._read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.name == name)).first()
        return Job(row.id, row.name, row.provider, row.model, row.manifest_path) if row else None

    def _lock_job(self, conn: Connection, name: str) -> None:
        """On PostgreSQL, serialize planning of one job across runners (held to commit)."""
        if self.engine.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def ensure_job(self, name: str, provider: str, model: str, manifest_path: str) -> Job:
        with self._write() as conn:
            self._lock_job(conn, name)
            return self._ensure_job(conn, name, provider, model, manifest_path)

    @staticmethod
    def _ensure_job(conn: Connection, name: str, provider: str, model: str, manifest_path: str) -> Job:
        row = conn.execute(select(jobs).where(jobs.c.name == name)).first()
        if row is None:
            job_id = conn.execute(
                insert(jobs).values(
                    name=name,
                    provider=provider,
                    model=model,
                    manifest_path=manifest_path,
                    created_at=time.time(),
                )
            ).inserted_primary_key[0]
        elif (row.provider, row.model, row.manifest_path) != (provider, model, manifest_path):
            job_id = row.id
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(provider=provider, model=model, manifest_path=manifest_path)
            )
        else:
            job_id = row.id
        return Job(job_id, name, provider, model, manifest_path)

    # ---------------------------------------------------------------- planning

    def retry_failed(self, job: Job) -> int:
        """Give failed items a fresh attempt allowance; returns how many."""
        with self._write() as conn:
            return conn.execute(
                update(items)
                .where(items.c.job_id == job.id, items.c.state == ItemState.failed.value, items.c.in_plan)
                .values(state=ItemState.pending.value, attempts=0, updated_at=time.time())
            ).rowcount

    # ---------------------------------------------------------------- runs and leases

    def start_run(self, job: Job, *, exclusive: bool) -> tuple[int, str]:
        """Register a runner for ``job``; returns (run id, runner id).  See :meth:`open_run`."""
        _, run_id, runner_id = self.open_run(job.name, job.provider, job.model, job.manifest_path, exclusive=exclusive)
        return run_id, runner_id

    def open_run(
        self, name: str, provider: str, model: str, manifest_path: str, *, exclusive: bool
    ) -> tuple[Job, int, str]:
        """Take the job (creating it if new) and register a runner; returns (job, run id, runner id).

        With ``exclusive`` (SQLite) a live runner of the same job refuses the start with
        :class:`JobLockedError` *before anything is written*: the lock check, the job row and
        the run row are one transaction, so a refused run leaves the database as it was.
        Runs whose process is gone are closed and their leases freed.
        """
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        runner_id = f"{host}:{pid}:{os.urandom(4).hex()}"
        with self._write() as conn:
            self._lock_job(conn, name)
            job_id = conn.execute(select(jobs.c.id).where(jobs.c.name == name)).scalar()
            open_runs = conn.execute(
                select(runs).where(runs.c.job_id == job_id, runs.c.ended_at.is_(None))
            ).all() if job_id is not None else []
            for r in open_runs:
                if exclusive and runner_alive(r.host, r.pid, r.heartbeat_at, now):
                    raise JobLockedError(
                        f"job {name!r} is being run by process {r.pid} on {r.host} "
                        f"(started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.started_at))}); "
                        "wait for it to finish or stop it first"
                    )
            job = self._ensure_job(conn, name, provider, model, manifest_path)
            for r in open_runs:
                if runner_alive(r.host, r.pid, r.heartbeat_at, now):
                    continue
                conn.execute(
                    update(runs)
                    .where(runs.c.id == r.id)
                    .values(ended_at=r.heartbeat_at, exit_reason="runner died (no heartbeat)")
                )
                self._release_leases(conn, r.runner_id)
            run_id = conn.execute(
                insert(runs).values(
                    job_id=job.id,
                    runner_id=runner_id,
                    host=host,
                    pid=pid,
                    started_at=now,
                    heartbeat_at=now,
                    succeeded=0,
                    failed=0,
                    requests=0,
                )
            ).inserted_primary_key[0]
        return job, run_id, runner_id

    def end_run(self, run_id: int, runner_id: str, reason: str, succeeded: int, failed: int, requests: int) -> None:
        with self._write() as conn:
            self._release_leases(conn, runner_id)
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    ended_at=time.time(),
                    exit_reason=reason,
                    succeeded=succeeded,
                    failed=failed,
                    requests=requests,
                )
            )








    # ---------------------------------------------------------------- recording

    def record(
        self, run_id: int, runner_id: str, records: list[AttemptRecord], lease_s: float = 60.0
    ) -> dict[int, str]:
        """Record finished attempts in one transaction; returns the items whose result was
        dropped, each with why: ``lease_lost`` or ``superseded``.

        An item's state only changes while this runner still holds its lease *and* the item's
        spec is still the one the attempt was made from, both read in this same transaction.
        A runner that lost the lease (it stalled past the expiry and another runner took
        over), or whose item was re-planned while the request was in flight, records its
        attempt for the history (as ``lease_lost`` / ``superseded``) and changes nothing else:
        the item runs again under its current spec.  A group costs the same handful of
        statements however many attempts it holds (executemany), which is what keeps a busy
        run's database work small.
        """
        now = time.time()
        ids = [r.item_id for r in records]
        with self._write() as conn:
            current = dict(
                conn.execute(
                    select(items.c.id, items.c.spec_hash).where(items.c.id.in_(ids), items.c.lease_owner == runner_id)
                ).all()
            )
            dropped: dict[int, AttemptOutcome] = {}
            for r in records:
                if r.item_id not in current:
                    dropped[r.item_id] = AttemptOutcome.lease_lost
                elif current[r.item_id] != r.spec_hash:
                    dropped[r.item_id] = AttemptOutcome.superseded
            attempt_ids = conn.execute(
                insert(attempts).returning(attempts.c.id, sort_by_parameter_order=True),
                [_attempt_row(r, run_id, dropped.get(r.item_id)) for r in records],
            ).scalars().all()
            kept = [(r, a) for r, a in zip(records, attempt_ids, strict=True) if r.item_id not in dropped]
            if kept:
                conn.execute(_ITEM_AFTER_ATTEMPT, [_item_row(r, runner_id, now, lease_s) for r, _ in kept])
            with_outputs = [(r, a) for r, a in kept if r.outputs]
            if with_outputs:
                conn.execute(delete(outputs).where(outputs.c.item_id.in_([r.item_id for r, _ in with_outputs])))
                conn.execute(
                    insert(outputs),
                    [
                        {**vars(o), "item_id": r.item_id, "attempt_id": attempt_id, "created_at": now}
                        for r, attempt_id in with_outputs
                        for o in r.outputs
                    ],
                )
            done = [r.item_id for r, _ in kept if r.item_state == ItemState.succeeded]
            if done:  # whatever was spooled for these items is on disk now, or stale
                conn.execute(delete(spool).where(spool.c.item_id.in_(done)))
            spooled = [
                dict(item_id=r.item_id, attempt_id=a, spec_hash=r.spec_hash, idx=img.idx, data=img.data,
                     source_url=img.source_url, source_at=img.source_at, created_at=now)
                for r, a in kept
                for img in r.spool
            ]
            if spooled:
                conn.execute(insert(spool), spooled)
            faultpoints.hit("db.record")
            states = [r.item_state for r, _ in kept]
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    heartbeat_at=now,
                    succeeded=runs.c.succeeded + states.count(ItemState.succeeded),
                    failed=runs.c.failed + states.count(ItemState.failed),
                    requests=runs.c.requests + sum(1 for r in records if r.outcome not in NO_REQUEST_OUTCOMES),
                )
            )
        return dropped



@dataclass(frozen=True)
class JobOutputs:
    """A job's output names as the database knows them (relative to its output folder)."""

    name: str
    manifest_path: str
    #: (key, spec) of each item in its plan, from which the names it will write follow
    #: (left empty for the job that asks: it knows its own plan).
    specs: list[tuple[str, dict[str, Any]]]
    #: (key, path) of every output recorded for it.
    recorded: list[tuple[str, str]]


def job_outputs(store: Store, job_name: str, wanted: Callable[[str, str], bool]) -> Iterator[JobOutputs]:
    """The outputs of each job for which ``wanted(name, manifest_path)`` is true (it is asked
    first, so a job writing elsewhere costs one row); specs only for jobs other than ``job_name``."""
    with store._read() as conn:
        found = conn.execute(select(jobs.c.id, jobs.c.name, jobs.c.manifest_path)).all()
    for job in found:
        if not wanted(job.name, job.manifest_path):
            continue
        with store._read() as conn:
            specs = [] if job.name == job_name else [
                (r.key, json.loads(r.spec))
                for r in conn.execute(select(items.c.key, items.c.spec).where(items.c.job_id == job.id, items.c.in_plan))
            ]
            recorded = [
                (r.key, r.path)
                for r in conn.execute(
                    select(items.c.key, outputs.c.path)
                    .join_from(outputs, items, outputs.c.item_id == items.c.id)
                    .where(items.c.job_id == job.id)
                )
            ]
        yield JobOutputs(job.name, job.manifest_path, specs, recorded)
