"""``batchfuse report`` and ``batchfuse export``: the morning review of a job, read-only.

Both commands read the store and the output folder and change neither.  They live apart
from :mod:`batchfuse.cli` (which registers them with ``main.add_command``) and must not
import it, or the registration would be circular.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from batchfuse.outputs.objectstore import Location
from batchfuse.plan.planner import Planner
from batchfuse.records import Job
from batchfuse.review.export import WRITERS, atomic_text_file, write_export
from batchfuse.review.objects import BucketOutputs
from batchfuse.review.own_files import check_not_own_file
from batchfuse.review.reading import reading_job
from batchfuse.review.report import summary_line, thumbs_dir_for, write_report
from batchfuse.store.queries import Store
from batchfuse.store.verdicts import standing_verdicts

manifest_arg = click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
db_option = click.option(
    "--db",
    metavar="PATH_OR_URL",
    help="Database path or SQLAlchemy URL (default: batchfuse.db beside the manifest).",
)


@dataclass(frozen=True)
class ReviewedJob:
    """A job that has been run: its store (open), its record and its output folder."""

    store: Store
    job: Job
    output_dir: Path
    #: For outputs in a bucket: where they are (else None), and the folder or URL as shown.
    location: Location | None = None
    shown: str = ""


@contextmanager
def open_job(manifest: Path, db: str | None) -> Iterator[ReviewedJob]:
    """The job of ``manifest`` opened for reading, with its output folder."""
    with reading_job(manifest, db) as (m, store, job):
        planner = Planner(m, manifest)
        yield ReviewedJob(store, job, planner.output_dir, planner.output_location, planner.output_shown)


def default_report_name(job: str) -> str:
    """``<job>.report.html``, the job's name made safe as a file name: one report per job, so
    two manifests in one folder do not overwrite each other's."""
    return (re.sub(r"[^\w.-]+", "-", job).strip(".-")[:100] or "job") + ".report.html"


@click.command("report")
@manifest_arg
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="The HTML file to write (default: JOB.report.html beside the manifest); thumbnails go in FILE_thumbs/.",
)
@db_option
def report(manifest: Path, output: Path | None, db: str | None) -> None:
    """Write a static HTML contact sheet of the job, with thumbnails; opens from disk."""
    if output is not None:
        check_not_own_file(output, manifest, db, "-o")
    with open_job(manifest, db) as reviewed:
        dest = output or manifest.parent / default_report_name(reviewed.job.name)
        counts = reviewed.store.shown_counts(reviewed.job)
        remote = BucketOutputs(reviewed.location) if reviewed.location is not None else None
        try:
            result = write_report(
                _with_verdicts(reviewed),
                counts=counts,
                job_name=reviewed.job.name,
                output_dir=remote.mirror if remote is not None else reviewed.output_dir,
                manifest_dir=manifest.resolve().parent,
                dest=dest,
                remote=remote,
            )
        finally:
            if remote is not None:
                remote.close()
    if any(result.items[s] != counts.get(s, 0) for s in result.items):
        click.echo(
            "warning: the job changed while the report was written (is a run live?); "
            "the counts at the top are the store's from the start",
            err=True,
        )
    click.echo(summary_line(result))


@click.command("export")
@manifest_arg
@click.option("--format", "fmt", type=click.Choice(sorted(WRITERS)), required=True, help="Output format.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Write here instead of standard output ('-' is standard output).",
)
@click.option("--approved", "only", flag_value="approve", help="Only the items approved in the review.")
@click.option("--rejected", "only", flag_value="reject", help="Only the items rejected in the review.")
@db_option
def export(manifest: Path, fmt: str, output: Path | None, db: str | None, only: str | None = None) -> None:
    """One row per item (key, state, attempts, outputs, sha256, error, tokens, verdict) as CSV or JSON Lines."""
    if output is not None and str(output) != "-":
        check_not_own_file(output, manifest, db, "-o")
    with open_job(manifest, db) as reviewed, _destination(output) as out:
        rows = _with_verdicts(reviewed)
        if only:
            rows = (row for row in rows if row.get("verdict") == only)
        write_export(rows, fmt, reviewed.shown or reviewed.output_dir, out)


def _with_verdicts(reviewed: ReviewedJob) -> Iterator[dict[str, Any]]:
    """The job's item rows, each judged one with its standing verdict and pick from the review."""
    judged = standing_verdicts(reviewed.store, reviewed.job)
    for row in reviewed.store.item_rows(reviewed.job):
        hit = judged.get(row["key"])
        yield {**row, "verdict": hit[0], "pick": hit[1]} if hit else row


@contextmanager
def _destination(output: Path | None) -> Iterator[TextIO]:
    """Standard output (always UTF-8, whatever the locale) or a file written atomically."""
    if output is not None and str(output) != "-":
        with atomic_text_file(output) as f:
            yield f
        return
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # an embedding replaced stdout with a text-only stream: use it as it is
        yield sys.stdout
        sys.stdout.flush()
        return
    sys.stdout.flush()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
    try:
        yield stream
        stream.flush()
    finally:
        try:
            stream.detach()  # leave sys.stdout's buffer open for whoever writes after us
        except ValueError:
            pass


@click.command("review")
@manifest_arg
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--token", metavar="TOKEN", help="The token state-changing requests must send (default: a random one).")
@db_option
def review(manifest: Path, host: str, port: int, token: str | None, db: str | None) -> None:
    """Serve the review page: approve, reject (with a note, a prompt line, a new seed), pick; prints the URL."""
    import asyncio

    from batchfuse.errors import InputError
    from batchfuse.plan.preview import cost_per_image
    from batchfuse.review.api import ReviewContext
    from batchfuse.review.picking import settle_all
    from batchfuse.review.server import is_loopback, serve, token_for

    if not is_loopback(host):
        if not token:
            raise InputError(f"--host {host} is not a loopback address: give --token too (anyone who can reach it could judge)")
        click.echo(f"warning: serving on {host}, reachable from other machines; the token guards every change", err=True)
    with reading_job(manifest, db, writable=True) as (m, store, job):
        planner = Planner(m, manifest)
        # a pick whose files a crash left half moved is finished before anything is shown
        picks = {key: pick for key, (_, pick) in standing_verdicts(store, job).items() if pick}
        settle_all(store, job, planner.output_dir, picks)
        ctx = ReviewContext(
            store=store, job=job, output_dir=planner.output_dir, manifest_dir=manifest.resolve().parent,
            thumbs_dir=thumbs_dir_for((manifest.parent / default_report_name(job.name)).resolve()),
            token=token_for(token), bucket=planner.output_location,
            # money per image as the run counts it (the item count plays no part in it)
            cost_per_image=cost_per_image(planner),
        )

        def announce(url: str) -> None:
            click.echo(f"review of job {job.name}: {url} (Ctrl-C stops it)")
            sys.stdout.flush()

        try:
            asyncio.run(serve(ctx, host, port, announce))
        except KeyboardInterrupt:
            click.echo("review stopped", err=True)
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
