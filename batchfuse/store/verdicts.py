"""Verdicts and revisions: the review's data in the store.

A verdict (``approve``, ``reject``, ``clear``) is a row of ``verdicts``, never overwritten: who
gave it, when, the note.  ``clear`` undoes the latest standing verdict (it gets ``undone_at``).
``reviews`` holds the fold of an item's standing verdicts (one row per judged item), which is
what the review page filters on and what a run reads to apply revisions.

A ``reject`` makes a new *revision* of the item's spec: the manifest's spec (``base_hash``) plus
the added prompt lines and a seed salt.  The revision is folded into the spec hash
(:func:`revised_hash`), so the next run sends the item once more, and only once, per rejection.
A revision applies only to the manifest spec it was made from: edit the manifest and the edit
wins, as it always did.  Undoing a reject is possible until a run has taken its revision.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, update

from batchfuse.errors import InputError
from batchfuse.records import ItemState, Job
from batchfuse.store.lite import verdicts_of
from batchfuse.store.reads import tokens_by_item
from batchfuse.store.schema import (
    attempts,
    conflict_insert,
    items,
    output_versions,
    outputs,
    reviews,
    verdicts,
)

VERDICTS = ("approve", "reject", "clear")
#: ``verdict=`` filter values of the review API -> the stored verdict (None: not judged).
VERDICT_FILTERS = {"approved": "approve", "rejected": "reject", "none": None}
STATE_FILTERS = ("succeeded", "failed", "pending", "running", "orphaned")
#: Seeds are 32-bit signed integers at the API: a salted seed stays in 0 .. 2**31 - 1.
SEED_RANGE = 2**31
#: Longest note or added prompt line kept.
TEXT_MAX = 4000


class VerdictRefused(InputError):
    """A verdict the store will not record; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Revision:
    """What the reviews added to one item's manifest spec (revision ``n`` of ``base_hash``)."""

    n: int
    base_hash: str
    prompt_extra: str | None = None
    seed_salt: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "prompt_extra": self.prompt_extra, "seed_salt": self.seed_salt}


