"""Output names never leave the output folder; PNG text goes in without re-encoding."""

from __future__ import annotations

import io
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from batchfuse.outputs.names import PathProblem, check_relative, output_name
from batchfuse.outputs.png import add_png_text
from batchfuse.templates import TemplateProblem, fields_of, render


def is_inside(name: str) -> bool:
    parts = name.split("/")
    return not name.startswith("/") and ".." not in parts and "" not in parts and "\x00" not in name


@settings(max_examples=400, deadline=None)
@given(
    template=st.lists(st.sampled_from(["{item}", "{sku}", "/", "..", ".", "-", "a", "{n}", "\\", "\x00"]),
                      max_size=8).map("".join),
    item=st.text(alphabet=string.printable + "é/\\.\x00", max_size=20),
    sku=st.text(alphabet="./a\x00\\", max_size=6),
)
def test_rendered_names_stay_inside_the_output_folder(template, item, sku):
    try:
        name = output_name(template + ".png", {"item": item, "sku": sku}, 1, 1)
    except PathProblem:
        return
    assert is_inside(name), name


@pytest.mark.parametrize(
    "bad", ["../x.png", "a/../../x.png", "/etc/x.png", "a//b.png", "a\x00.png", "C:/x.png", "x.gif", "", "./x.png",
            "a\\..\\x.png", ".batchfuse-tmp/x.png", ".batchfuse-versions/x.v1.png", "a/.Batchfuse-Versions/x.png"],
)
def test_escaping_or_odd_names_are_refused(bad):
    with pytest.raises(PathProblem):
        check_relative(bad)


def test_several_images_get_numbered_names_unless_the_template_numbers_them():
    assert output_name("{item}.png", {"item": "a"}, 1, 1) == "a.png"
    assert output_name("{item}.png", {"item": "a"}, 2, 3) == "a-2.png"
    assert output_name("{item}_{n:02d}.png", {"item": "a"}, 2, 3) == "a_02.png"


def test_templates_refuse_attribute_access_and_name_missing_fields():
    with pytest.raises(TemplateProblem):
        fields_of("{x.__class__}")
    with pytest.raises(TemplateProblem):
        fields_of("{x[0]}")
    with pytest.raises(TemplateProblem) as exc:
        render("{sku}-{title}", {"sku": 1})
    assert exc.value.field == "title"
    assert render("{{literal}} {sku}", {"sku": 7}) == "{literal} 7"


def test_png_text_is_added_without_touching_pixels():
    buf = io.BytesIO()
    Image.new("RGB", (5, 4), (10, 20, 30)).save(buf, "PNG")
    tagged = add_png_text(buf.getvalue(), {"prompt": "让计算器吃饭", "batchfuse:item": "k1"})
    with Image.open(io.BytesIO(tagged)) as im:
        im.load()
        assert im.text == {"prompt": "让计算器吃饭", "batchfuse:item": "k1"}
        assert im.getpixel((2, 2)) == (10, 20, 30)
