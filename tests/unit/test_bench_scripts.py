"""The bench scripts run as ``python bench/NAME.py``, which puts ``bench/`` first on
``sys.path``: a script named like one of the project's packages would shadow it, and the
first import of that package (often a lazy one, deep in a run) would fail."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _project_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return {pattern.rstrip("*") for pattern in patterns}


def test_no_bench_script_is_named_like_a_project_package() -> None:
    packages = _project_packages()
    assert {"hosepipe", "streams", "selector", "api"} <= packages
    scripts = {path.stem for path in (ROOT / "bench").glob("*.py")}
    assert scripts, "no bench scripts found"
    assert not scripts & packages, f"bench scripts that shadow a package: {scripts & packages}"