def revised_hash(rev: Revision) -> str:
    """The spec hash of a revision: the manifest spec's hash with the revision folded in."""
    canonical = json.dumps({"base": rev.base_hash, "revision": rev.to_json()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def revise_spec(spec: dict[str, Any], rev: Revision) -> dict[str, Any]:
    """The spec (as :meth:`ItemSpec.to_json`) of revision ``rev``: the added prompt lines after the
    prompt, a new ``seed`` for a new-seed reject (salted), and the revision itself in ``vars``."""
    out = {**spec, "params": dict(spec.get("params") or {}), "vars": dict(spec.get("vars") or {})}
    if rev.prompt_extra:
        out["prompt"] = f"{spec.get('prompt', '')}\n\n{rev.prompt_extra}"
    seed = out["params"].get("seed")
    if rev.seed_salt is not None:
        # the request's seed (Gemini: ``generationConfig.seed``) changes: the item's own seed plus the
        # salt, or, without one (none given; ``seed: auto`` is an integer by now), the salt itself
        has_seed = isinstance(seed, int) and not isinstance(seed, bool)
        out["params"]["seed"] = ((seed if has_seed else 0) + rev.seed_salt) % SEED_RANGE
    out["vars"]["revision"] = rev.to_json()
    return out


# ---------------------------------------------------------------- the fold


@dataclass
class ReviewState:
    """An item's standing verdicts folded together."""

    verdict: str | None = None
    verdict_id: int | None = None
    base_hash: str | None = None
    revision: int = 0
    extras: list[str] = field(default_factory=list)
    seed_salt: int | None = None
    pick: str | None = None

    @property
    def rev(self) -> Revision | None:
        if not self.revision or self.base_hash is None:
            return None
        return Revision(self.revision, self.base_hash, "\n".join(self.extras) or None, self.seed_salt)

    def apply(self, v: Any) -> None:
        if v.verdict == "approve":
            self.verdict, self.verdict_id = "approve", v.id
            self.pick = v.pick or self.pick
        elif v.verdict == "reject":
            if v.base_hash != self.base_hash:  # the manifest changed since: a new chain of revisions
                self.base_hash, self.revision, self.extras, self.seed_salt = v.base_hash, 0, [], None
            self.revision = v.revision or self.revision + 1
            if v.prompt_extra:
                self.extras.append(v.prompt_extra)
            if v.seed_salt is not None:
                self.seed_salt = v.seed_salt
            self.verdict, self.verdict_id, self.pick = "reject", v.id, None

    def row(self) -> dict[str, Any]:
        rev = self.rev
        return dict(
            verdict=self.verdict, verdict_id=self.verdict_id, base_hash=self.base_hash, revision=self.revision,
            prompt_extra=rev.prompt_extra if rev else None, seed_salt=self.seed_salt, pick=self.pick,
        )


def _fold(conn: Connection, item_id: int) -> ReviewState:
    state = ReviewState()
    for v in conn.execute(
        select(verdicts)
        .where(verdicts.c.item_id == item_id, verdicts.c.undone_at.is_(None), verdicts.c.verdict != "clear")
        .order_by(verdicts.c.id)
    ):
        state.apply(v)
    return state


def _manifest_hash(item: Any, state: ReviewState) -> str:
    """The manifest's spec hash of the item: its stored hash, unless that is our own revision's."""
    rev = state.rev
    if rev is not None and item.spec_hash in (rev.base_hash, revised_hash(rev)):
        return rev.base_hash
    return str(item.spec_hash)


def _taken(item: Any, state: ReviewState) -> bool:
    """Whether a run has taken the item's current revision (its spec is the revised one)."""
    rev = state.rev
    return rev is not None and item.spec_hash == revised_hash(rev)


def record_verdict(
    store: Any, job: Job, key: str, verdict: str, *, reviewer: str, note: str | None = None,
    prompt_extra: str | None = None, new_seed: bool = False, pick: str | None = None,
) -> dict[str, Any]:
    """Record one verdict on the item ``key`` (one transaction); returns its review as the API shows it.

    Refused (:class:`VerdictRefused`, nothing written): an unknown item (404); ``clear`` of a reject
    whose revision a run has already taken, or with nothing to clear; ``approve`` while a reject
    waits for its run (clear it first) (409).
    """
    if verdict not in VERDICTS:
        raise VerdictRefused(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}", 400)
    if verdict != "reject" and (prompt_extra or new_seed):
        raise VerdictRefused("prompt_extra and new_seed go with a reject", 400)
    if pick is not None and verdict != "approve":
        raise VerdictRefused("pick goes with an approve", 400)
    note, prompt_extra = (_text(note, "note"), _text(prompt_extra, "prompt_extra"))
    now = time.time()
    with store._write() as conn:
        # the item's row is locked to commit (PostgreSQL; SQLite writes one at a time anyway): two
        # reviewers judging one item at once fold each other's verdicts, in turn
        item = conn.execute(
            select(items.c.id, items.c.spec_hash, items.c.state)
            .where(items.c.job_id == job.id, items.c.key == key)
            .with_for_update()
        ).first()
        if item is None:
            raise VerdictRefused(f"job {job.name!r} has no item {key!r}", 404)
        if pick is not None and item.state != ItemState.succeeded.value:
            raise VerdictRefused(f"item {key!r} is {item.state}; pick an image of a finished item")
        if pick is not None and not _names_output(conn, pick, items.c.id == item.id):
            raise VerdictRefused(f"item {key!r} has no output or kept version {pick!r} to pick", 400)
        state = _fold(conn, item.id)
        row: dict[str, Any] = dict(
            item_id=item.id, verdict=verdict, note=note, prompt_extra=prompt_extra, new_seed=bool(new_seed),
            pick=pick, reviewer=reviewer[:200], created_at=now,
        )
        if verdict == "clear":
            if state.verdict_id is None:
                raise VerdictRefused(f"item {key!r} has no verdict to clear")
            if state.verdict == "reject" and _taken(item, state):
                raise VerdictRefused(
                    f"item {key!r}: a run has already taken revision {state.revision}; its reject cannot be undone"
                )
            conn.execute(update(verdicts).where(verdicts.c.id == state.verdict_id).values(undone_at=now))
        elif verdict == "approve" and state.verdict == "reject" and not _taken(item, state):
            raise VerdictRefused(f"item {key!r} is rejected and waits for its next run; clear the reject first")
        elif verdict == "reject":
            base = _manifest_hash(item, state)
            n = (state.revision if base == state.base_hash else 0) + 1
            row.update(base_hash=base, revision=n, seed_salt=secrets.randbelow(2**31 - 1) + 1 if new_seed else None)
        conn.execute(insert(verdicts).values(**row))
        state = _fold(conn, item.id)
        values = {**state.row(), "updated_at": now}
        conn.execute(_upsert(conn, reviews, ["item_id"], dict(item_id=item.id, job_id=job.id, **values), values))
    return {"key": key, **state.row()}


def _upsert(conn: Connection, table: Any, keys: list[str], row: dict[str, Any], changes: dict[str, Any]) -> Any:
    """INSERT .. ON CONFLICT (``keys``) DO UPDATE SET ``changes``, in the connection's dialect."""
    return conflict_insert(conn, table).values(**row).on_conflict_do_update(index_elements=keys, set_=changes)


def _names_output(conn: Connection, path: str, whose: Any) -> bool:
    """Whether ``path`` is an output or a kept version of an item matching ``whose`` (on ``items``)."""
    return any(
        conn.execute(
            select(t.c.id).join_from(t, items, t.c.item_id == items.c.id).where(whose, t.c.path == path).limit(1)
        ).first() is not None
        for t in (outputs, output_versions)
    )


def _text(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise VerdictRefused(f"{name} must be a string", 400)
    return value.strip()[:TEXT_MAX] or None


def job_revisions(store: Any, job: Job) -> dict[str, Revision]:
    """Key -> the revision a run applies, for every item of ``job`` with one."""
    with store._read() as conn:
        rows = conn.execute(
            select(items.c.key, reviews.c.revision, reviews.c.base_hash, reviews.c.prompt_extra, reviews.c.seed_salt)
            .join_from(reviews, items, reviews.c.item_id == items.c.id)
            .where(reviews.c.job_id == job.id, reviews.c.revision > 0, reviews.c.base_hash.is_not(None))
        ).all()
    return {r.key: Revision(r.revision, r.base_hash, r.prompt_extra, r.seed_salt) for r in rows}


def verdict_counts(store: Any, job: Job) -> dict[str, int]:
    """Items in the plan by standing verdict: ``approved``, ``rejected``, ``unjudged``."""
    with store._read() as conn:
        total = conn.execute(select(func.count()).where(items.c.job_id == job.id, items.c.in_plan)).scalar_one()
        return verdicts_of(lambda sql: conn.exec_driver_sql(sql).all(), job.id, total)


# ---------------------------------------------------------------- the review page's queries


def _like(q: str) -> str:
    return "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_items(
    store: Any, job: Job, *, state: str | None = None, verdict: str | None = None, q: str | None = None,
    page: int = 1, page_size: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the job's items (in plan order) matching the filters, and how many match.

    Filtering, counting and paging happen in the database (LIMIT/OFFSET over ``ix_items_claim``
    and ``ix_reviews_job_verdict``); only the page's rows come back, each with its outputs,
    kept versions, standing review and the last verdicts given.
    """
    with store._read() as conn:
        live = store._live_runners(conn, job)  # an item claimed by any other runner is orphaned
        where = [items.c.job_id == job.id, items.c.in_plan]
        if state == "orphaned":
            where += [items.c.state == ItemState.running.value, ~items.c.lease_owner.in_(live or {""})]
        elif state == "running":
            where += [items.c.state == state, items.c.lease_owner.in_(live or {""})]
        elif state:
            where.append(items.c.state == state)
        if verdict == "none":
            where.append(reviews.c.verdict.is_(None))
        elif verdict:
            where.append(reviews.c.verdict == VERDICT_FILTERS[verdict])
        if q:
            pattern = _like(q)
            where.append(
                or_(*(func.lower(c).like(pattern, escape="\\") for c in (items.c.key, items.c.spec, items.c.last_error)))
            )
        joined = items.outerjoin(reviews, reviews.c.item_id == items.c.id)
        total = conn.execute(select(func.count()).select_from(joined).where(*where)).scalar_one()
        page_rows = conn.execute(
            select(items, reviews.c.verdict, reviews.c.revision, reviews.c.pick, reviews.c.prompt_extra)
            .select_from(joined)
            .where(*where)
            .order_by(items.c.ordinal)
            .limit(page_size)
            .offset((max(1, page) - 1) * page_size)
        ).all()
        rows = _with_details(conn, page_rows, live)
    return rows, total


def _with_details(conn: Connection, page_rows: list[Any], live: set[str]) -> list[dict[str, Any]]:
    ids = [r.id for r in page_rows]
    outs: dict[int, list[dict[str, Any]]] = {}
    kept: dict[int, list[dict[str, Any]]] = {}
    history: dict[int, list[dict[str, Any]]] = {}
    tokens: dict[int, int] = {}
    if ids:
        for o in conn.execute(select(outputs).where(outputs.c.item_id.in_(ids)).order_by(outputs.c.idx)):
            outs.setdefault(o.item_id, []).append(
                {"path": o.path, "sha256": o.sha256, "width": o.width, "height": o.height}
            )
        for v in conn.execute(
            select(output_versions).where(output_versions.c.item_id.in_(ids)).order_by(output_versions.c.id)
        ):
            kept.setdefault(v.item_id, []).append(
                {"path": v.path, "name": v.name, "sha256": v.sha256, "width": v.width, "height": v.height,
                 "revision": v.revision, "made_at": v.made_at}
            )
        for v in conn.execute(select(verdicts).where(verdicts.c.item_id.in_(ids)).order_by(verdicts.c.id.desc())):
            history.setdefault(v.item_id, []).append(
                {"verdict": v.verdict, "reviewer": v.reviewer, "at": v.created_at, "note": v.note,
                 "prompt_extra": v.prompt_extra, "new_seed": v.new_seed, "pick": v.pick, "revision": v.revision,
                 "undone": v.undone_at is not None}
            )
        tokens = tokens_by_item(conn, ids)
    return [
        {
            "key": r.key,
            "state": "orphaned" if r.state == ItemState.running.value and r.lease_owner not in live else r.state,
            "attempts": r.attempts,
            "spec": json.loads(r.spec),
            "error_class": r.error_class,
            "last_error": r.last_error,
            "tokens": int(tokens.get(r.id, 0)),
            "outputs": outs.get(r.id, []),
            "versions": kept.get(r.id, []),
            "verdict": r.verdict,
            "revision": r.revision or 0,
            "pick": r.pick,
            "history": history.get(r.id, [])[:20],
        }
        for r in page_rows
    ]


def standing_verdicts(store: Any, job: Job) -> dict[str, tuple[str, str | None]]:
    """Key -> (standing verdict, pick) of every judged item of ``job``."""
    with store._read() as conn:
        return {
            r.key: (r.verdict, r.pick)
            for r in conn.execute(
                select(items.c.key, reviews.c.verdict, reviews.c.pick)
                .join_from(reviews, items, reviews.c.item_id == items.c.id)
                .where(reviews.c.job_id == job.id, reviews.c.verdict.is_not(None))
            )
        }


def change_marker(store: Any, job: Job) -> tuple[Any, ...]:
    """A cheap fingerprint of the job's items and verdicts: it moves whenever one changes."""
    with store._read() as conn:
        return tuple(
            conn.execute(
                select(
                    select(func.max(items.c.updated_at)).where(items.c.job_id == job.id).scalar_subquery(),
                    select(func.max(verdicts.c.id)).scalar_subquery(),
                    select(func.max(attempts.c.id)).scalar_subquery(),
                    select(func.max(output_versions.c.id)).scalar_subquery(),
                    select(func.max(reviews.c.updated_at)).where(reviews.c.job_id == job.id).scalar_subquery(),
                )
            ).one()
        )


def changed_keys(store: Any, job: Job, since: float) -> list[str]:
    """Keys of items updated (or judged) after ``since`` (a time.time())."""
    with store._read() as conn:
        return list(
            conn.execute(
                select(items.c.key)
                .select_from(items.outerjoin(reviews, reviews.c.item_id == items.c.id))
                .where(items.c.job_id == job.id, or_(items.c.updated_at > since, reviews.c.updated_at > since))
                .limit(1000)
            ).scalars()
        )


def is_own_output(store: Any, job: Job, path: str) -> bool:
    """Whether ``path`` (relative to the output folder) is an output or kept version of ``job``."""
    with store._read() as conn:
        return _names_output(conn, path, items.c.job_id == job.id)


def item_spec(store: Any, job: Job, key: str) -> dict[str, Any] | None:
    with store._read() as conn:
        spec = conn.execute(select(items.c.spec).where(items.c.job_id == job.id, items.c.key == key)).scalar()
    return json.loads(spec) if spec is not None else None
