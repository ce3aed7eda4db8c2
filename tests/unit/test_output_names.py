"""Output names every filesystem can store, one same-file key per file, and the PNG job reader."""

from __future__ import annotations

import io
import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from batchfuse.outputs.names import NAME_MAX, PathProblem, output_name, portable, same_file_key
from batchfuse.outputs.png import add_png_text
from batchfuse.plan.path_claims import png_job

UNSTORABLE = set(':*?"<>|') | {chr(c) for c in range(1, 32)}


@settings(max_examples=300, deadline=None)
@given(item=st.text(alphabet=string.printable + "é.: *?\"<>|", min_size=1, max_size=30))
def test_mapped_names_hold_nothing_macos_or_smb_cannot_store(item):
    try:
        name = output_name("{item}/{item}.png", {"item": item}, 1, 1)
    except PathProblem:
        return
    for part in name.split("/"):
        assert part and not UNSTORABLE & set(part), name
        assert not part.endswith((".", " ")), name
        assert len(part.encode()) <= NAME_MAX


@pytest.mark.parametrize(
    ("raw", "mapped"),
    [("SP26-0299/lifestyle-4:5.png", "SP26-0299/lifestyle-4_5.png"), ("Acme Inc. /a.png", "Acme Inc/a.png"),
     ('a"b|c?.png', "a_b_c_.png"), ("con.png", "_con.png"), ("LPT1/x.png", "_LPT1/x.png"),
     ("tab\there.png", "tab_here.png"), ("console.png", "console.png")],
)
def test_the_documented_mapping(raw, mapped):
    assert portable(raw) == mapped


def test_a_windows_drive_is_still_refused_but_a_colon_later_is_mapped():
    with pytest.raises(PathProblem):
        output_name("C:/{item}.png", {"item": "a"}, 1, 1)
    assert output_name("{item}.png", {"item": "4:5"}, 1, 1) == "4_5.png"


def test_name_length_is_counted_in_bytes_per_part():
    assert output_name("{item}.png", {"item": "x" * 251}, 1, 1)
    with pytest.raises(PathProblem, match="256 bytes"):
        output_name("{item}.png", {"item": "x" * 252}, 1, 1)
    with pytest.raises(PathProblem, match="258 bytes"):
        output_name("{item}/a.png", {"item": "é" * 129}, 1, 1)


def test_case_and_unicode_form_make_one_key():
    assert same_file_key("Summer/A.PNG") == same_file_key("summer/a.png")
    assert same_file_key(unicodedata.normalize("NFD", "Café.png")) == same_file_key("café.png")
    assert same_file_key("a.png") != same_file_key("b.png")


def test_the_job_is_read_from_a_pngs_text_chunks(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    (tmp_path / "ours.png").write_bytes(add_png_text(buf.getvalue(), {"prompt": "p", "batchfuse:job": "jöb"}))
    assert png_job(str(tmp_path / "ours.png")) == "jöb"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("batchfuse:job", "pillow")
    Image.new("RGB", (4, 4)).save(tmp_path / "pillow.png", "PNG", pnginfo=info)
    assert png_job(str(tmp_path / "pillow.png")) == "pillow"
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png", "PNG")
    (tmp_path / "text.png").write_text("not a png")
    assert png_job(str(tmp_path / "plain.png")) is None
    assert png_job(str(tmp_path / "text.png")) is None
    assert png_job(str(tmp_path / "missing.png")) is None
