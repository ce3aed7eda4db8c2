"""Inputs that used to crash, hang, eat memory or silently change what is sent, needing
files the catalogue in ``tests/bad_inputs/`` cannot hold (FIFOs, ``/dev/zero``, huge or
sparse files, exact bytes), and inputs that must be read correctly rather than refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from batchfuse.outputs.marker import MARKER
from tests.conftest import cli, generation_requests, manifest

HEAD = """job: x
provider:
  kind: gemini
  base_url: {url}
  model: gemini-3-pro-image-preview
  api_key_env: DMXAPI_KEY
limits: {{concurrency: 2, requests_per_minute: null, timeout_s: 5, backoff_base_s: 0.01}}
"""


def write(job, url: str, body: str) -> Path:
    job.manifest.write_text(HEAD.format(url=url) + body, encoding="utf-8")
    return job.manifest


def refused(job, mock, target: Path | str | None = None) -> str:
    """The one line both validate and run print for bad input; nothing sent, no database."""
    target = target or job.manifest
    lines = []
    for command in ("validate", "run"):
        result = cli(command, target)
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        lines.append(result.stderr.removeprefix("error: ").rstrip("\n"))
    assert lines[0] == lines[1]
    assert mock.requests() == []
    assert not job.db.exists()
    return lines[0]


def special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["fifo", "symlink to /dev/zero"])
@pytest.mark.parametrize("role", ["reference image", "catalog"])
def test_an_image_or_catalog_that_is_a_fifo_or_dev_zero_is_refused_not_read_forever(job, mock, role, kind):
    name = "ref.png" if role == "reference image" else "cat.csv"
    special(job.root / name, kind)
    if role == "reference image":
        write(job, mock.url, "items:\n  - {id: a, prompt: p, images: [ref.png]}\n")
        where = "item a: images[0]: ref.png:"
    else:  # "not found" it used to say
        write(job, mock.url, "items_from: {file: cat.csv}\nprompt: p\n")
        where = "items_from.file: catalog cat.csv"
    what = "a FIFO" if kind == "fifo" else "a device"
    assert refused(job, mock) == f"{job.manifest}: {where} is not a regular file ({what})"


def test_dev_zero_itself_as_a_reference_image_is_refused(job, mock):
    write(job, mock.url, "items:\n  - {id: a, prompt: p, images: [/dev/zero]}\n")
    assert refused(job, mock) == f"{job.manifest}: item a: images[0]: /dev/zero: is not a regular file (a device)"


@pytest.mark.parametrize("kind", ["fifo", "symlink to /dev/zero", "/dev/zero"])
def test_a_manifest_that_is_a_fifo_or_dev_zero_is_refused(job, mock, kind):
    target = Path("/dev/zero") if kind == "/dev/zero" else job.root / "m.yaml"
    if kind != "/dev/zero":
        special(target, kind)
    what = "a FIFO" if kind == "fifo" else "a device"
    assert refused(job, mock, target) == f"{target}: manifest is not a regular file ({what})"


def test_files_beyond_their_size_cap_are_refused_before_they_are_read(job, mock):
    big_manifest = job.root / "big.yaml"
    with open(big_manifest, "wb") as f:  # sparse: costs no disk
        f.truncate(17 * 1024 * 1024)
    assert refused(job, mock, big_manifest) == f"{big_manifest}: manifest is 17 MiB; at most 16 MiB is read"
    with open(job.root / "huge.png", "wb") as f:
        f.truncate(65 * 1024 * 1024)
    write(job, mock.url, "items:\n  - {id: a, prompt: p, images: [huge.png]}\n")
    assert refused(job, mock) == f"{job.manifest}: item a: images[0]: huge.png: is 65 MiB; at most 64 MiB is read"


def test_a_catalog_line_beyond_the_cap_is_refused_with_its_row(job, mock):
    (job.root / "cat.jsonl").write_text('{"id": "a"}\n{"id": "b", "title": "' + "x" * (2 * 1024 * 1024) + '"}\n')
    write(job, mock.url, "items_from: {file: cat.jsonl}\nprompt: p\n")
    assert refused(job, mock) == "cat.jsonl: row 2: a line longer than 1,024 KiB"


def test_a_100000_digit_integer_is_refused_in_yaml_and_in_jsonl(job, mock):
    digits = "7" * 100_000
    write(job, mock.url, f"items:\n  - {{id: a, prompt: p, count: {digits}}}\n")
    assert refused(job, mock) == (
        f"{job.manifest}: line 9: items[0].count: a number of 100,000 characters is out of range; quote it if it is text"
    )
    (job.root / "cat.jsonl").write_text('{"id": "a", "count": ' + digits + "}\n")
    write(job, mock.url, "items_from: {file: cat.jsonl}\nprompt: p\n")
    assert refused(job, mock) == (
        "cat.jsonl: row 1: count: a number of 100,000 characters is out of range; write it as a string if it is text"
    )


def test_a_non_utf8_manifest_names_its_line(job, mock):
    job.manifest.write_bytes((HEAD.format(url=mock.url) + "items:\n  - {id: a, prompt: caf\xe9}\n").encode("latin-1"))
    assert refused(job, mock) == f"{job.manifest}: line 9: not UTF-8 text; save it as UTF-8"


@pytest.mark.parametrize("columns", [100_000, 200_000])
def test_a_catalog_with_a_huge_header_gives_a_short_message(job, mock, columns):
    (job.root / "cat.csv").write_text("id," + ",".join(f"c{i}" for i in range(columns)) + "\na\n")
    write(job, mock.url, "items_from: {file: cat.csv}\nprompt: '{title}'\n")
    message = refused(job, mock)
    if columns == 100_000:
        assert message == "cat.csv: row 1: the header names 100,001 columns; at most 1,000 are read"
    else:  # 1.3 MB of header
        assert message == "cat.csv: row 1: a line longer than 1,024 KiB"


def test_an_unknown_template_field_lists_a_few_fields_not_all(job, mock):
    columns = [f"column{i}" for i in range(900)]
    (job.root / "cat.csv").write_text("id," + ",".join(columns) + "\na," + ",".join("v" for _ in columns) + "\n")
    write(job, mock.url, "items_from: {file: cat.csv}\nprompt: 'the {title}'\n")
    message = refused(job, mock)
    assert message.startswith("cat.csv: row 2: prompt: template 'the {title}' names unknown field {title} (fields: ")
    assert message.endswith(" more)") and len(message) < 500


def test_a_huge_matrix_with_inline_items_is_refused_before_planning(job, mock):
    items = "".join(f"  - {{id: i{i}, prompt: p}}\n" for i in range(11))
    matrix = "matrix:\n" + "".join(f"  {k}: [{', '.join(str(v) for v in range(10))}]\n" for k in "abcde")
    write(job, mock.url, "items:\n" + items + matrix)
    assert refused(job, mock) == f"{job.manifest}: matrix: more than 1,000,000 items; split the job into several"


def test_csv_row_numbers_count_lines_even_after_a_cell_spanning_lines(job, mock):
    (job.root / "cat.csv").write_text('id,prompt\na,"one\ntwo\nthree"\nb,fine\nc,A red apple, on a table\n')
    write(job, mock.url, "items_from: {file: cat.csv}\n")
    assert refused(job, mock) == (
        "cat.csv: row 6: prompt: the row has 3 cells, the header 2 columns; ' on a table' follows this cell "
        "(quote a cell that contains a comma)"
    )


def test_bom_mixed_line_endings_and_a_quoted_cell_spanning_lines_are_read_exactly(job, mock):
    data = b'\xef\xbb\xbfid,prompt\r\na,apple\nb,"two\nlines, one cell"\rc,cherry\r\n\r\n'
    (job.root / "cat.csv").write_bytes(data)
    write(job, mock.url, "items_from: {file: cat.csv}\n")
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    sent = sorted(r["prompt"] for r in generation_requests(mock))
    assert sent == ["apple", "cherry", "two\nlines, one cell"]
    assert set(job.state_of()) == {"a", "b", "c"}


def test_yaml_values_are_kept_as_written_ids_010_and_8_are_two_items(job, mock):
    body = """output: {dir: out, filename: "{item}.png"}
