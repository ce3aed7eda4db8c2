"""Templates, strict YAML, item keys and catalog readers as pure functions, by tables."""

from __future__ import annotations

import io

import pytest

from batchfuse.errors import ManifestError
from batchfuse.plan import manifest_yaml
from batchfuse.plan.catalog import key_problem
from batchfuse.plan.catalog_files import csv_rows, jsonl_rows
from batchfuse.templates import TemplateProblem, fields_of, listing, render, shorten


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        ("{item}.png", {"item": "a"}, "a.png"),
        ("{item}_{n:02d}.png", {"item": "a", "n": 2}, "a_02.png"),
        ("{n:03d}", {"n": 7}, "007"),
        ("[{sku:>8}]", {"sku": "A1"}, "[      A1]"),
        ("{{literal}} {x}", {"x": 1}, "{literal} 1"),
    ],
)
def test_templates_fill_plain_fields_and_small_widths(template, values, expected):
    assert render(template, values) == expected


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{title:1000000000}", "format {title:1000000000} is not allowed"),
        ("{title:100}", "format {title:100} is not allowed"),
        ("{title:{width}}", "format {title:{width}} is not allowed"),
        ("{title:.5}", "format {title:.5} is not allowed"),
        ("{title!r}", "conversions like !r are not allowed"),
        ("{title.__class__}", "only plain field names are allowed"),
        ("{title[0]}", "only plain field names are allowed"),
        ("{title", "malformed template"),
    ],
)
def test_templates_refuse_specs_conversions_and_lookups(template, says):
    with pytest.raises(TemplateProblem) as exc:
        fields_of(template)
    assert says in str(exc.value)


def test_a_template_cannot_build_more_than_a_million_characters():
    big = "x" * 400_000
    assert len(render("{a}{a}", {"a": big})) == 800_000
    with pytest.raises(TemplateProblem, match="longer than 1,000,000 characters"):
        render("{a}{a}{a}", {"a": big})


def test_messages_quote_short_printable_text():
    assert shorten("a\nb") == "a\\nb"
    assert shorten("x" * 500, 10) == "x" * 9 + "…"
    assert listing([f"f{i}" for i in range(200_000)]).endswith("f19 and 199,980 more")
    with pytest.raises(TemplateProblem) as exc:
        render("{nope}", {f"field{i}": 1 for i in range(200_000)})
    assert len(str(exc.value)) < 600


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("A1", None),
        ("010", None),
        ("calc-dinner~16:9~studio", None),
        ("让第二张图", None),
        ("a b", None),
        ("a\nb", "contains the control character '\\n'; an id must be printable text"),
        ("a\rb", "contains the control character '\\r'; an id must be printable text"),
        ("a\x00b", "contains the control character '\\x00'; an id must be printable text"),
        ("a\x1b[31mred", "contains the control character '\\x1b'; an id must be printable text"),
        ("a\u2028b", "contains the control character '\\u2028'; an id must be printable text"),
        ("abc\u202egnp.exe", "contains the control character '\\u202e'; an id must be printable text"),
        ("", "is empty"),
        ("   ", "is empty"),
        (" A1", "has spaces at its start or end"),
        ("x" * 500, None),
        ("x" * 501, "is 501 characters long; at most 500 are allowed"),
    ],
)
def test_item_keys_must_be_printable(key, problem):
    assert key_problem(key) == problem


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a: 10", 10),
        ("a: -3", -3),
        ("a: 010", "010"),
        ("a: 0012", "0012"),
        ("a: 0x1F", "0x1F"),
        ("a: 1_000", "1_000"),
        ("a: 12:30", "12:30"),
        ("a: 16:9", "16:9"),
        ("a: 1.5", 1.5),
        ("a: 1.50", "1.50"),
        ("a: true", True),
        ("a: False", False),
        ("a: yes", "yes"),
        ("a: NO", "NO"),
        ("a: off", "off"),
        ("a: 2024-01-01", "2024-01-01"),
        ("a: ~", None),
        ("a: '010'", "010"),
        ("a: !!int '5'", 5),
        ("items: [{id: 010}]", [{"id": "010"}]),
        ("items: [{id: 8}]", [{"id": "8"}]),
        ("items: [{id: 1.50}]", [{"id": "1.50"}]),
    ],
)
def test_plain_scalars_are_typed_only_when_that_reads_back_as_written(text, value):
    data = manifest_yaml.parse(text)
    assert data[text.split(":")[0]] == value
    assert type(data[text.split(":")[0]]) is type(value)


