"""docs/reliability.md's bad-input table is generated from the catalogue and kept current."""

from __future__ import annotations

from tests.badinput.catalogue import CASES, LAYERS
from tests.badinput.doc_table import DOC, SECTION, current_block, render


def test_catalogue_is_well_formed() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    for case in CASES:
        assert case.layer in LAYERS
        assert case.input and case.goes_to and case.user_sees and case.expect, case.name


def test_doc_table_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert SECTION in text
    block = current_block(text)
    assert block is not None, "run: python -m tests.badinput.doc_table --write"
    assert text.index(SECTION) < text.index(block)
    assert block == render(), "stale table; run: python -m tests.badinput.doc_table --write"
    for case in CASES:
        assert f"`{case.name}`" in block
