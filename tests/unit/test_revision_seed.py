"""A new-seed revision changes the request's seed, whether or not the item has one of its own."""

from __future__ import annotations

from batchfuse.store.verdicts import SEED_RANGE, Revision, revise_spec

SPEC = {"prompt": "p", "images": [], "params": {"aspect_ratio": "1:1"}, "vars": {}}


def test_without_a_seed_the_salt_is_the_seed():
    out = revise_spec(SPEC, Revision(1, "b" * 64, None, 12345))
    assert out["params"]["seed"] == 12345 and "seed" not in SPEC["params"]


def test_an_items_own_seed_is_salted_and_stays_a_32_bit_signed_value():
    spec = {**SPEC, "params": {**SPEC["params"], "seed": SEED_RANGE - 1}}
    assert revise_spec(spec, Revision(1, "b" * 64, None, 2))["params"]["seed"] == 1
    assert revise_spec(spec, Revision(1, "b" * 64, None, SEED_RANGE - 1))["params"]["seed"] == SEED_RANGE - 2


def test_a_reject_without_new_seed_leaves_the_seed_alone():
    assert "seed" not in revise_spec(SPEC, Revision(1, "b" * 64, "more", None))["params"]
    spec = {**SPEC, "params": {"seed": 7}}
    assert revise_spec(spec, Revision(2, "b" * 64, "more", None))["params"]["seed"] == 7
