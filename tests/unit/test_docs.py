"""docs/configuration.md documents every setting and key: it is generated from the models."""

from __future__ import annotations

from pathlib import Path

from hosepipe.config_reference import BEGIN, END, render_reference
from hosepipe.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_up_to_date() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index(BEGIN) : text.index(END) + len(END)] + "\n"
    assert block == render_reference(), (
        "docs/configuration.md is stale: run `hosepipe config reference --write "
        "docs/configuration.md`"
    )


def test_every_setting_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`HOSEPIPE_{name.upper()}`" in text
