"""The command line: parse, call :mod:`batchfuse.run.job`, render results and errors.

Exit codes: 0 every item succeeded; 1 some items failed; 2 bad input (nothing was sent);
3 the run was stopped (fatal API error, interrupt, resource problem); 4 an internal error.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import signal
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchfuse import __version__
from batchfuse.errors import EXIT_INTERNAL, BatchfuseError
from batchfuse.records import PlanSummary
from batchfuse.run import logs
from batchfuse.run.batch_text import batch_line, batches_text, price_lines
from batchfuse.run.progress import final_line, fmt_duration, plural, show_progress

# run and validate import what sending needs (aiohttp, the scheduler, the providers) when they
# are used, so `status` does not pay for it
if TYPE_CHECKING:
    from batchfuse.run.job import RunOptions

manifest_arg = click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
db_option = click.option(
    "--db", metavar="PATH_OR_URL", help="Database path or SQLAlchemy URL (default: batchfuse.db beside the manifest)."
)


def fail(exc: BatchfuseError) -> None:
    for line in exc.message.splitlines() or [exc.message]:
        click.echo(f"error: {line}", err=True)
    sys.exit(exc.exit_code)


class Group(click.Group):
    """Turns batchfuse errors into one-line messages and documented exit codes.

    Commands that live in their own modules load only when used (``LAZY``): a run does not
    pay for importing the report's or the mock's code.
    """

    LAZY = {
        "report": "batchfuse.review.cli_review:report",
        "export": "batchfuse.review.cli_review:export",
        "review": "batchfuse.review.cli_review:review",
        "mock-server": "batchfuse.mock.cli:mock_server",
        "schema": "batchfuse.plan.schema:schema",
        "models": "batchfuse.plan.models_cmd:models",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY:
            module, _, attr = self.LAZY[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BatchfuseError as exc:
            fail(exc)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            from batchfuse.run.job import EXIT_STOPPED

            sys.exit(EXIT_STOPPED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except BrokenPipeError:  # `batchfuse status ... | head`: the reader left; so do we
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except Exception as exc:  # a bug: one line, the traceback only on request
            if os.environ.get("BATCHFUSE_DEBUG"):
                raise
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
            click.echo(f"error: internal error (a bug in batchfuse): {detail} (BATCHFUSE_DEBUG=1 shows more)", err=True)
            sys.exit(EXIT_INTERNAL)


class Duration(click.ParamType):
    """``90``, ``45s``, ``30m``, ``5h``, ``1h30m`` as seconds."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text)
        if not text or not match or not any(match.groups()):
            self.fail(f"{value!r} is not a duration like 45s, 30m, 5h or 1h30m", param, ctx)
        h, m, sec = (float(g) if g else 0.0 for g in match.groups())
        return h * 3600 + m * 60 + sec


class ClockTime(click.ParamType):
    """``06:30`` (local time): the next time the clock shows it, as a UNIX time."""

    name = "HH:MM"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value).strip())
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            self.fail(f"{value!r} is not a time like 06:30", param, ctx)
        now = datetime.now()
        when = now.replace(hour=int(match.group(1)), minute=int(match.group(2)), second=0, microsecond=0)
        if when <= now:
            when += timedelta(days=1)
        return when.timestamp()


@click.group(cls=Group)
@click.version_option(__version__, prog_name="batchfuse")
def main() -> None:
    """Batch image generation against Gemini and OpenAI-compatible APIs, resumable."""
    logs.configure(debug=bool(os.environ.get("BATCHFUSE_DEBUG")))


def _plan_line(plan: PlanSummary, retry_failed: bool = False) -> str:
    failed = f"{plan.failed} failed, retried now" if retry_failed else f"{plan.failed} failed"
    text = (
        f"plan: {plan.new} new, {plan.changed} changed, {plan.unchanged_done} unchanged done, "
        f"{plan.to_run} pending, {plan.to_retry} to retry, {failed}, {plan.removed} removed"
    )
    if plan.removed_keys:
        text += f" ({', '.join(plan.removed_keys[:5])}{', ...' if plan.removed > 5 else ''})"
    if plan.adoptable:
        text += (f"; {plural(plan.adoptable, 'item')} to adopt from outputs already in {plan.adopt_from}"
                 " (made by an earlier run, not sent again)")
    return text


