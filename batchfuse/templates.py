"""``{field}`` templates for prompts, image paths, output names and item keys, and the short
forms of user text that messages quote.

The syntax is Python's ``str.format`` restricted to plain field names (``{sku}``) with at most
a small width (``{n:03d}``, ``{sku:>8}``): attribute and index lookups (``{x.__class__}``),
conversions (``{x!r}``), nested fields and large widths (``{title:1000000000}`` would build a
gigabyte) are refused, so a manifest cannot reach into Python objects or eat memory.  A
filled template is at most :data:`MAX_RENDERED_CHARS` long.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

_formatter = string.Formatter()
#: The format specs a template may use: optional fill/align, zero padding, a width up to 99,
#: and the integer type ``d``.
SAFE_SPEC = re.compile(r"^(?:.?[<>^])?0?[0-9]{0,2}d?$")
#: Longest text a template may produce (a prompt or a path is far shorter).
MAX_RENDERED_CHARS = 1_000_000


class TemplateProblem(ValueError):
    """A template is malformed or names a field the item does not have."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def shorten(text: str, limit: int = 80) -> str:
    """``text`` for a one-line message: control characters escaped, at most ``limit`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def listing(names: Iterable[str], limit: int = 20) -> str:
    """``a, b, c`` for a message, at most ``limit`` names, then ``and N more``."""
    names = list(names)
    shown = ", ".join(shorten(n, 40) for n in names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


@lru_cache(maxsize=1024)
def fields_of(template: str) -> tuple[str, ...]:
    """The field names ``template`` uses, in order; raises :class:`TemplateProblem` if malformed."""
    names: list[str] = []
    shown = shorten(repr(template))
    try:
        parsed = list(_formatter.parse(template))
    except ValueError as exc:
        raise TemplateProblem(f"malformed template {shown}: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise TemplateProblem(f"template {shown} uses {{{shorten(name, 40)}}}: only plain field names are allowed", name)
        if conversion:
            raise TemplateProblem(f"template {shown}: conversions like !{conversion} are not allowed", name)
        if spec and not SAFE_SPEC.match(spec):
            raise TemplateProblem(
                f"template {shown}: format {{{name}:{shorten(spec, 20)}}} is not allowed; "
                "use {name}, or a width up to 99 like {n:03d}",
                name,
            )
        names.append(name)
    return tuple(names)


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill ``template`` from ``values``; a missing field raises :class:`TemplateProblem` naming it."""
    names = fields_of(template)
    size = len(template)
    for name in names:
        if name not in values:
            raise TemplateProblem(
                f"template {shorten(repr(template))} names unknown field {{{name}}} (fields: {listing(sorted(values)) or 'none'})",
                name,
            )
        size += len(str(values[name])) + 100
    if size > MAX_RENDERED_CHARS:
        raise TemplateProblem(f"template {shorten(repr(template))} makes text longer than {MAX_RENDERED_CHARS:,} characters")
    try:
        return template.format_map(values)
    except (ValueError, TypeError) as exc:
        raise TemplateProblem(f"template {shorten(repr(template))} cannot be filled: {exc}") from None
