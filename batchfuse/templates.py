"""``{field}`` templates for prompts, image paths, output names and item keys.

The syntax is Python's ``str.format`` restricted to plain field names (``{sku}``,
``{n:03d}``): attribute and index lookups (``{x.__class__}``) are refused, so a manifest
cannot reach into Python objects.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

_formatter = string.Formatter()


class TemplateProblem(ValueError):
    """A template is malformed or names a field the item does not have."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@lru_cache(maxsize=1024)
def fields_of(template: str) -> tuple[str, ...]:
    """The field names ``template`` uses, in order; raises :class:`TemplateProblem` if malformed."""
    names: list[str] = []
    try:
        parsed = list(_formatter.parse(template))
    except ValueError as exc:
        raise TemplateProblem(f"malformed template {template!r}: {exc}") from None
    for _literal, name, _spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise TemplateProblem(
                f"template {template!r} uses {{{name}}}: only plain field names are allowed", name
            )
        if conversion:
            raise TemplateProblem(f"template {template!r}: conversions like !{conversion} are not allowed", name)
        names.append(name)
    return tuple(names)


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill ``template`` from ``values``; a missing field raises :class:`TemplateProblem` naming it."""
    for name in fields_of(template):
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise TemplateProblem(f"template {template!r} names unknown field {{{name}}} (fields: {known})", name)
    try:
        return template.format_map(values)
    except (ValueError, TypeError) as exc:
        raise TemplateProblem(f"template {template!r} cannot be filled: {exc}") from None
