"""No drift between the deployment files and the code they run.

Every ``hosepipe ...`` command line in docker-compose.yml and in the rendered chart must
parse with the real CLI (``hosepipe.cli.build_app()``: commands, subcommands and options),
and every ``HOSEPIPE_*`` variable they set must be a field of :class:`Settings` or one of
the documented extras below.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from deploy_support import CHART, HERE, REPO, VALUE_SETS, WORKLOAD_KINDS, Manifest, pod_spec

from hosepipe.settings import Settings

# HOSEPIPE_* names that are not Settings fields, and why.
DOCUMENTED_EXTRAS = {
    "HOSEPIPE_IMAGE": "compose interpolation only: which image the services run",
}
EXTRA_PREFIXES = {
    "HOSEPIPE_DEMO_": "read by the example pipeline / demo load generator (docs/deploy.md)",
}
HOSEPIPE_VARIABLE = re.compile(r"\bHOSEPIPE_[A-Z0-9_]+\b")


try:  # typer >= 0.20 vendors click as typer._click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import ClickException  # type: ignore[assignment]


def is_group(command: Any) -> bool:
    return hasattr(command, "commands")


def cli() -> Any:
    from hosepipe.cli import build_app

    command = typer.main.get_command(build_app())
    assert is_group(command)
    return command


def available_commands(group: Any, prefix: str = "") -> list[str]:
    names = []
    for name, command in sorted(group.commands.items()):
        names.append(f"{prefix}{name}")
        if is_group(command):
            names += available_commands(command, f"{prefix}{name} ")
    return names


def check_command_line(root: Any, args: list[str]) -> str | None:
    """None when ``hosepipe ARGS`` parses; else why not."""
    command = root
    rest = list(args)
    path = ["hosepipe"]
    while is_group(command):
        if not rest:
            return f"'{' '.join(path)}' needs a subcommand"
        name = rest.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            return f"'{' '.join([*path, name])}': no such command"
        path.append(name)
        command = sub
    try:
        command.make_context(" ".join(path), rest, resilient_parsing=False)
    except ClickException as exc:
        return f"'{' '.join([*path, *rest])}': {exc.format_message()}"
    return None


def compose_commands() -> dict[str, list[str]]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    return {
        f"docker-compose.yml:{name}": [str(a) for a in service["command"]]
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("${HOSEPIPE_IMAGE")
    }


def chart_commands(manifest_sets: dict[str, list[Manifest]]) -> dict[str, list[str]]:
    found = {}
    for value_set, objects in manifest_sets.items():
        for obj in objects:
            if obj["kind"] in WORKLOAD_KINDS:
                for container in pod_spec(obj)["containers"]:
                    where = f"chart[{value_set}]:{obj['kind']}/{obj['metadata']['name']}"
                    found[where] = [str(a) for a in container["args"]]
    return found


def test_every_deployed_command_exists_in_the_cli(
    manifest_sets: dict[str, list[Manifest]],
) -> None:
    root = cli()
    lines = {**compose_commands(), **chart_commands(manifest_sets)}
    assert len(lines) >= 8
    problems = sorted(
        {
            f"{where}: {problem}"
            for where, args in lines.items()
            if (problem := check_command_line(root, args))
        }
    )
    assert not problems, (
        "commands used by compose/helm that the CLI does not have:\n  "
        + "\n  ".join(problems)
        + "\nthe CLI has: "
        + ", ".join(available_commands(root))
    )


def test_the_checker_rejects_what_the_cli_does_not_have() -> None:
    root = cli()
    assert check_command_line(root, ["topics", "create"]) is None
    assert "no such command" in (check_command_line(root, ["topics", "destroy"]) or "")
    assert "no such command" in (check_command_line(root, ["frobnicate"]) or "")
    assert "--nope" in (check_command_line(root, ["topics", "create", "--nope"]) or "")


def deployment_files() -> list[Path]:
    files = [
        REPO / "docker-compose.yml",
        REPO / "Dockerfile",
        REPO / "deploy" / "healthcheck.py",
        HERE / "values-production.yaml",
        *sorted(CHART.rglob("*.yaml")),
        *sorted(CHART.rglob("*.tpl")),
        *sorted(CHART.rglob("*.txt")),
    ]
    docs = REPO / "docs" / "deploy.md"
    if docs.exists():
        files.append(docs)
    return files


def settings_variables() -> set[str]:
    return {f"HOSEPIPE_{name.upper()}" for name in Settings.model_fields}


def test_every_hosepipe_variable_is_a_setting_or_documented() -> None:
    known = settings_variables()
    problems = []
    for path in deployment_files():
        for name in sorted(set(HOSEPIPE_VARIABLE.findall(path.read_text(encoding="utf-8")))):
            if name in known or name in DOCUMENTED_EXTRAS:
                continue
            if any(name.startswith(prefix) for prefix in EXTRA_PREFIXES):
                continue
            problems.append(f"{path.relative_to(REPO)}: {name}")
    assert not problems, "HOSEPIPE_* names that are not Settings fields:\n  " + "\n  ".join(
        problems
    )


def test_rendered_environment_parses_as_settings(
    manifest_sets: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The env ConfigMap plus Secret the chart renders are accepted by Settings."""
    import base64

    for value_set in ("default", "minio"):
        env: dict[str, Any] = {}
        for obj in manifest_sets[value_set]:
            name = obj["metadata"]["name"]
            if obj["kind"] == "ConfigMap" and name.endswith("-env"):
                env.update(obj["data"])
            if obj["kind"] == "Secret" and name.endswith("-secret"):
                env.update({k: base64.b64decode(v).decode() for k, v in obj["data"].items()})
        for key in list(Settings.model_fields):
            monkeypatch.delenv(f"HOSEPIPE_{key.upper()}", raising=False)
        for key, value in env.items():
            if key.startswith("HOSEPIPE_"):
                monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
        assert settings.bind_host == "0.0.0.0"
        assert settings.lake_url.startswith("s3://")
        assert str(settings.config_file) == "/etc/hosepipe/hosepipe.yaml"


def test_compose_environment_parses_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_deploy_compose import load_compose

    environment = load_compose()["services"]["sink"]["environment"]
    for key in list(Settings.model_fields):
        monkeypatch.delenv(f"HOSEPIPE_{key.upper()}", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.s3_secret_access_key is not None


def test_value_sets_cover_the_examples() -> None:
    examples = {p.stem.removeprefix("values-") for p in (CHART / "examples").glob("values-*.yaml")}
    assert examples <= set(VALUE_SETS)


METRIC = re.compile(r"\bhosepipe_[a-z0-9_]+\b")
PACKAGES = ("hosepipe", "connectors", "streams", "sink", "selector", "api")


def defined_metric_names() -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            names |= set(re.findall(r"[\"'](hosepipe_[a-z0-9_]+)[\"']", path.read_text("utf-8")))
    return names


def test_dashboard_uses_metrics_the_components_define() -> None:
    defined = defined_metric_names()
    dashboard = (REPO / "deploy" / "grafana" / "dashboards" / "hosepipe.json").read_text("utf-8")
    used = set(METRIC.findall(dashboard)) - {"hosepipe_overview"}
    assert used
    unknown = []
    for name in sorted(used):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        candidates = {base, base.removesuffix("_total")}
        if not candidates & defined:
            unknown.append(name)
    assert not unknown, f"dashboard queries metrics no component defines: {unknown}"
