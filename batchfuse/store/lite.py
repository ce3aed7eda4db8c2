"""`status` without SQLAlchemy: its queries as plain SQL, and an SQLite file read through sqlite3.

``batchfuse status`` spent most of its time importing SQLAlchemy (~0.2 s of CPU, the rest of the
command ~0.1 s). The status queries are plain SQL here, run by :meth:`Store.status` through its
connection (SQLite and PostgreSQL alike: one implementation), and by :func:`sqlite_status` through
the standard library's ``sqlite3`` for a job in an SQLite file — the usual case — so the command
never imports SQLAlchemy. Whatever :func:`sqlite_status` cannot answer exactly as the store would
(a URL, a missing file, another schema revision, an unknown job, a job with batches, any SQLite
error) it leaves to the store (returns None), which then says what is wrong.

The only value put into the SQL is the job's integer id (no user text, no quoting, no ``%``, so
the same text runs on sqlite3 and on psycopg without parameters).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from batchfuse.records import ItemState

#: The newest migration under ``migrations/versions`` (``store.engine`` takes it from here, so
#: that this module needs no SQLAlchemy). A database at another revision is left to the store.
SCHEMA_HEAD = "0008"
#: A runner that has not written a heartbeat for this long is taken for dead.
STALE_RUNNER_S = 60.0
#: The lease owner of an item submitted in a batch starts with this (``store.batches.owner_of``).
BATCH_OWNER = "batch:"

Query = Callable[[str], Sequence[Sequence[Any]]]


def runner_alive(host: str, pid: int, heartbeat_at: float, now: float) -> bool:
    """Whether a runner is alive: by its pid on this host, by its heartbeat elsewhere."""
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        # A live pid with a long-silent heartbeat is a reused pid, not our runner.
        return now - heartbeat_at < STALE_RUNNER_S * 10
    return now - heartbeat_at < STALE_RUNNER_S


def live_runner_ids(open_runs: Iterable[Sequence[Any]], now: float) -> set[str]:
    """The ids of the runners alive among open runs, given as (runner_id, host, pid, heartbeat_at)."""
    return {runner_id for runner_id, host, pid, heartbeat_at in open_runs if runner_alive(host, pid, heartbeat_at, now)}


def shown(counts: dict[str, int], in_flight: Mapping[Any, int], live: set[str]) -> dict[str, int]:
    """Items by state as status, report and export show them: ``running`` only for the items a
    live runner holds (``in_flight``: lease owner -> items); those a batch holds are ``in_batch``
    (the key only when there are any), those claimed by a runner that is gone ``orphaned``."""
    batched = sum(n for owner, n in in_flight.items() if owner and owner.startswith(BATCH_OWNER))
    orphaned = sum(n for owner, n in in_flight.items() if owner not in live) - batched
    counts = {**counts, "running": counts["running"] - orphaned - batched, "orphaned": orphaned}
    return {**counts, "in_batch": batched} if batched else counts


def verdicts_of(q: Query, job_id: int, total: int) -> dict[str, int]:
    """The review's standing verdicts (store/verdicts.py keeps them) of the ``total`` items in the
    plan: ``approved``, ``rejected``, ``unjudged``."""
    judged = dict(q(
        "SELECT reviews.verdict, COUNT(*) FROM reviews JOIN items ON items.id = reviews.item_id "
        f"WHERE reviews.job_id = {int(job_id)} AND items.in_plan AND reviews.verdict IS NOT NULL GROUP BY reviews.verdict"
    ))
    approved, rejected = judged.get("approve", 0), judged.get("reject", 0)
    return {"approved": approved, "rejected": rejected, "unjudged": total - approved - rejected}


def status_of(q: Query, job_id: int, job_name: str) -> dict[str, Any]:
    """Everything ``batchfuse status`` shows but the batches, read with ``q`` (SQL -> rows) inside
    one read transaction."""
    j = int(job_id)
    running = ItemState.running.value
    counts = {s.value: 0 for s in ItemState}
    removed = 0
    # one pass over the job's items (the covering index ix_items_status) for counts and removed
    for state, in_plan, n in q(f"SELECT state, in_plan, COUNT(*) FROM items WHERE job_id = {j} GROUP BY state, in_plan"):
        if in_plan:
            counts[state] += n
        else:
            removed += n
    counts["total"] = sum(counts.values())
    in_flight: dict[str, int] = {
        owner: n for owner, n in q(
            f"SELECT lease_owner, COUNT(*) FROM items WHERE job_id = {j} AND in_plan AND state = '{running}' "
            "GROUP BY lease_owner"
        )
    }
    now = time.time()
    live = live_runner_ids(
        q(f"SELECT runner_id, host, pid, heartbeat_at FROM runs WHERE job_id = {j} AND ended_at IS NULL"), now
    )
    counts = shown(counts, in_flight, live)
    verdicts = verdicts_of(q, j, counts["total"])
    # one pass over the attempts for all four figures (no join when the database holds one job)
    only_job = q("SELECT COUNT(*) FROM jobs")[0][0] <= 1
    source = "attempts" if only_job else f"attempts JOIN items ON attempts.item_id = items.id WHERE items.job_id = {j}"
    per_outcome = q(
        "SELECT attempts.outcome, COUNT(*), COALESCE(SUM(CASE WHEN attempts.http_status = 429 THEN 1 ELSE 0 END), 0), "
        f"COALESCE(SUM(attempts.total_tokens), 0) FROM {source} GROUP BY attempts.outcome"
    )
    by_outcome = {outcome: n for outcome, n, _, _ in per_outcome}
    errors = q(
        f"SELECT error_class, last_error, COUNT(*), MIN(key) FROM items WHERE job_id = {j} AND in_plan "
        f"AND state != '{ItemState.succeeded.value}' AND last_error IS NOT NULL "
        "GROUP BY error_class, last_error ORDER BY COUNT(*) DESC LIMIT 20"
    )
    run_rows = q(
        "SELECT started_at, ended_at, host, pid, exit_reason, succeeded, failed, requests, runner_id, heartbeat_at "
        f"FROM runs WHERE job_id = {j} ORDER BY started_at DESC LIMIT 10"
    )
    worked = [r for r in run_rows if (r[5] + r[6]) and (r[1] or r[9]) > r[0]]
    throughput = None
    if worked:
        last = worked[0]
        throughput = (last[5] + last[6]) / ((last[1] or now) - last[0])
    left = counts["pending"] + counts["running"] + counts["orphaned"]
    return {
        "job": job_name,
        "items_per_s": throughput,
        "eta_s": left / throughput if throughput and left else (0.0 if not left else None),
        "items": {
            "total": counts["total"],
            "succeeded": counts["succeeded"],
            "failed": counts["failed"],
            "pending": counts["pending"],
            "running": counts["running"],
            "orphaned": counts["orphaned"],
            "removed": removed,
            **({"in_batch": counts["in_batch"]} if "in_batch" in counts else {}),
        },
        "attempts": sum(by_outcome.values()),
        "attempts_by_outcome": by_outcome,
        "rate_limited": sum(int(r[2]) for r in per_outcome),
        "tokens": int(sum(int(r[3]) for r in per_outcome)),
        "verdicts": verdicts,
        "errors": [{"class": cls, "message": msg, "items": n, "example": example} for cls, msg, n, example in errors],
        "runs": [
            {
                "started_at": started_at,
                "ended_at": ended_at,
                "host": host,
                "pid": pid,
                "exit_reason": exit_reason,
                "succeeded": succeeded,
                "failed": failed,
                "requests": requests,
                "runner_id": runner_id,
                "in_flight": in_flight.get(runner_id, 0) if ended_at is None else 0,
                "heartbeat_at": heartbeat_at,
                "live": runner_id in live,
            }
            for started_at, ended_at, host, pid, exit_reason, succeeded, failed, requests, runner_id, heartbeat_at in run_rows
        ],
    }


def sqlite_file(db: str | None, manifest_path: Path) -> Path | None:
    """The SQLite file the store would open for ``--db`` / ``BATCHFUSE_DB`` / the default beside
    the manifest (as ``engine.resolve_db_url`` resolves them); None for anything but a plain file."""
    db = db or os.environ.get("BATCHFUSE_DB") or str(manifest_path.parent / "batchfuse.db")
    if "://" not in db:
        return Path(db).expanduser().resolve()
    rest = db.removeprefix("sqlite:///")
    if rest == db or not rest or "?" in rest or "%" in rest or rest.startswith("file:"):
        return None
    return Path("/" + rest.lstrip("/")) if db.startswith("sqlite:////") else Path(rest).resolve()


def sqlite_status(db: str | None, manifest_path: Path, job_name: str) -> dict[str, Any] | None:
    """``batchfuse status --json``'s dict for a job in an SQLite file, read with sqlite3 (read
    only, one transaction); None when the store should answer instead (see the module's docstring)."""
    path = sqlite_file(db, manifest_path)
    if path is None or not path.is_file():
        return None
    mode = "mode=ro" if os.access(path.parent, os.W_OK) else "immutable=1"  # as engine._read_only_url
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?{mode}", uri=True, isolation_level=None, timeout=5)
    except sqlite3.Error:
        return None
    try:
        conn.execute("BEGIN")
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        if revision != [(SCHEMA_HEAD,)]:
            return None
        found = conn.execute("SELECT id FROM jobs WHERE name = ?", (job_name,)).fetchone()
        if found is None or conn.execute("SELECT 1 FROM batches WHERE job_id = ? LIMIT 1", found).fetchone():
            return None
        info = status_of(lambda sql: conn.execute(sql).fetchall(), found[0], job_name)
        info["batches"] = []
        return info
    except sqlite3.Error:
        return None
    finally:
        conn.close()
