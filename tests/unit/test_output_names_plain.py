"""The shortcut for plain output names gives exactly what the full checks and mapping give."""

from __future__ import annotations

import pytest

from batchfuse.outputs.names import PathProblem, check_relative, output_name, portable

NAMES = [
    "SKU-000001.png", "a.PNG", "a.jpg", "a.JPEG", "a.webp", "name with space.png", "x+y_z-1.png",
    "con.png", "CON.png", "nul.jpg", "com1.png", "lpt9.webp", "cons.png", "a..png", "a .png", "a. .png",
    "x" * 200 + ".png", "x" * 251 + ".png", "x" * 252 + ".png", "x.gif", ".hidden.png", "-dash.png", "a.png.png",
]


@pytest.mark.parametrize("name", NAMES)
def test_a_plain_name_comes_out_as_the_full_checks_make_it(name):
    try:
        full = portable(check_relative(name))
    except PathProblem as exc:
        with pytest.raises(PathProblem) as got:
            output_name(name, {}, 1, 1)
        assert str(got.value) == str(exc)
        return
    assert output_name(name, {}, 1, 1) == full
