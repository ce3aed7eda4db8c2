"""Reading a manifest's YAML strictly: bounded, unambiguous, and never silently changed.

PyYAML's safe loader is kept for the grammar, with these rules added while the document is
composed, before any Python object is built:

- a key repeated in one mapping is refused (YAML would keep only the last one, so a second
  ``items:`` block pasted below the first would silently replace it);
- nesting deeper than :data:`MAX_DEPTH`, and anchors/aliases that expand to more than
  :data:`MAX_VALUES` values or refer to themselves, are refused ("billion laughs");
- numbers must be finite (``.inf``/``.nan`` are refused) and at most :data:`MAX_NUMBER_CHARS`
  characters long; strings must be text (no lone UTF-16 surrogates such as ``"\\ud800"``);
- a plain scalar is typed (number, true/false) only when that reads back exactly as written:
  ``010`` (octal 8 in YAML 1.1), ``0012``, ``1.10``, ``12:30`` (base 60), ``yes``/``no``/``NO``
  and dates stay the text as written, and an item's ``id`` is always the text as written.

Every refusal names the line and the field path (``items[3].aspect_ratio``).
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: Deepest nesting of lists and mappings (a manifest needs about five).
MAX_DEPTH = 64
#: Most values a manifest may hold once its aliases are expanded.
MAX_VALUES = 1_000_000
#: Longest number, in characters; a longer one is refused rather than parsed.
MAX_NUMBER_CHARS = 50

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _TIMESTAMP = (_TAG + t for t in ("str", "int", "float", "bool", "timestamp"))
_MERGE = _TAG + "merge"


class YamlProblem(ValueError):
    """A rule above is broken at ``line`` (1-based) in the field ``path``."""

    def __init__(self, line: int | None, path: str, message: str) -> None:
        super().__init__(message)
        self.line, self.path = line, path


def show_path(parts: list[str | int], limit: int = 8) -> str:
    """``items[3].aspect_ratio``; a very deep path keeps its first parts and ends in ``…``."""
    text = ""
    for part in parts[:limit]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text + ("…" if len(parts) > limit else "")


def _not_text(value: str) -> str | None:
    """A description of the first lone surrogate in ``value``, or None if it is proper text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"\\u{ord(value[exc.start]):04x}"
    return None


def _as_written(node: ScalarNode, explicit: bool, is_id: bool) -> str | None:
    """The problem with a scalar, or None; retags it as text where typing would change it."""
    if node.tag == _STR or node.style is not None or explicit:
        return None
    text = node.value
    if is_id and node.tag != _TAG + "null":
        node.tag = _STR
        return None
    if node.tag in (_INT, _FLOAT):
        if node.tag == _FLOAT and text.lower().lstrip("+-") in (".inf", ".nan"):
            return f"{text} is not a finite number"
        if len(text) > MAX_NUMBER_CHARS:
            return f"a number of {len(text):,} characters is out of range; quote it if it is text"
        exact = text == str(int(text)) if node.tag == _INT and text.lstrip("-").isdigit() else (
            node.tag == _FLOAT and _float_reads_back(text)
        )
        if not exact:
            node.tag = _STR
    elif (node.tag == _BOOL and text.lower() not in ("true", "false")) or node.tag == _TIMESTAMP:
        node.tag = _STR
    return None


def _float_reads_back(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and repr(value) == text


class StrictLoader(yaml.SafeLoader):
    """The safe loader with the rules of this module applied while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[str | int] = []

    def _fail(self, node_or_mark: Any, path: list[str | int], message: str) -> YamlProblem:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        return YamlProblem(mark.line + 1 if mark is not None else None, show_path(path), message)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if isinstance(index, int):
            part: str | int | None = index
        elif isinstance(index, ScalarNode):
            part = index.value
        elif isinstance(index, Node):
            part = "?"
        else:
            part = None  # the root, or a mapping key
        if part is not None:
            self._path.append(part)
        try:
            if len(self._path) > MAX_DEPTH:
                raise self._fail(self.peek_event().start_mark, self._path, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            if part is not None:
                self._path.pop()

    def compose_scalar_node(self, anchor: str | None) -> ScalarNode:
        explicit = self.peek_event().tag not in (None, "!")
        node = super().compose_scalar_node(anchor)
        where = self._path
        bad = _not_text(node.value)
        if bad:
            raise self._fail(node, where, f"contains a lone UTF-16 surrogate ({bad}), which is not text")
        is_id = len(where) == 3 and where[0] == "items" and where[2] == "id"
        problem = _as_written(node, explicit, is_id)
        if problem:
            raise self._fail(node, where, problem)
        return node

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], int] = {}
        for key, _value in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE:
                continue
            ident = (key.tag, key.value)
            if ident in seen:
                raise self._fail(
                    key, [*self._path, key.value],
                    f"repeated key (first at line {seen[ident]}); YAML would keep only the last, so remove one",
                )
            seen[ident] = key.start_mark.line + 1
        return node


def check_expansion(root: Node) -> None:
    """Refuse aliases that refer to their own ancestors or expand the document beyond
    :data:`MAX_VALUES` values or :data:`MAX_DEPTH` levels (iterative: no recursion limit)."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once finished
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            open_.discard(key)
            values = 1 + sum(sizes[id(c)][0] for c in children)
            depth = 1 + max((sizes[id(c)][1] for c in children), default=0)
            if values > MAX_VALUES:
                raise YamlProblem(
                    node.start_mark.line + 1, "",
                    f"expands to more than {MAX_VALUES:,} values (through anchors and aliases); "
                    "put large item lists in a catalog (items_from)",
                )
            if depth > MAX_DEPTH:
                raise YamlProblem(node.start_mark.line + 1, "", f"nested more than {MAX_DEPTH} levels deep (through aliases)")
            sizes[key] = (values, depth)
            continue
        if key in sizes:
            continue
        if key in open_:
            raise YamlProblem(node.start_mark.line + 1, "", "an alias refers to a list or mapping that contains it")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return None


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse(text: str) -> Any:
    """The document in ``text`` as Python data; raises :class:`YamlProblem` for a broken rule
    and ``yaml.YAMLError`` for a syntax error."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
