"""Fixtures of the deployment tests: the chart rendered once per value set."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers module sits next to this file (tests/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_support import VALUE_SETS, Manifest, load_values, manifests_of, render_chart


@pytest.fixture(scope="session")
def rendered_sets() -> dict[str, dict[str, str]]:
    return {name: render_chart(load_values(name)) for name in VALUE_SETS}


@pytest.fixture(scope="session")
def manifest_sets(rendered_sets: dict[str, dict[str, str]]) -> dict[str, list[Manifest]]:
    return {name: manifests_of(rendered) for name, rendered in rendered_sets.items()}