@main.command()
@manifest_arg
@db_option
def validate(manifest: Path, db: str | None) -> None:
    """Check a manifest completely; send nothing; say what would be sent."""
    from batchfuse.run.validate import plan_preview

    preview = plan_preview(manifest, db)
    loaded, plan, first, est = preview.loaded, preview.plan, preview.first, preview.estimate
    m = loaded.manifest
    env = m.provider.api_key_env
    click.echo(f"{manifest}: ok — job {m.job!r}, {plural(loaded.items, 'item')}")
    click.echo(f"provider: {m.provider.kind} {m.provider.model} at {m.provider.base_url}")
    for warning in loaded.planner.warnings:
        click.echo(f"warning: {warning}", err=True)
    for line in _fitted_lines(loaded.planner.fitted):
        click.echo(line)
    click.echo(_plan_line(plan))
    to_send = plan.new + plan.changed + plan.to_run + plan.to_retry
    click.echo(
        f"would send {plural(to_send, 'request')} (up to {m.limits.max_attempts} attempts each), "
        f"concurrency {m.limits.concurrency}, {m.limits.requests_per_minute or 'no'} requests/minute"
    )
    cost = f", about {est.cost:,.2f} in money" if est.cost is not None else " (set pricing for money)"
    if est.cost is None and m.provider.mode == "batch" and est.list_cost_batch is not None:
        cost = f", about ${est.list_cost_batch:,.2f} at the catalog's batch prices (set pricing for your own)"
    elif est.cost is None and est.list_cost is not None:
        cost = f", about ${est.list_cost:,.2f} at the catalog's list prices (set pricing for your own)"
    thinking = "" if est.thoughts == 0 else (
        " + thinking tokens (unknown until the first replies report them)" if est.thoughts is None
        else f" + about {est.thoughts:,} thinking tokens (the job's average so far)")
    click.echo(f"estimate: {est.images:,} image{'' if est.images == 1 else 's'}, {est.tokens:,} output tokens{thinking}{cost}")
    for line in price_lines(m.provider.mode, est.list_cost_batch, est.list_cost, m.batch.fallback_online):
        click.echo(line)
    budget = [f"max_images {m.limits.max_images}" if m.limits.max_images else "",
              f"max_cost {m.limits.max_cost:g}" if m.limits.max_cost else ""]
    if any(budget):
        click.echo("budget per run: " + ", ".join(b for b in budget if b))
    if first is not None:
        request = loaded.planner.provider.describe_request(m.provider.model, m.provider.base_url, first)
        click.echo("first request: " + json.dumps(request, ensure_ascii=False))
    if m.provider.base_url != "mock" and env and not os.environ.get(env):
        click.echo(f"warning: {env} is not set; run needs it", err=True)


def _fitted_lines(fitted: dict[str, Any], shown: int = 10) -> list[str]:
    """What ``reference_images.fit`` did, item by item (the first ``shown``)."""
    if not fitted:
        return []
    lines = [f"fitted to the request limit: {plural(len(fitted), 'item')} (reference images re-encoded)"]
    for key, how in list(fitted.items())[:shown]:
        lines.append(f"  {key}: {how.before / 2**20:.1f} MB -> {how.after / 2**20:.1f} MB at {how.step}")
    if len(fitted) > shown:
        lines.append(f"  ... and {len(fitted) - shown} more")
    return lines