@pytest.mark.parametrize(
    ("text", "line", "path", "says"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "a", "repeated key (first at line 1)"),
        ("x:\n  - {k: 1, k: 2}\n", 2, "x[0].k", "repeated key (first at line 2)"),
        ("a: .inf\n", 1, "a", ".inf is not a finite number"),
        ("a: [-.inf]\n", 1, "a[0]", "-.inf is not a finite number"),
        ("a: .NaN\n", 1, "a", ".NaN is not a finite number"),
        ("a: " + "9" * 51 + "\n", 1, "a", "a number of 51 characters is out of range"),
        ('a: "\\udc00"\n', 1, "a", "lone UTF-16 surrogate (\\udc00)"),
        ("a: " + "[" * 70 + "]" * 70 + "\n", 1, "a[0][0][0][0][0][0][0]…", "nested more than 64 levels deep"),
        ("a: &x [*x]\n", 1, "", "an alias refers to a list or mapping that contains it"),
    ],
)
def test_yaml_rules_name_the_line_and_the_field(text, line, path, says):
    with pytest.raises(manifest_yaml.YamlProblem) as exc:
        manifest_yaml.parse(text)
    assert (exc.value.line, exc.value.path) == (line, path)
    assert says in str(exc.value)


def test_a_long_chain_of_aliases_is_refused_without_a_recursion_error():
    text = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 5000))
    with pytest.raises(manifest_yaml.YamlProblem, match="nested more than 64 levels deep"):
        manifest_yaml.parse(text)


def test_billion_laughs_is_refused_quickly():
    text = "l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10)
    )
    with pytest.raises(manifest_yaml.YamlProblem, match="expands to more than 1,000,000 values"):
        manifest_yaml.parse(text)


def test_merge_keys_may_repeat_keys_they_bring_in():
    data = manifest_yaml.parse("base: &b {x: 1, y: 2}\nitem: {<<: *b, x: 3}\n")
    assert data["item"] == {"x": 3, "y": 2}


def rows(reader, data: bytes) -> list:
    return [r.message if isinstance(r, ManifestError) else r for r in reader(io.BytesIO(data), "c")]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"id,t\na,x\n", [(2, {"id": "a", "t": "x"})]),
        (b"\xef\xbb\xbfid,t\r\na,x\r\n", [(2, {"id": "a", "t": "x"})]),
        (b"id,t\ra,x\rb,y", [(2, {"id": "a", "t": "x"}), (3, {"id": "b", "t": "y"})]),
        (b"id , t\na,\n\nb,y\n", [(2, {"id": "a"}), (4, {"id": "b", "t": "y"})]),
        (b'id,t\na,"x\ny"\nb,z\n', [(2, {"id": "a", "t": "x\ny"}), (4, {"id": "b", "t": "z"})]),
        (b"id,images\na,p/a.png; p/b.png\n", [(2, {"id": "a", "images": ["p/a.png", "p/b.png"]})]),
        (b"", ["c: the catalog is empty (no header row)"]),
        (b"id,t\n\n", ["c: the catalog has a header but no rows"]),
        (b"id,t\na,x,y\n", ["c: row 2: t: the row has 3 cells, the header 2 columns; 'y' follows this cell "
                           "(quote a cell that contains a comma)"]),
        (b"id,t,u\na\n", ["c: row 2: t: the row has 1 cells, the header 3 columns; no cell for t, u "
                         "(write empty cells as ,,)"]),
        (b"id,t, t\n", ["c: row 1: t: the header names this column twice (columns 2 and 3)"]),
        (b"id,t\na,x\nb,\xe9\n", [(2, {"id": "a", "t": "x"}), "c: row 3: not UTF-8 text (byte 0xe9 at column 3); save it as UTF-8"]),
        (b'id,t\na,"x\n', ['c: row 2: a quoted cell that starts in this row is never closed (a missing ")']),
    ],
)
def test_csv_rows(data, expected):
    assert rows(csv_rows, data) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"id": "a", "n": 2, "x": null}\n\n{"id": "b"}', [(1, {"id": "a", "n": 2}), (3, {"id": "b"})]),
        (b'{"id": "a", "id": "b"}\n', ["c: row 1: id: repeated key in one object; JSON readers keep only the last, so remove one"]),
        (b'{"id": "a", "x": {"k": 1, "k": 2}}\n', ["c: row 1: k: repeated key in one object; JSON readers keep only the last, so remove one"]),
        (b'{"id": "a", "w": Infinity}\n', ["c: row 1: w: Infinity is not a finite number"]),
        (b'{"id": "a", "w": 1e999}\n', ["c: row 1: w: 1e999 is not a finite number (or out of range)"]),
        (b'{"id": "a", "w": [1, "\\ud800"]}\n', ["c: row 1: w: contains a lone UTF-16 surrogate (\\ud800), which is not text"]),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", ["c: row 1: not valid JSON: nested too deeply"]),
        (b"[1]\n", ["c: row 1: each line must be a JSON object"]),
    ],
)
def test_jsonl_rows(data, expected):
    assert rows(jsonl_rows, data) == expected
