"""Reading catalog files (CSV with a header row, or JSONL) into rows of fields, strictly.

Nothing in a catalog is silently dropped, merged or reinterpreted: a CSV row with more or
fewer cells than the header, a header naming a column twice, an unclosed quote, a JSON object
repeating a key, a NUL byte, text that is not UTF-8, a non-finite or over-long number, or a
lone UTF-16 surrogate is refused with the file, the row and the field.  A UTF-8 BOM is
dropped, and LF, CRLF and lone-CR line endings (even mixed) all end a line.  Every read is
bounded: lines of at most :data:`MAX_LINE_BYTES`, at most :data:`MAX_COLUMNS` columns.

Row numbers count lines as an editor or a spreadsheet does (header = 1); a record whose
quoted cell spans several lines is named by the line it starts on.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from typing import Any, BinaryIO

from batchfuse.errors import ManifestError
from batchfuse.templates import listing, shorten

#: Longest line (and longest CSV cell) read from a catalog.
MAX_LINE_BYTES = 1024 * 1024
#: Most columns a CSV header may name.
MAX_COLUMNS = 1_000
#: Longest number in a JSONL catalog, in characters; a longer one is refused, not parsed.
MAX_NUMBER_CHARS = 50
#: In a CSV catalog, an ``images`` column lists several paths separated by this.
CSV_LIST_SEPARATOR = ";"

Row = tuple[int, dict[str, Any]]


def _lines(f: BinaryIO, shown: str) -> Iterator[tuple[int, str] | ManifestError]:
    """The file's lines decoded as UTF-8, split at LF, CRLF or a lone CR, or an error naming the row."""
    number = 0
    while True:
        raw = f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES:
            yield ManifestError(shown, f"a line longer than {MAX_LINE_BYTES // 1024:,} KiB", row=number + 1)
            return
        for part in raw.splitlines(keepends=True):
            number += 1
            nul = part.find(b"\x00")
            if nul >= 0:
                utf16 = number == 1 and part[:2] in (b"\xff\xfe", b"\xfe\xff")
                hint = "it looks like UTF-16, save it as UTF-8" if utf16 else "is it a text file?"
                yield ManifestError(shown, f"contains a NUL byte (column {nul + 1}); {hint}", row=number)
                return
            try:
                line = part.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield ManifestError(
                    shown, f"not UTF-8 text (byte {part[exc.start]:#04x} at column {exc.start + 1}); save it as UTF-8",
                    row=number,
                )
                return
            yield number, line.removeprefix("\ufeff") if number == 1 else line


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "unexpected end of data" in text:
        return 'a quoted cell that starts in this row is never closed (a missing ")'
    if "expected after" in text:
        return 'text after the closing quote of a cell; write a quote inside a quoted cell as ""'
    if "field larger than field limit" in text:
        return f"a cell longer than {MAX_LINE_BYTES // 1024:,} KiB (an unclosed quote?)"
    return "malformed CSV: " + shorten(text.split(" - ")[0])


def csv_rows(f: BinaryIO, shown: str) -> Iterator[Row | ManifestError]:
    """``(row, fields)`` for each record of a CSV catalog; empty cells are left out."""
    failure: list[ManifestError] = []
    consumed = 0

    def lines() -> Iterator[str]:
        nonlocal consumed
        for entry in _lines(f, shown):
            if isinstance(entry, ManifestError):
                failure.append(entry)
                return
            consumed = entry[0]
            yield entry[1]

    csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.reader(lines(), strict=True)
    header: list[str] | None = None
    rows_seen = False
    while True:
        start = consumed + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            yield failure[0] if failure else ManifestError(shown, _csv_problem(exc), row=start)
            return
        if failure:
            yield failure[0]
            return
        if cells is None:
            break
        if not cells:  # a blank line
            continue
        if header is None:
            problem = _header_problem(cells, shown)
            if problem:
                yield problem
                return
            header = [c.strip() for c in cells]
            continue
        if len(cells) != len(header):
            yield _cell_count_problem(cells, header, shown, start)
            return
        fields: dict[str, Any] = {k: v for k, v in zip(header, cells, strict=True) if v != ""}
        images = fields.get("images")
        if isinstance(images, str):
            fields["images"] = [p.strip() for p in images.split(CSV_LIST_SEPARATOR) if p.strip()]
        rows_seen = True
        yield start, fields
    if header is None:
        yield ManifestError(shown, "the catalog is empty (no header row)")
    elif not rows_seen:
        yield ManifestError(shown, "the catalog has a header but no rows")


