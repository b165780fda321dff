"""The Helm chart, rendered by real Helm and checked against the Kubernetes schemas.

No cluster is needed: rendering is ``helm template`` (Helm's Go SDK from PyPI
``helm-python-sdk``), schema validation is ``kubernetes-validate`` (the API server's
OpenAPI schemas, strict: unknown fields fail). KEDA's ScaledObject is a CRD without a
schema there, so its required fields are checked by hand.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import (
    CHART,
    VALUE_SETS,
    WORKLOAD_KINDS,
    Manifest,
    find,
    load_values,
    manifests_of,
    one,
    pod_spec,
    render_chart,
)

from hosepipe.config import parse_pipeline

KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CRD_KINDS = {"ScaledObject"}


def test_helm_lint_finds_no_errors() -> None:
    import helm_python as helm

    result = helm.lint(str(CHART))
    errors = [m for m in result["messages"] if m["severity"] >= 3] + list(result["errors"])
    assert not errors, errors


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes(
    manifest_sets: dict[str, list[Manifest]], value_set: str, k8s_version: str
) -> None:
    objects = manifest_sets[value_set]
    assert objects
    problems = []
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{where}: {exc.message} at {list(exc.path)}")
    assert not problems, "\n".join(problems)


def test_default_values_render_the_components(manifest_sets: dict[str, list[Manifest]]) -> None:
    objects = manifest_sets["default"]
    for component in ("ingest", "api", "worker", "sink", "select"):
        one(objects, "Deployment", f"-{component}")
    for component in ("ingest", "api"):
        one(objects, "Service", f"-{component}")
        one(objects, "HorizontalPodAutoscaler", f"-{component}")
    for component in ("ingest", "api", "worker", "sink"):
        one(objects, "PodDisruptionBudget", f"-{component}")
    # The default pipeline has only push sources: no poller.
    assert not find(objects, "Deployment", "-poll")
    assert not find(objects, "ScaledObject")
    assert not find(objects, "Ingress")
    one(objects, "Secret", "-secret")


def test_component_commands(manifest_sets: dict[str, list[Manifest]]) -> None:
    objects = manifest_sets["production"]
    args = {
        o["metadata"]["name"].removeprefix("hp-hosepipe-"): pod_spec(o)["containers"][0]["args"]
        for o in objects
        if o["kind"] in WORKLOAD_KINDS
    }
    assert args == {
        "ingest": ["ingest"],
        "api": ["api"],
        "worker": ["worker", "--engine", "kafka"],
        "sink": ["sink"],
        "poll": ["poll"],
        "select": ["select"],
        "topics": ["topics", "create"],
        "migrations": ["db", "upgrade"],
    }
    default_select = one(manifest_sets["default"], "Deployment", "-select")
    assert pod_spec(default_select)["containers"][0]["args"] == ["select", "--follow"]


def test_production_values(manifest_sets: dict[str, list[Manifest]]) -> None:
    objects = manifest_sets["production"]
    one(objects, "CronJob", "-select")
    assert not find(objects, "Deployment", "-select")
    one(objects, "Deployment", "-poll")
    assert {o["metadata"]["name"] for o in find(objects, "Ingress")} == {
        "hp-hosepipe-ingest",
        "hp-hosepipe-api",
    }
    # An existing Secret: the chart makes none and every container reads the named one.
    assert not find(objects, "Secret")
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            refs = [
                e.get("secretRef", {}).get("name")
                for e in pod_spec(obj)["containers"][0]["envFrom"]
            ]
            assert "hosepipe-credentials" in refs, obj["metadata"]["name"]
    # api autoscaling off: fixed replicas; ingest on: the HPA owns replicas.
    assert one(objects, "Deployment", "-api")["spec"]["replicas"] == 3
    assert "replicas" not in one(objects, "Deployment", "-ingest")["spec"]
    assert not find(objects, "HorizontalPodAutoscaler", "-api")


def test_keda_scaled_objects(manifest_sets: dict[str, list[Manifest]]) -> None:
    objects = manifest_sets["production"]
    groups = {"worker": "acme-hosepipe-worker", "sink": "acme-hosepipe-sink"}
    for component, group in groups.items():
        scaled = one(objects, "ScaledObject", f"-{component}")
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["name"] == f"hp-hosepipe-{component}"
        assert spec["maxReplicaCount"] == 24
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == group
        assert meta["bootstrapServers"].startswith("kafka-0.kafka:9093")
        assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
        # KEDA owns the replica count.
        assert "replicas" not in one(objects, "Deployment", f"-{component}")["spec"]
    sink_trigger = one(objects, "ScaledObject", "-sink")["spec"]["triggers"][0]
    assert sink_trigger["metadata"]["topic"] == "events.canonical"
    worker_trigger = one(objects, "ScaledObject", "-worker")["spec"]["triggers"][0]
    assert worker_trigger["authenticationRef"] == {"name": "kafka-sasl"}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_pods_are_non_root_with_read_only_root(
    manifest_sets: dict[str, list[Manifest]], value_set: str
) -> None:
    for obj in manifest_sets[value_set]:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        name = obj["metadata"]["name"]
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name
            assert "emptyDir" in volumes[mounts["/var/lib/hosepipe"]], name
            assert mounts["/etc/hosepipe"] == "pipeline", name
            assert container["resources"].get("requests"), f"{name}: no resource requests"


def test_long_running_pods_have_probes(manifest_sets: dict[str, list[Manifest]]) -> None:
    for obj in find(manifest_sets["production"], "Deployment"):
        container = pod_spec(obj)["containers"][0]
        port = container["ports"][0]["containerPort"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": port}, (
                obj["metadata"]["name"],
                probe,
            )


def test_migrations_and_topics_are_pre_install_hooks(
    manifest_sets: dict[str, list[Manifest]],
) -> None:
    objects = manifest_sets["default"]
    jobs = {o["metadata"]["name"]: o for o in find(objects, "Job")}
    assert set(jobs) == {"hp-hosepipe-topics", "hp-hosepipe-migrations"}
    for job in jobs.values():
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    # Topics before migrations; both after the hook copies of their config (weight -10).
    weights = {n: int(j["metadata"]["annotations"]["helm.sh/hook-weight"]) for n, j in jobs.items()}
    assert weights["hp-hosepipe-topics"] < weights["hp-hosepipe-migrations"]
    hook_names = set()
    for obj in objects:
        annotations = obj["metadata"].get("annotations") or {}
        if "helm.sh/hook" in annotations and obj["kind"] != "Job":
            assert int(annotations["helm.sh/hook-weight"]) < min(weights.values())
            hook_names.add(obj["metadata"]["name"])
    # Hook pods only reference objects that exist at pre-install time (the hook copies).
    for job in jobs.values():
        spec = pod_spec(job)
        referenced = {spec["serviceAccountName"]}
        referenced |= {v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
        for source in spec["containers"][0]["envFrom"]:
            referenced |= {ref["name"] for ref in source.values()}
        assert referenced <= hook_names, referenced - hook_names


def _pipeline_text(objects: list[Manifest]) -> str:
    text = one(objects, "ConfigMap", "-pipeline")["data"]["hosepipe.yaml"]
    assert isinstance(text, str)
    return text


@pytest.mark.parametrize("value_set", ["default", "production", "strimzi"])
def test_pipeline_configmap_is_a_valid_pipeline(
    manifest_sets: dict[str, list[Manifest]], value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("INGEST_API_KEY", "GRAPHQL_API_KEY", "INVENTORY_API_TOKEN"):
        monkeypatch.setenv(name, "k" * 32)
    pipeline = parse_pipeline(_pipeline_text(manifest_sets[value_set]), f"chart:{value_set}")
    # API auth is on unless someone turns it off on purpose.
    assert pipeline.ingest.auth is True
    assert pipeline.api.auth != "none"


def test_hook_pipeline_copy_matches(manifest_sets: dict[str, list[Manifest]]) -> None:
    objects = manifest_sets["production"]
    hook = one(objects, "ConfigMap", "-pipeline-hook")["data"]["hosepipe.yaml"]
    assert hook == _pipeline_text(objects)


def _env_provided(
    obj: Manifest, objects: list[Manifest], existing_secret_keys: set[str]
) -> set[str]:
    spec = pod_spec(obj)
    container = spec["containers"][0]
    names = {e["name"] for e in container.get("env", [])}
    by_name = {o["metadata"]["name"]: o for o in objects if o["kind"] in {"ConfigMap", "Secret"}}
    for source in container["envFrom"]:
        for ref in source.values():
            target = by_name.get(ref["name"])
            names |= set(target["data"]) if target else existing_secret_keys
    return names


EXISTING_SECRET_KEYS = {
    "HOSEPIPE_DATABASE_URL",
    "HOSEPIPE_KAFKA_OPTIONS",
    "HOSEPIPE_S3_ACCESS_KEY_ID",
    "HOSEPIPE_S3_SECRET_ACCESS_KEY",
    "INGEST_API_KEY",
    "GRAPHQL_API_KEY",
}


@pytest.mark.parametrize("value_set", ["default", "production"])
def test_pipeline_variables_reach_every_container(
    manifest_sets: dict[str, list[Manifest]], value_set: str
) -> None:
    from hosepipe.config import ENV_REFERENCE

    objects = manifest_sets[value_set]
    needed = {
        m.group(1) for m in ENV_REFERENCE.finditer(_pipeline_text(objects)) if m.group(2) is None
    }
    assert needed
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            missing = needed - _env_provided(obj, objects, EXISTING_SECRET_KEYS)
            assert not missing, f"{obj['metadata']['name']} lacks {sorted(missing)}"


def test_generated_api_keys_are_long_enough(manifest_sets: dict[str, list[Manifest]]) -> None:
    import base64

    secret = one(manifest_sets["default"], "Secret", "-secret")
    for key in ("INGEST_API_KEY", "GRAPHQL_API_KEY"):
        assert len(base64.b64decode(secret["data"][key])) >= 16


def test_secret_values_land_in_the_secret_not_the_configmap() -> None:
    values: dict[str, Any] = {
        "kafka": {"bootstrap": "k:9093", "options": {"sasl.password": "pw-kafka"}},
        "s3": {"lakeUrl": "s3://b/p", "accessKeyId": "AKIA1", "secretAccessKey": "pw-s3"},
        "postgres": {"url": "postgresql+psycopg://u:pw-pg@db:5432/h"},
    }
    objects = manifests_of(render_chart(values))
    for cm in find(objects, "ConfigMap"):
        dumped = yaml.safe_dump(cm)
        for password in ("pw-kafka", "pw-s3", "pw-pg"):
            assert password not in dumped, f"{password} leaked into {cm['metadata']['name']}"
    import base64

    secret = one(objects, "Secret", "hp-hosepipe-secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded["HOSEPIPE_KAFKA_OPTIONS"] == '{"sasl.password":"pw-kafka"}'
    assert decoded["HOSEPIPE_DATABASE_URL"].endswith("@db:5432/h")


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"selector": {"mode": "weekly"}}, "/selector/mode"),
        ({"worker": {"engine": "spark"}}, "/worker/engine"),
        ({"ingest": {"replicaz": 3}}, "replicaz"),
        ({"s3": {"lakeUrl": "gs://bucket"}}, "/s3/lakeUrl"),
        ({"auth": {"graphqlApiKey": "short"}}, "/auth/graphqlApiKey"),
        ({"unknownTopLevel": True}, "unknownTopLevel"),
    ],
)
def test_values_schema_rejects_mistakes(values: dict[str, Any], fragment: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as excinfo:
        render_chart(values)
    assert fragment in str(excinfo.value)


def test_notes_render(rendered_sets: dict[str, dict[str, str]]) -> None:
    notes = rendered_sets["default"]["hosepipe/templates/NOTES.txt"]
    assert "GRAPHQL_API_KEY" in notes and "helm rollback" in notes
    production = rendered_sets["production"]["hosepipe/templates/NOTES.txt"]
    assert "CronJob" in production and "24 per topic" in production


def test_value_sets_are_what_the_docs_say() -> None:
    assert load_values("default") == {}
    assert set(VALUE_SETS) >= {"production", "strimzi", "minio", "cloudnativepg"}