@main.command()
@manifest_arg
@db_option
@click.option("--retry-failed", is_flag=True, help="Give failed (rejected or exhausted) items a fresh allowance.")
@click.option("--only", "only", multiple=True, metavar="KEY", help="Run only these items (repeatable).")
@click.option("--sample", type=click.IntRange(min=1), metavar="N", help="Run only N items spread across the plan.")
@click.option("--until", "until", type=ClockTime(), help="Start no request after this local time (e.g. 06:30).")
@click.option("--max-runtime", type=Duration(), help="Start no request after this long (e.g. 5h, 90m).")
@click.option("--grace", type=Duration(), default="60s", show_default=True,
              help="After a stop, how long in-flight requests may finish before they are cancelled.")
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), help="Write run events to this file.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--mode", type=click.Choice(["online", "batch"]), help="Override provider.mode (batch: the Batch API).")
def run(
    manifest: Path,
    db: str | None,
    retry_failed: bool,
    only: tuple[str, ...],
    sample: int | None,
    until: float | None,
    max_runtime: float | None,
    grace: float,
    log_file: Path | None,
    log_format: str,
    mode: str | None = None,
) -> None:
    """Run every item that is not done; resumes after crashes and failures."""
    deadlines = [t for t in (until, time.time() + max_runtime if max_runtime is not None else None) if t]
    if log_file is not None:
        from batchfuse.review.own_files import check_not_own_file

        check_not_own_file(log_file, manifest, db, "--log-file")
    logs.configure(log_file, log_format, debug=bool(os.environ.get("BATCHFUSE_DEBUG")))
    if deadlines:
        said = _deadline_line(min(deadlines))
        click.echo(said, err=True)
        logging.getLogger("batchfuse.run").info(said, extra={"event": "deadline", "deadline": min(deadlines)})
    from batchfuse.run.job import RunOptions

    options = RunOptions(
        db=db,
        retry_failed=retry_failed,
        only=list(only) or None,
        sample=sample,
        deadline=min(deadlines) if deadlines else None,
        grace_s=grace,
        mode=mode,
    )
    result = asyncio.run(_run(manifest, options))
    sys.exit(result)


def _deadline_line(deadline: float) -> str:
    """When a run started with --until or --max-runtime stops starting requests, with its date."""
    when, today = datetime.fromtimestamp(deadline), datetime.now().date()
    if (when.date() - today).days == 1:
        return f"running until {when:%H:%M} tomorrow ({when:%Y-%m-%d})"
    return f"running until {when:%Y-%m-%d %H:%M}"


def _to_do_line(counts: dict[str, int], to_do: int, retry_failed: bool) -> str:
    if to_do:
        return f"to do: {to_do} of {plural(counts['total'], 'item')}"
    hint = "; --retry-failed gives them another go" if counts["failed"] and not retry_failed else ""
    return (
        f"nothing to do: {counts['succeeded']} of {plural(counts['total'], 'item')} succeeded, "
        f"{counts['failed']} failed{hint}"
    )


async def _run(manifest: Path, options: RunOptions) -> int:
    from batchfuse.run.job import RunControl, run_job

    control = RunControl()
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            click.echo(f"{signame}: stopping; in-flight requests finish (signal again to cancel them)", err=True)
            control.stop(f"interrupted by {signame}")
        else:
            click.echo(f"{signame}: cancelling in-flight requests", err=True)
            control.cancel_in_flight()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)

    def on_planned(plan: PlanSummary, counts: dict[str, int], to_do: int) -> None:
        click.echo(_plan_line(plan, options.retry_failed), err=True)
        click.echo(_to_do_line(counts, to_do, options.retry_failed), err=True)

    started = time.monotonic()
    display = asyncio.create_task(show_progress(control.stats))
    try:
        result = await run_job(manifest, options, control, on_planned)
    finally:
        display.cancel()
        await asyncio.gather(display, return_exceptions=True)
    c = result.counts
    outputs = control.scheduler.outputs if control.scheduler is not None else None
    folder = (getattr(outputs, "where", None) or str(outputs.root)) if outputs is not None else None
    click.echo(
        f"{result.reason}: {final_line(control.stats, folder)}; took {fmt_duration(time.monotonic() - started)}",
        err=True,
    )
    click.echo(
        f"job: {c['succeeded']}/{c['total']} succeeded, {c['failed']} failed, {c['pending'] + c['running']} pending",
        err=True,
    )
    if control.batch is not None:
        click.echo(batch_line(control.batch, control.stats), err=True)
    return result.exit_code