def _header_problem(cells: list[str], shown: str) -> ManifestError | None:
    if len(cells) > MAX_COLUMNS:
        return ManifestError(shown, f"the header names {len(cells):,} columns; at most {MAX_COLUMNS:,} are read", row=1)
    if len(cells) == 1 and len(separators := [c for c in ";\t|" if c in cells[0]]) == 1:
        return ManifestError(
            shown, f"the header is one column {shorten(repr(cells[0]), 60)}; cells are separated by commas, "
            f"not {'tabs' if separators[0] == chr(9) else repr(separators[0])}: save the file as comma-separated CSV",
            row=1,
        )
    first: dict[str, int] = {}
    for i, name in enumerate(c.strip() for c in cells):
        if not name:
            return ManifestError(shown, f"column {i + 1} has no name; name it or delete the column", row=1)
        if name in first:
            return ManifestError(
                shown, f"the header names this column twice (columns {first[name] + 1} and {i + 1})",
                field=shorten(name, 60), row=1,
            )
        first[name] = i
    return None


def _cell_count_problem(cells: list[str], header: list[str], shown: str, row: int) -> ManifestError:
    counts = f"the row has {len(cells):,} cells, the header {len(header):,} columns"
    if len(cells) > len(header):
        extra = shorten(repr(",".join(cells[len(header):])), 60)
        return ManifestError(
            shown, f"{counts}; {extra} follows this cell (quote a cell that contains a comma)",
            field=shorten(header[-1], 60), row=row,
        )
    missing = header[len(cells):]
    return ManifestError(
        shown, f"{counts}; no cell for {listing(missing, 5)} (write empty cells as ,,)",
        field=shorten(missing[0], 60), row=row,
    )


class _Refused(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class _Bad:
    """A value the JSON parser met that is not acceptable; found afterwards with its field."""

    def __init__(self, message: str) -> None:
        self.message = message


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise _Refused("repeated key in one object; JSON readers keep only the last, so remove one", key)
        record[key] = value
    return record


def _int(text: str) -> int | _Bad:
    if len(text) > MAX_NUMBER_CHARS:
        return _Bad(f"a number of {len(text):,} characters is out of range; write it as a string if it is text")
    return int(text)


def _float(text: str) -> float | _Bad:
    value = float(text) if len(text) <= MAX_NUMBER_CHARS else math.inf
    return value if math.isfinite(value) else _Bad(f"{shorten(text, 20)} is not a finite number (or out of range)")


def _constant(text: str) -> _Bad:
    return _Bad(f"{text} is not a finite number")


def _bad_value(record: dict[str, Any]) -> tuple[str, str] | None:
    """(field, problem) of the first unacceptable value: a :class:`_Bad` number, or a string
    (or key) holding a lone UTF-16 surrogate; else None."""
    stack: list[tuple[str, Any]] = [(k, v) for k, v in record.items()] + [(k, k) for k in record]
    while stack:
        field, value = stack.pop()
        if isinstance(value, _Bad):
            return field, value.message
        if isinstance(value, dict):
            stack.extend((field, v) for pair in value.items() for v in pair)
        elif isinstance(value, list):
            stack.extend((field, v) for v in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return field, f"contains a lone UTF-16 surrogate (\\u{ord(value[exc.start]):04x}), which is not text"
    return None


def jsonl_rows(f: BinaryIO, shown: str) -> Iterator[Row | ManifestError]:
    """``(row, fields)`` for each non-blank line of a JSONL catalog; nulls are left out."""
    rows_seen = False
    for entry in _lines(f, shown):
        if isinstance(entry, ManifestError):
            yield entry
            return
        number, line = entry
        if not line.strip():
            continue
        try:
            record = json.loads(
                line, object_pairs_hook=_object, parse_int=_int, parse_float=_float, parse_constant=_constant
            )
        except _Refused as exc:
            yield ManifestError(shown, str(exc), field=shorten(exc.field, 60) if exc.field else None, row=number)
            return
        except json.JSONDecodeError as exc:
            yield ManifestError(shown, f"not valid JSON: {exc.msg} (column {exc.colno})", row=number)
            return
        except RecursionError:
            yield ManifestError(shown, "not valid JSON: nested too deeply", row=number)
            return
        if not isinstance(record, dict):
            yield ManifestError(shown, "each line must be a JSON object", row=number)
            return
        bad = _bad_value(record)
        if bad:
            yield ManifestError(shown, bad[1], field=shorten(bad[0], 60), row=number)
            return
        rows_seen = True
        yield number, {k: v for k, v in record.items() if v is not None}
    if not rows_seen:
        yield ManifestError(shown, "the catalog has no rows")
