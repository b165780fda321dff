"""docker-compose.yml against the Compose Specification's JSON schema, plus its wiring.

No Docker engine is needed. The schema is the compose-spec project's ``compose-spec.json``
(Apache-2.0), vendored next to this file because these machines reach no web server.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import HERE, REPO

COMPOSE = REPO / "docker-compose.yml"
COMPONENTS = ("ingest", "poll", "worker", "sink", "select", "api")
ONE_SHOT = ("minio-init", "topics", "migrate")

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` interpolation (``$$`` is a literal ``$``)."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        return env.get(name) or (default or "")

    escaped = text.replace("$$", "\0")
    return VARIABLE.sub(substitute, escaped).replace("\0", "$")


def load_compose() -> dict[str, Any]:
    tree = yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), {}))
    assert isinstance(tree, dict)
    return tree


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads((HERE / "compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_schema_catches_mistakes(compose: dict[str, Any]) -> None:
    schema = json.loads((HERE / "compose-spec.json").read_text(encoding="utf-8"))
    broken = json.loads(json.dumps(compose))
    broken["services"]["ingest"]["depends_on"]["kafka"]["condition"] = "service_ready"
    broken["services"]["api"]["helthcheck"] = {}
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_every_component_has_a_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*COMPONENTS, *ONE_SHOT, "kafka", "schema-registry", "minio", "postgres"):
        assert name in services, name
    for name in COMPONENTS:
        service = services[name]
        assert service["image"] == "hosepipe:local"
        assert service["healthcheck"]["test"] == ["CMD", "hosepipe-healthcheck"]
        assert "./hosepipe.yaml:/etc/hosepipe/hosepipe.yaml:ro" in service["volumes"]
        env = service["environment"]
        assert env["HOSEPIPE_BIND_HOST"] == "0.0.0.0"
        assert env["HOSEPIPE_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["HOSEPIPE_SCHEMA_REGISTRY_URL"].startswith("http://schema-registry:")
        assert env["HOSEPIPE_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_components_wait_for_servers_and_setup(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in COMPONENTS:
        depends = services[name]["depends_on"]
        for one_shot in ONE_SHOT:
            assert depends[one_shot]["condition"] == "service_completed_successfully", name
        for server in ("kafka", "postgres", "schema-registry"):
            assert depends[server]["condition"] == "service_healthy", name
            assert "healthcheck" in services[server], server
    for one_shot in ONE_SHOT:
        assert services[one_shot]["restart"] == "no", one_shot


def test_depends_on_targets_exist_and_healthy_targets_have_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            if rule["condition"] == "service_healthy":
                check = services[target].get("healthcheck", {})
                assert check and not check.get("disable"), f"{name} waits on {target}'s health"


def test_the_bucket_created_is_the_lake_bucket(compose: dict[str, Any]) -> None:
    lake = compose["services"]["sink"]["environment"]["HOSEPIPE_LAKE_URL"]
    bucket = lake.removeprefix("s3://").split("/")[0]
    assert f"lake/{bucket}" in " ".join(compose["services"]["minio-init"]["entrypoint"])


def test_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["demo"]["profiles"] == ["demo"]
    assert services["prometheus"]["profiles"] == ["observability"]
    assert services["grafana"]["profiles"] == ["observability"]
    default = [n for n, s in services.items() if not s.get("profiles")]
    assert "demo" not in default and "grafana" not in default


def test_published_ports_are_loopback_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every address"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_every_component() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        t.split(":")[0]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for t in group["targets"]
    }
    assert targets == set(COMPONENTS)


def test_grafana_dashboard_is_provisioned() -> None:
    dashboard_dir = REPO / "deploy" / "grafana" / "dashboards"
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/hosepipe.yml").read_text(encoding="utf-8")
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((dashboard_dir / "hosepipe.json").read_text(encoding="utf-8"))
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("ingest", "lag", "dlq", "flush", "api: latency"):
        assert topic in titles, topic
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_compose_interpolation_sees_no_unset_required_variable() -> None:
    # ${VAR:?error} would stop `docker compose up` on a fresh checkout; we use defaults only.
    assert ":?" not in COMPOSE.read_text(encoding="utf-8")


def test_dockerignore_keeps_what_the_build_needs() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = ["hosepipe", "connectors", "streams", "sink", "selector", "api", "schemas"]
    for needed in [*copied, "pyproject.toml", "hosepipe.yaml", "deploy", "deploy/constraints.txt"]:
        assert needed not in ignored, needed
    assert {".venv", ".git", "tests"} <= ignored
