"""Pure decisions of the stack supervisor: backoff, planning, child settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from hosepipe.localstack import supervisor
from hosepipe.localstack.supervisor import ComponentSpec, next_backoff
from hosepipe.settings import Settings


def _settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[arg-type, call-arg]


def test_backoff_doubles_to_thirty_seconds_and_resets_after_stable_run() -> None:
    delays = []
    delay = None
    for _ in range(8):
        delay = next_backoff(delay, ran_for=2.0)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert next_backoff(30.0, ran_for=61.0) == 1.0


def test_plan_takes_ports_and_credentials_from_settings(tmp_path: Path) -> None:
    settings = _settings(
        data_dir=tmp_path,
        broker_port=19092,
        s3_port=18333,
        postgres_port=15432,
        s3_access_key_id="ak",
        s3_secret_access_key=SecretStr("sk"),
        database_url="postgresql+psycopg://app:pw@127.0.0.1:5432/appdb",
        lake_url="s3://my-lake/events",
        embedded_broker_storage="memory",
    )
    plan = supervisor.plan_stack(settings)
    assert plan.kafka_bootstrap == "127.0.0.1:19092"
    assert plan.s3_endpoint == "http://127.0.0.1:18333"
    assert (plan.s3_access_key, plan.s3_secret_key) == ("ak", "sk")
    assert plan.database_url == "postgresql+psycopg://app:pw@127.0.0.1:15432/appdb"
    assert plan.lake_bucket == "my-lake"
    assert plan.broker_storage == "memory"
    assert plan.data_dir == tmp_path.resolve()


def test_plan_puts_the_default_lake_on_the_embedded_s3(tmp_path: Path) -> None:
    plan = supervisor.plan_stack(_settings(data_dir=tmp_path))
    assert plan.s3_access_key == supervisor.DEFAULT_S3_ACCESS_KEY
    assert plan.lake_bucket == "lake"
    assert plan.broker_storage == "s3"


def test_plan_keeps_an_explicit_file_lake_local(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path, lake_url=f"file://{tmp_path}/lake")
    assert supervisor.plan_stack(settings).lake_bucket is None
    child = supervisor.component_settings(settings, supervisor.plan_stack(settings), tmp_path)
    assert child.lake_url == f"file://{tmp_path}/lake"


def test_children_get_settings_that_round_trip_through_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(data_dir=tmp_path, kafka_options={"client.id": "x"}, metrics_port=9100)
    plan = supervisor.plan_stack(settings)
    child = supervisor.component_settings(settings, plan, tmp_path / "hosepipe.yaml")
    assert child.kafka_bootstrap == plan.kafka_bootstrap
    assert child.database_url == plan.database_url
    assert child.metrics_port == 0
    for key, value in supervisor.settings_env(child).items():
        monkeypatch.setenv(key, value)
    assert Settings(_env_file=None) == child  # type: ignore[call-arg]


def test_components_that_are_not_importable_are_skipped() -> None:
    here = ComponentSpec("here", ("x",), "hosepipe.settings")
    missing = ComponentSpec("missing", ("y",), "no_such_package.cli")
    demo = ComponentSpec("demo", ("demo",), "hosepipe.settings", demo_only=True)
    run, skipped = supervisor.select_components([here, missing, demo], demo=False)
    assert (run, skipped) == ([here], [missing])
    run, _ = supervisor.select_components([here, missing, demo], demo=True)
    assert run == [here, demo]


def test_status_is_empty_without_state_and_refuses_live_stack(tmp_path: Path) -> None:
    import os

    settings = _settings(data_dir=tmp_path)
    assert supervisor.stack_status(settings) == []
    supervisor._write_state(
        tmp_path,
        {
            "supervisor": {"pid": os.getpid(), "start_ticks": supervisor._start_ticks(os.getpid())},
            "processes": [{"name": "s3", "kind": "server", "pid": 2**22 + 7, "detail": ""}],
        },
    )
    rows = supervisor.stack_status(settings)
    assert [(r.name, r.alive) for r in rows] == [("hosepipe up", True), ("s3", False)]
    with pytest.raises(supervisor.StackError, match="still running"):
        supervisor.refuse_if_running(tmp_path)


def test_stale_state_of_a_dead_stack_does_not_block(tmp_path: Path) -> None:
    supervisor._write_state(
        tmp_path, {"supervisor": {"pid": 2**22 + 5, "start_ticks": 1}, "processes": []}
    )
    supervisor.refuse_if_running(tmp_path)  # no exception


def test_leftovers_of_a_killed_supervisor_are_stopped(tmp_path: Path) -> None:
    import subprocess

    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        supervisor._write_state(
            tmp_path,
            {
                "supervisor": {"pid": 2**22 + 5, "start_ticks": 1},
                "processes": [
                    {
                        "name": "broker",
                        "kind": "server",
                        "pid": orphan.pid,
                        "start_ticks": supervisor._start_ticks(orphan.pid),
                    }
                ],
            },
        )
        supervisor.refuse_if_running(tmp_path)
        assert orphan.wait(5) is not None
        assert supervisor.read_state(tmp_path) is None
    finally:
        orphan.kill()
        orphan.wait()


def test_a_recycled_pid_is_not_signalled(tmp_path: Path) -> None:
    import subprocess

    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        supervisor._write_state(
            tmp_path,
            {
                "supervisor": {"pid": 2**22 + 5, "start_ticks": 1},
                "processes": [
                    {"name": "s3", "kind": "server", "pid": bystander.pid, "start_ticks": 1}
                ],
            },
        )
        supervisor.refuse_if_running(tmp_path)
        assert bystander.poll() is None  # same pid, other start time: left alone
    finally:
        bystander.kill()
        bystander.wait()


def test_client_env_points_commands_at_the_stack_only(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path)
    plan = supervisor.plan_stack(settings)
    child = supervisor.component_settings(settings, plan, tmp_path / "hosepipe.yaml")
    env = supervisor.client_env(child)
    assert env["HOSEPIPE_LAKE_URL"] == "s3://lake/"
    assert env["HOSEPIPE_S3_ENDPOINT_URL"] == plan.s3_endpoint
    assert env["HOSEPIPE_KAFKA_BOOTSTRAP"] == plan.kafka_bootstrap
    assert "HOSEPIPE_DATA_DIR" not in env and "HOSEPIPE_METRICS_PORT" not in env


@pytest.mark.parametrize(
    "overrides",
    [{"embedded_broker_storage": "memory"}, {"embedded_broker_trim_every": 0}],
    ids=["memory storage", "trim off"],
)
def test_no_broker_trim_without_s3_storage_or_when_turned_off(
    tmp_path: Path, overrides: dict[str, object]
) -> None:
    import threading

    settings = _settings(data_dir=tmp_path, **overrides)
    plan = supervisor.plan_stack(settings)
    # returns before touching the (absent) servers or the config file
    missing = tmp_path / "no-such.yaml"
    assert supervisor.start_broker_trim(settings, plan, missing, threading.Event()) is None
