"""Shared helpers of the deployment tests: render the Helm chart with real Helm (no cluster).

Helm comes from PyPI ``helm-python-sdk``: Helm's own Go SDK (v4) built as a shared library
and called through ctypes, so ``chart.render`` is ``helm template`` with Helm's template
engine, Sprig functions and values merging, not a re-implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "hosepipe"
HERE = Path(__file__).resolve().parent

Manifest = dict[str, Any]

VALUE_SETS: dict[str, Path | None] = {
    "default": None,
    "production": HERE / "values-production.yaml",
    "strimzi": CHART / "examples" / "values-strimzi.yaml",
    "minio": CHART / "examples" / "values-minio.yaml",
    "cloudnativepg": CHART / "examples" / "values-cloudnativepg.yaml",
}


def load_values(name: str) -> dict[str, Any]:
    path = VALUE_SETS[name]
    return {} if path is None else yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def render_chart(values: dict[str, Any], release: str = "hp", namespace: str = "data") -> dict:
    """``helm template``: rendered text per template file (NOTES.txt included)."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        rendered: dict[str, str] = chart.render(values, name=release, namespace=namespace)
    return rendered


def manifests_of(rendered: dict[str, str]) -> list[Manifest]:
    """Every Kubernetes object in the rendered templates (NOTES.txt excluded)."""
    objects: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), f"{path}: a document is not a mapping: {doc!r}"
                objects.append(doc)
    return objects


def find(objects: list[Manifest], kind: str, suffix: str = "") -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]


def one(objects: list[Manifest], kind: str, suffix: str) -> Manifest:
    found = find(objects, kind, suffix)
    assert len(found) == 1, f"expected one {kind} named *{suffix}, found {len(found)}"
    return found[0]


PodSpecOf = Callable[[Manifest], dict[str, Any]]


def pod_spec(obj: Manifest) -> dict[str, Any]:
    """The pod spec inside a Deployment, Job or CronJob."""
    if obj["kind"] == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(obj["spec"]["template"]["spec"])


WORKLOAD_KINDS = ("Deployment", "Job", "CronJob")
