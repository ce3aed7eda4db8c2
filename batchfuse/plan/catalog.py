"""Where items come from: inline in the manifest, rows of a CSV or JSONL catalog, a matrix,
or a catalog (or inline list) crossed with a matrix.

Each source yields raw items — their fields before templating — one at a time, so a catalog
of 100,000 rows is never held in memory (the files are read by :mod:`batchfuse.plan.catalog_files`).
A row that cannot be read becomes a :class:`~batchfuse.errors.ManifestError` naming the
catalog file and the row; the planner collects those with every other problem.  Item keys
are printable text without spaces at either end, and a plan holds at most
:data:`MAX_ITEMS` items.
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchfuse.errors import ManifestError
from batchfuse.inputfiles import MAX_CATALOG_BYTES, FileProblem, open_regular
from batchfuse.plan.catalog_files import csv_rows, jsonl_rows
from batchfuse.plan.manifest import Manifest
from batchfuse.templates import TemplateProblem, render, shorten

#: Most items one manifest may plan (catalog rows times matrix combinations).
MAX_ITEMS = 1_000_000
#: Longest item key (it names files, log lines and database rows).
MAX_KEY_CHARS = 500
#: Invisible characters that reorder text on screen (a key would not read as it is).
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an item key, or None: keys name files and log lines, so they
    must be printable text (a newline would forge a log line) without spaces at the ends."""
    if not key.strip():
        return "is empty"
    for c in key:
        if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in _BIDI:
            return f"contains the control character {shorten(repr(c))}; an id must be printable text"
    if key != key.strip():
        return "has spaces at its start or end"
    if len(key) > MAX_KEY_CHARS:
        return f"is {len(key):,} characters long; at most {MAX_KEY_CHARS} are allowed"
    return None


@dataclass(frozen=True)
class RawItem:
    """One item's own fields, where it came from, and its stable key (None if it has none)."""

    ordinal: int
    file: str
    #: The row number in a catalog (as a spreadsheet counts, header = 1), else None.
    row: int | None
    key: str | None
    fields: dict[str, Any]

    def error(self, message: str, field: str | None = None) -> ManifestError:
        label = shorten(self.key, 60) if self.key is not None and self.key.strip() else f"#{self.ordinal + 1}"
        return ManifestError(self.file, message, item=label, field=field, row=self.row)


def raw_items(manifest: Manifest, manifest_path: Path) -> Iterator[RawItem | ManifestError]:
    """Every raw item of the manifest in plan order, crossed with its matrix if it has one."""
    field = "items_from.file" if manifest.items_from else "matrix" if manifest.matrix else "items"
    too_many = ManifestError(str(manifest_path), f"more than {MAX_ITEMS:,} items; split the job into several", field=field)
    known = len(manifest.items or [None]) * math.prod(len(v) for v in (manifest.matrix or {}).values())
    if manifest.items_from is None and known > MAX_ITEMS:
        yield too_many
        return
    count = 0
    for entry in _crossed(manifest, manifest_path):
        if isinstance(entry, RawItem):
            count += 1
            if count > MAX_ITEMS:
                yield too_many
                return
            if entry.key is not None:
                problem = key_problem(entry.key)
                if problem:
                    yield entry.error(problem, "id" if manifest.items_from is None or manifest.items_from.key is None else "key")
                    continue
        yield entry


def _crossed(manifest: Manifest, manifest_path: Path) -> Iterator[RawItem | ManifestError]:
    base = _base_items(manifest, manifest_path)
    if not manifest.matrix:
        yield from base
        return
    names = list(manifest.matrix)
    combos = list(itertools.product(*manifest.matrix.values()))  # bounded by the manifest's check
    for entry in base:
        if isinstance(entry, ManifestError):
            yield entry
            continue
        for j, combo in enumerate(combos):
            values = dict(zip(names, combo, strict=True))
            suffix = "~".join(str(v) for v in combo)
            key = None if entry.key is None else (f"{entry.key}~{suffix}" if entry.key else suffix)
            yield RawItem(
                ordinal=entry.ordinal * len(combos) + j,
                file=entry.file,
                row=entry.row,
                key=key,
                fields={**entry.fields, **values},
            )


def _base_items(manifest: Manifest, manifest_path: Path) -> Iterator[RawItem | ManifestError]:
    shown = str(manifest_path)
    if manifest.items:
        for i, raw in enumerate(manifest.items):
            ident = raw.get("id") if isinstance(raw, dict) else None
            if ident is not None and not isinstance(ident, (str, int, float)):
                yield ManifestError(shown, "must be text or a number", item=f"#{i + 1}", field="id")
                continue
            key = str(ident) if ident not in (None, "") else None
            yield RawItem(i, shown, None, key, raw if isinstance(raw, dict) else {})
    elif manifest.items_from is not None:
        yield from _catalog(manifest, manifest_path)
    else:  # a matrix on its own: one empty base item it is crossed with
        yield RawItem(0, shown, None, "", {})


def _catalog(manifest: Manifest, manifest_path: Path) -> Iterator[RawItem | ManifestError]:
    spec = manifest.items_from
    assert spec is not None
    shown = spec.file
    try:
        f = open_regular(manifest_path.parent / spec.file, MAX_CATALOG_BYTES)
    except FileProblem as exc:
        yield ManifestError(str(manifest_path), f"catalog {shorten(shown)} {exc}", field="items_from.file")
        return
    suffix = Path(spec.file).suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        f.close()
        yield ManifestError(str(manifest_path), "a catalog is a .csv or .jsonl file", field="items_from.file")
        return
    with f:
        rows = csv_rows(f, shown) if suffix == ".csv" else jsonl_rows(f, shown)
        for ordinal, entry in enumerate(rows):
            if isinstance(entry, ManifestError):
                yield entry
                return
            row, fields = entry
            if spec.key is None:
                key = fields.get("id")
                if key in (None, ""):
                    yield ManifestError(
                        shown, "is missing; add an id column or set items_from.key (e.g. \"{sku}\")", field="id", row=row
                    )
                    continue
                if not isinstance(key, (str, int, float)):
                    yield ManifestError(shown, "must be text or a number", field="id", row=row)
                    continue
                key = str(key)
            else:
                try:
                    key = render(spec.key, fields)
                except TemplateProblem as exc:
                    yield ManifestError(shown, str(exc), field=exc.field or "key", row=row)
                    continue
            if not key.strip():
                yield ManifestError(shown, "the item key is empty", field="key", row=row)
                continue
            yield RawItem(ordinal, shown, row, key, fields)