def _status(manifest: Path, db: str | None) -> dict[str, Any]:
    """The job's status: read from an SQLite file with sqlite3 when it can be (no SQLAlchemy to
    import: most of the command's time), else through the store, which also says what is wrong."""
    from batchfuse.plan.manifest import load_manifest
    from batchfuse.store.lite import sqlite_status

    info = sqlite_status(db, manifest, load_manifest(manifest).job)
    if info is None:
        from batchfuse.review.reading import job_status

        info = job_status(manifest, db)
    return info


@main.command()
@manifest_arg
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(manifest: Path, db: str | None, as_json: bool) -> None:
    """Counts per state, errors grouped by cause, and recent runs."""
    info = _status(manifest, db)
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    items = info["items"]
    click.echo(f"job {info['job']}: {plural(items['total'], 'item')}")
    for state in ("succeeded", "failed", "pending", "running"):
        click.echo(f"  {state:<10} {items[state]}")
    if items["orphaned"]:
        click.echo(f"  {'orphaned':<10} {items['orphaned']} (claimed by a runner that died; they run next time)")
    if items["removed"]:
        click.echo(f"  {'removed':<10} {items['removed']} (no longer in the manifest)")
    if items.get("in_batch"):
        click.echo(f"  {'in batch':<10} {items['in_batch']} (submitted in a batch that has not ended)")
    review = info.get("verdicts") or {}
    if review.get("approved") or review.get("rejected"):
        click.echo(f"review: {review['approved']} approved, {review['rejected']} rejected, {review['unjudged']} not judged")
    share = f" ({100 * info['rate_limited'] / info['attempts']:.1f}%)" if info["attempts"] else ""
    click.echo(f"attempts: {info['attempts']}, rate limited (429): {info['rate_limited']}{share}, tokens: {info['tokens']}")
    left = items["pending"] + items["running"] + items["orphaned"]
    if not left:
        click.echo("nothing left to do" + (" (`run --retry-failed` gives the failed items another go)"
                                           if items["failed"] else ""))
    elif info["items_per_s"]:
        click.echo(f"throughput (last run): {info['items_per_s'] * 60:.1f} items/min; "
                   f"ETA for what is left: {fmt_duration(info['eta_s'])}")
    if info["errors"]:
        click.echo("errors by cause:")
        for e in info["errors"]:
            click.echo(f"  {e['items']:>5} × [{e['class']}] {e['message']} (e.g. {e['example']})")
    if info.get("batches"):
        click.echo(batches_text(info["batches"]))
    if info["runs"]:
        click.echo("recent runs:")
        for r in info["runs"]:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"]))
            state = f"live, {r['in_flight']} in flight" if r["live"] else (r["exit_reason"] or "dead (no heartbeat)")
            click.echo(f"  {when} pid {r['pid']} on {r['host']}: {r['succeeded']} ok, {r['failed']} failed — {state}")


@main.group()
def batches() -> None:
    """The job's batches (batch mode)."""


@batches.command("cancel")
@manifest_arg
@db_option
def batches_cancel(manifest: Path, db: str | None) -> None:
    """Cancel the job's live batches; their items go back to pending."""
    from batchfuse.run.job import RunOptions, cancel_batches

    n, returned = asyncio.run(cancel_batches(manifest, RunOptions(db=db)))
    click.echo(f"cancelled {plural(n, 'batch', 'batches')}; {plural(returned, 'item')} pending again")


@main.group()
def db() -> None:
    """The job database."""


@db.command("upgrade")
@click.option("--db", "url", metavar="PATH_OR_URL", envvar="BATCHFUSE_DB", required=True,
              help="Database path or SQLAlchemy URL (or BATCHFUSE_DB).")
def db_upgrade(url: str) -> None:
    """Create or upgrade the schema (runs also do this by themselves)."""
    from batchfuse.store.engine import (
        create_store_engine,
        current_revision,
        db_url,
        describe_url,
        translated,
        upgrade,
    )

    resolved = db_url(url)
    engine = create_store_engine(resolved)
    try:
        with translated(resolved):
            applied = upgrade(engine, resolved)
            state = "upgraded to" if applied else "already at"
            click.echo(f"{describe_url(resolved)}: {state} revision {current_revision(engine)}")
    finally:
        engine.dispose()





if __name__ == "__main__":  # pragma: no cover
    main()

