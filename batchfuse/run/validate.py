"""What ``validate`` shows: the plan against the database (read, never written) and its estimate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchfuse.plan.preview import Estimate, Loaded, estimate, load
from batchfuse.records import ItemSpec, PlanSummary
from batchfuse.run.job import sync
from batchfuse.run.other_jobs import check_other_jobs, with_adoptions
from batchfuse.run.revisions import settled_as_planned
from batchfuse.store.engine import missing_sqlite_file, resolve_db_url
from batchfuse.store.queries import Store
from batchfuse.store.verdicts import job_revisions


@dataclass(frozen=True)
class Preview:
    """What ``validate`` reports."""

    loaded: Loaded
    plan: PlanSummary
    #: The first item's spec, to show the request it makes.
    first: ItemSpec | None
    estimate: Estimate


def plan_preview(path: Path, db: str | None = None) -> Preview:
    """The plan against the database (read, never written) and what it would cost."""
    loaded = load(path)
    url = resolve_db_url(db, path)
    summary, settled, thoughts = PlanSummary(new=loaded.items), {}, None
    if missing_sqlite_file(url) is None:  # validate never creates a database
        store = Store.open(url)
        try:
            found = check_other_jobs(store, loaded.planner)
            job, summary = sync(store, loaded, dry_run=True)
            settled = settled_as_planned(store.settled(job), job_revisions(store, job)) if job.id >= 0 else {}
            thoughts = store.thoughts_per_request(job) if job.id >= 0 else None
        finally:
            store.close()
    else:
        found = check_other_jobs(None, loaded.planner)
    summary = with_adoptions(summary, found, settled, loaded.planner.output_shown)
    first = next(iter(loaded.planner.rows([])), None)
    return Preview(loaded, summary, first.spec if first else None, estimate(loaded, settled, thoughts))