items:
  - {id: 010, prompt: "{country} {sku} {version} {at}", country: NO, sku: 0012, version: 1.10, at: 12:30}
  - id: 8
    prompt: plain
    aspect_ratio: 16:9
    google_search: false
"""
    write(job, mock.url, body)
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert job.state_of() == {"010": "succeeded", "8": "succeeded"}
    images = sorted(p.name for p in job.out.iterdir() if p.is_file() and p.name != MARKER)  # PostgreSQL's marker
    assert images == ["010.png", "8.png"]
    by_prompt = {r["prompt"]: r for r in generation_requests(mock)}
    assert set(by_prompt) == {"NO 0012 1.10 12:30", "plain"}
    assert by_prompt["plain"]["body"]["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"


def test_merge_keys_and_anchors_still_work(job, mock):
    body = """items:
  - &first {id: a, prompt: "the {title}", title: lamp}
  - {<<: *first, id: b}
"""
    write(job, mock.url, body)
    result = cli("validate", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert "2 items" in result.stdout


def test_a_repeated_key_in_a_pasted_items_block_never_counts_items_as_removed(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "p"}]))
    assert cli("run", job.manifest).exit_code == 0
    text = job.manifest.read_text(encoding="utf-8")
    job.manifest.write_text(text + "items:\n- {id: c, prompt: p}\n", encoding="utf-8")
    before = job.sql("SELECT key, state, spec_hash FROM items ORDER BY key")
    requests_before = len(mock.requests())
    for command in ("validate", "run", "status"):
        result = cli(command, job.manifest)
        assert result.exit_code == 2, (command, result.stderr)
        assert "items: repeated key (first at line" in result.stderr
    assert job.sql("SELECT key, state, spec_hash FROM items ORDER BY key") == before
    assert len(mock.requests()) == requests_before


def test_the_limits_accept_large_sane_values_quoted_or_not(job, mock):
    data = manifest(mock.url, [{"id": "a", "prompt": "p"}])
    data["limits"].update({"requests_per_minute": "600", "timeout_s": 3600})
    job.manifest.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = cli("validate", job.manifest)
    assert result.exit_code == 0, result.stderr
