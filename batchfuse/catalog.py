"""Where items come from: inline in the manifest, rows of a CSV or JSONL catalog, a matrix,
or a catalog (or inline list) crossed with a matrix.

Each source yields raw items — their fields before templating — one at a time, so a catalog
of 100,000 rows is never held in memory.  A row that cannot be read becomes a
:class:`~batchfuse.errors.ManifestError` naming the catalog file and the row; the planner
collects those with every other problem.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchfuse.errors import ManifestError
from batchfuse.manifest import Manifest
from batchfuse.templates import TemplateProblem, render

#: In a CSV catalog, an ``images`` column lists several paths separated by this.
CSV_LIST_SEPARATOR = ";"


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
        label = self.key if self.key is not None else f"#{self.ordinal + 1}"
        return ManifestError(self.file, message, item=label, field=field, row=self.row)


def raw_items(manifest: Manifest, manifest_path: Path) -> Iterator[RawItem | ManifestError]:
    """Every raw item of the manifest in plan order, crossed with its matrix if it has one."""
    base = _base_items(manifest, manifest_path)
    if not manifest.matrix:
        yield from base
        return
    names = list(manifest.matrix)
    combos = list(itertools.product(*manifest.matrix.values()))
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
            key = str(raw["id"]) if isinstance(raw, dict) and raw.get("id") not in (None, "") else None
            yield RawItem(i, shown, None, key, raw if isinstance(raw, dict) else {})
    elif manifest.items_from is not None:
        yield from _catalog(manifest, manifest_path)
    else:  # a matrix on its own: one empty base item it is crossed with
        yield RawItem(0, shown, None, "", {})


def _catalog(manifest: Manifest, manifest_path: Path) -> Iterator[RawItem | ManifestError]:
    spec = manifest.items_from
    assert spec is not None
    path = (manifest_path.parent / spec.file).resolve()
    shown = spec.file
    if not path.is_file():
        yield ManifestError(str(manifest_path), f"catalog {shown} not found", field="items_from.file")
        return
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path, shown)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path, shown)
    else:
        yield ManifestError(str(manifest_path), "a catalog is a .csv or .jsonl file", field="items_from.file")
        return
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


def _text_lines(path: Path, shown: str) -> Iterator[tuple[int, str] | ManifestError]:
    """The file's lines decoded as UTF-8 (a BOM is dropped), or an error naming the row."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield ManifestError(
                    shown, f"not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}); save it as UTF-8",
                    row=number,
                )
                return
            yield number, line.removeprefix("\ufeff") if number == 1 else line


def _csv_rows(path: Path, shown: str) -> Iterator[tuple[int, dict[str, Any]] | ManifestError]:
    failure: list[ManifestError] = []

    def lines() -> Iterator[str]:
        for entry in _text_lines(path, shown):
            if isinstance(entry, ManifestError):
                failure.append(entry)
                return
            yield entry[1]

    reader = csv.DictReader(lines())
    try:
        if not reader.fieldnames:
            yield failure[0] if failure else ManifestError(shown, "the catalog is empty (no header row)")
            return
        for record in reader:
            fields = {k: v for k, v in record.items() if k is not None and v is not None and v != ""}
            images = fields.get("images")
            if isinstance(images, str):
                fields["images"] = [p.strip() for p in images.split(CSV_LIST_SEPARATOR) if p.strip()]
            yield reader.line_num, fields
    except csv.Error as exc:
        yield ManifestError(shown, f"malformed CSV: {exc}", row=reader.line_num)
        return
    if failure:
        yield failure[0]


def _jsonl_rows(path: Path, shown: str) -> Iterator[tuple[int, dict[str, Any]] | ManifestError]:
    for entry in _text_lines(path, shown):
        if isinstance(entry, ManifestError):
            yield entry
            return
        number, line = entry
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            yield ManifestError(shown, f"not valid JSON: {exc.msg} (column {exc.colno})", row=number)
            return
        if not isinstance(record, dict):
            yield ManifestError(shown, "each line must be a JSON object", row=number)
            return
        yield number, {k: v for k, v in record.items() if v is not None}
