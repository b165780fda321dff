"""The embedded servers and the session fixtures against the real processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from hosepipe.localstack import servers
from hosepipe.localstack.supervisor import read_state
from hosepipe.settings import Settings

pytestmark = pytest.mark.integration


def test_s3_write_and_list(s3_server: Any, unique_name: Callable[..., str]) -> None:
    client = s3_server.client()
    prefix = unique_name("s3test")
    for i in range(3):
        client.put_object(Bucket=s3_server.bucket, Key=f"{prefix}/part-{i}.txt", Body=b"x" * i)
    listed = client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{prefix}/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        f"{prefix}/part-{i}.txt" for i in range(3)
    ]
    body = client.get_object(Bucket=s3_server.bucket, Key=f"{prefix}/part-2.txt")["Body"].read()
    assert body == b"xx"


def test_s3_rejects_wrong_credentials(s3_server: Any) -> None:
    from botocore.exceptions import ClientError

    wrong = type(s3_server)(
        endpoint_url=s3_server.endpoint_url,
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
        bucket=s3_server.bucket,
    )
    with pytest.raises(ClientError):
        wrong.client().list_objects_v2(Bucket=s3_server.bucket)


def test_postgres_runs_sql(postgres_url: str, unique_name: Callable[..., str]) -> None:
    schema = unique_name("pgtest")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
            conn.execute(sa.text(f"CREATE TABLE {schema}.t (id int primary key, doc jsonb)"))
            conn.execute(sa.text(f"INSERT INTO {schema}.t VALUES (1, '{{\"a\": 1}}'), (2, '{{}}')"))
        with engine.connect() as conn:
            total = conn.execute(sa.text(f"SELECT count(*) FROM {schema}.t")).scalar_one()
            value = conn.execute(sa.text(f"SELECT doc->>'a' FROM {schema}.t WHERE id = 1"))
            assert (total, value.scalar_one()) == (2, "1")
    finally:
        engine.dispose()
    assert postgres_url.startswith("postgresql+psycopg://") and "@127.0.0.1:" in postgres_url


def test_embedded_postgres_sizes_its_buffers_by_memory(
    postgres_url: str, server_backend: str
) -> None:
    if server_backend == "docker":
        pytest.skip("the container's PostgreSQL keeps its image's settings")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            # pg_settings counts shared_buffers in pages of block_size bytes.
            megabytes = conn.execute(
                sa.text(
                    "SELECT setting::bigint * current_setting('block_size')::bigint / 1048576"
                    " FROM pg_settings WHERE name = 'shared_buffers'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert megabytes == servers.postgres_shared_buffers_mb(servers.physical_memory())


def test_broker_produce_consume(kafka_bootstrap: str, unique_name: Callable[..., str]) -> None:
    topic = unique_name("t")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(timeout=10)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(50)}
    for key, value in sent.items():
        producer.produce(topic, value=value, key=key)
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique_name("g"),
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    try:
        for _ in range(300):
            message = consumer.poll(0.1)
            if message is None or message.error():
                if len(received) == len(sent):
                    break
                continue
            received[message.key()] = message.value()
    finally:
        consumer.close()
    assert received == sent


def test_settings_fixture_points_at_servers(settings: Settings, s3_server: Any) -> None:
    assert settings.kafka_bootstrap.startswith("127.0.0.1:")
    assert settings.lake_url.startswith(f"s3://{s3_server.bucket}/lake_")
    assert settings.s3_endpoint_url == s3_server.endpoint_url
    assert settings.database_url.startswith("postgresql+psycopg://")


# --------------------------------------------------------------------------- supervisor

REPO = Path(__file__).resolve().parents[2]


def _stack_env(data_dir: Path, storage: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSEPIPE_")}
    env.update(
        {
            "HOSEPIPE_DATA_DIR": str(data_dir),
            "HOSEPIPE_CONFIG_FILE": str(REPO / "hosepipe.yaml"),
            "HOSEPIPE_BROKER_PORT": str(servers.free_port()),
            "HOSEPIPE_S3_PORT": str(servers.free_port()),
            "HOSEPIPE_POSTGRES_PORT": str(servers.free_port()),
            "HOSEPIPE_INGEST_PORT": str(servers.free_port()),
            "HOSEPIPE_API_PORT": str(servers.free_port()),
            "HOSEPIPE_EMBEDDED_BROKER_STORAGE": storage,
            "HOSEPIPE_LAKE_URL": "s3://lake/events",
        }
    )
    return env


def _start_stack(env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hosepipe.localstack", "up", "--component", "ingest"],
        env=env,
        cwd=cwd,
        stdout=(cwd / "up.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_ready(process: subprocess.Popen[bytes], data_dir: Path, cwd: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, (cwd / "up.log").read_text()
        state = read_state(data_dir)
        if state and state.get("ready"):
            return state
        time.sleep(0.2)
    process.kill()
    raise AssertionError("stack not ready in 90 s:\n" + (cwd / "up.log").read_text())


def _recorded_pids(state: dict[str, Any]) -> list[int]:
    return [state["supervisor"]["pid"]] + [p["pid"] for p in state["processes"] if p["pid"]]


def _stop_stack(process: subprocess.Popen[bytes], pids: list[int]) -> None:
    assert process.poll() is None, "the stack exited before it was asked to stop"
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    deadline = time.monotonic() + 5
    while any(servers.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in pids if servers.pid_alive(p)] == []


def _s3(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{env['HOSEPIPE_S3_PORT']}",
        aws_access_key_id="hosepipe",
        aws_secret_access_key="hosepipe-secret",
        region_name="us-east-1",
    )


@pytest.fixture
def stack_data_dir() -> Iterator[Path]:
    # Not under tmp_path: see the servers_dir fixture in conftest.py.
    path = Path(tempfile.mkdtemp(prefix="hosepipe-test-up-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_up_stops_everything_and_keeps_data(tmp_path: Path, stack_data_dir: Path) -> None:
    data_dir = stack_data_dir
    env = _stack_env(data_dir, "s3")
    bootstrap = f"127.0.0.1:{env['HOSEPIPE_BROKER_PORT']}"
    topic = f"persisted_{uuid.uuid4().hex[:8]}"

    first = _start_stack(env, tmp_path)
    try:
        state = _wait_ready(first, data_dir, tmp_path)
        names = {p["name"] for p in state["processes"]}
        assert names == {"s3", "broker", "postgres", "ingest"}
        _s3(env).put_object(Bucket="lake", Key="kept.txt", Body=b"still here")
        admin = AdminClient({"bootstrap.servers": bootstrap})
        assert "events.canonical" in admin.list_topics(timeout=10).topics
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)

        # A second stack on the same data directory is refused while this one runs.
        refused = subprocess.run(
            [sys.executable, "-m", "hosepipe.localstack", "up", "--no-components"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2
        assert "still running" in refused.stderr

        # A crashed component comes back with a new pid.
        ingest_pid = next(p["pid"] for p in state["processes"] if p["name"] == "ingest")
        os.kill(ingest_pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        new_pid = ingest_pid
        while new_pid == ingest_pid and time.monotonic() < deadline:
            time.sleep(0.2)
            current = read_state(data_dir) or state
            new_pid = next(p["pid"] for p in current["processes"] if p["name"] == "ingest")
        assert new_pid not in (None, ingest_pid) and servers.pid_alive(new_pid)
        state = read_state(data_dir) or state
    finally:
        if first.poll() is None:
            pids = _recorded_pids(read_state(data_dir) or state)
            _stop_stack(first, pids)
    assert read_state(data_dir) is None  # a clean stop removes the state file

    env.update(HOSEPIPE_INGEST_PORT=str(servers.free_port()))
    second = _start_stack(env, tmp_path)
    try:
        state = _wait_ready(second, data_dir, tmp_path)
        body = _s3(env).get_object(Bucket="lake", Key="kept.txt")["Body"].read()
        assert body == b"still here"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        assert topic in admin.list_topics(timeout=10).topics
        status = subprocess.run(
            [sys.executable, "-m", "hosepipe.localstack", "status"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        _stop_stack(second, _recorded_pids(read_state(data_dir) or state))
