"""Export a job's items as CSV or JSON Lines, one row per item, for spreadsheets and scripts.

Rows are written as the store yields them (a page at a time), so a 100k-item job never sits
in memory.  Output paths are exported exactly as stored (relative to the output folder) with
the folder itself in an ``output_dir`` column: the pair stays correct when the folder moves;
``urls`` gives each output whole (``s3://bucket/prefix/name``, or a ``file://`` URL).
Nothing here can carry a key: the store holds none, and error messages are scrubbed again.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from batchfuse.errors import InputError, OutputError, scrub
from batchfuse.outputs.atomic import atomic_file, temp_name

#: Columns of the CSV and fields of each JSON line, in this order.
COLUMNS = (
    "key",
    "state",
    "attempts",
    "output_dir",
    "outputs",
    "urls",
    "sha256",
    "error_class",
    "last_error",
    "tokens",
    "verdict",
    "pick",
)
#: Joins several outputs (and their digests) in one CSV cell; JSON Lines keeps real lists.
CSV_JOIN = ";"


def output_url(output_dir: str, name: str) -> str:
    """Where an output is, whole: ``s3://bucket/prefix/name`` in object storage, a ``file://``
    URL of the absolute path in a local folder."""
    if output_dir.startswith("s3://"):
        return output_dir.rstrip("/") + "/" + name
    return (Path(output_dir) / name).absolute().as_uri()


def export_record(row: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """One store row (from ``Store.item_rows``) as the exported record.

    ``last_error`` goes through :func:`scrub` although the store only keeps scrubbed
    messages: an export is meant to be shared, so it gets a second check of its own.
    """
    outputs = row.get("outputs") or []
    error = row.get("last_error")
    return {
        "key": row["key"],
        "state": row["state"],
        "attempts": int(row.get("attempts") or 0),
        "output_dir": output_dir,
        "outputs": [o["path"] for o in outputs],
        "urls": [output_url(output_dir, o["path"]) for o in outputs],
        "sha256": [o["sha256"] for o in outputs],
        "error_class": row.get("error_class"),
        "last_error": scrub(error) if error else None,
        "tokens": int(row.get("tokens") or 0),
        "verdict": row.get("verdict"),
        "pick": row.get("pick"),
    }


def write_jsonl(rows: Iterable[dict[str, Any]], output_dir: str, out: TextIO) -> int:
    """One JSON object per line; returns the number of items written."""
    n = 0
    for row in rows:
        out.write(json.dumps(export_record(row, output_dir), ensure_ascii=False) + "\n")
        n += 1
    return n


def write_csv(rows: Iterable[dict[str, Any]], output_dir: str, out: TextIO) -> int:
    """A header and one line per item; lists joined with ``;``; returns the number of items.

    Lines end in ``\\n`` rather than the csv module's default ``\\r\\n`` so that the
    output pipes cleanly into ``grep``, ``wc -l`` and friends; spreadsheets read both.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for row in rows:
        record = export_record(row, output_dir)
        writer.writerow([_csv_cell(record[c]) for c in COLUMNS])
        n += 1
    return n


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return CSV_JOIN.join(str(v) for v in value)
    return value


#: ``--format`` values and their writers.
WRITERS: dict[str, Callable[[Iterable[dict[str, Any]], str, TextIO], int]] = {
    "csv": write_csv,
    "jsonl": write_jsonl,
}


def write_export(rows: Iterable[dict[str, Any]], fmt: str, output_dir: Path | str, out: TextIO) -> int:
    """Write ``rows`` to ``out`` in format ``fmt`` (``csv`` or ``jsonl``); returns the item count."""
    try:
        writer = WRITERS[fmt]
    except KeyError:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(WRITERS)}") from None
    return writer(rows, str(output_dir), out)


@contextmanager
def atomic_text_file(path: Path) -> Iterator[TextIO]:
    """A UTF-8 text file that appears under ``path`` only once it is complete.

    A report or export cut short (an error, Ctrl-C, a full disk) must not leave a truncated
    file that looks finished, nor destroy the previous complete one: we write a temp file
    beside it and rename it into place.
    """
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    try:
        with atomic_file(path, "w", encoding="utf-8", errors="replace", newline="") as f:
            yield f
    except OSError as exc:  # read-only folder, disk full: one line, not a traceback
        where = path if exc.filename in (None, str(temp_name(path))) else exc.filename
        raise OutputError(f"cannot write {where}: {exc.strerror or exc}; choose another place with -o") from None
