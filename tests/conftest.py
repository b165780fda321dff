"""Real servers for integration tests, started lazily once per session.

- ``kafka_bootstrap``: ``"127.0.0.1:PORT"`` of a Tansu broker (memory storage).
- ``s3_server``: :class:`S3Endpoint` (endpoint_url, access_key, secret_key, bucket, region).
- ``postgres_url``: ``"postgresql+psycopg://user:pass@127.0.0.1:PORT/db"``.
- ``settings``: :class:`hosepipe.settings.Settings` pointing at all three, with its own lake
  prefix, data dir and config file under ``tmp_path``.
- ``unique_name``: ``unique_name("orders") -> "orders_3f9c1a2b7d4e"``.
- ``hosepipe_yaml``: write a pipeline file at ``settings.config_file``; returns its path.

Without a Docker engine (the usual case here) the servers are the embedded ones from
:mod:`hosepipe.localstack.servers` on free loopback ports under a session tmp dir. With a
Docker engine answering, testcontainers (apache/kafka, MinIO, postgres:16) are used
instead. ``TEST_SERVERS=embedded|docker|auto`` (default auto) forces the choice.
A run that requests none of these fixtures starts nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hosepipe.settings import Settings

S3_ACCESS_KEY = "hosepipe-test"
S3_SECRET_KEY = "hosepipe-test-secret"
S3_BUCKET = "hosepipe-test"
S3_REGION = "us-east-1"
PG_USER = PG_PASSWORD = PG_DATABASE = "hosepipe"


@dataclass(frozen=True)
class S3Endpoint:
    """Where the test S3 answers; ``bucket`` already exists."""

    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = S3_REGION

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None and not os.environ.get("DOCKER_HOST"):
        return False
    try:
        import docker  # comes with testcontainers

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        pass
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _kafka_container() -> Iterator[str]:
    """Single-node KRaft Apache Kafka, advertised on a fixed loopback host port."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    from hosepipe.localstack.servers import free_port

    port = free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    container = DockerContainer("apache/kafka:3.8.1").with_bind_ports(
        9092,
        ("127.0.0.1", port),  # type: ignore[arg-type]
    )
    for key, value in env.items():
        container = container.with_env(key, value)
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def server_backend() -> str:
    """'embedded' or 'docker' (see the module docstring)."""
    choice = os.environ.get("TEST_SERVERS", "auto").lower()
    if choice in {"embedded", "docker"}:
        return choice
    if choice != "auto":
        raise pytest.UsageError(f"TEST_SERVERS must be embedded, docker or auto, not {choice!r}")
    return "docker" if _docker_engine_answers() else "embedded"


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    """Data of the session's servers, outside pytest's tmp tree on purpose.

    Under root PostgreSQL runs as another user, who must traverse the path; every pytest
    start resets its ``pytest-of-<user>`` directory to mode 0700, which would lock it out.
    """
    path = Path(tempfile.mkdtemp(prefix="hosepipe-test-servers-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(server_backend: str, servers_dir: Path) -> Iterator[str]:
    if server_backend == "docker":
        yield from _kafka_container()
        return
    from hosepipe.localstack.servers import free_port, start_broker

    broker = start_broker(servers_dir / "broker", free_port())
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def s3_server(server_backend: str, servers_dir: Path) -> Iterator[S3Endpoint]:
    if server_backend == "docker":
        from testcontainers.community.minio import MinioContainer

        with MinioContainer(access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY) as minio:
            config = minio.get_config()
            endpoint = S3Endpoint(
                endpoint_url=f"http://{config['endpoint']}",
                access_key=S3_ACCESS_KEY,
                secret_key=S3_SECRET_KEY,
                bucket=S3_BUCKET,
            )
            endpoint.client().create_bucket(Bucket=S3_BUCKET)
            yield endpoint
        return
    from hosepipe.localstack.servers import free_port, start_s3

    server = start_s3(servers_dir / "s3", free_port(), S3_ACCESS_KEY, S3_SECRET_KEY, [S3_BUCKET])
    try:
        yield S3Endpoint(
            endpoint_url=server.endpoint_url,
            access_key=server.access_key,
            secret_key=server.secret_key,
            bucket=server.bucket,
            region=server.region,
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(server_backend: str, servers_dir: Path) -> Iterator[str]:
    if server_backend == "docker":
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer(
            "postgres:16",
            username=PG_USER,
            password=PG_PASSWORD,
            dbname=PG_DATABASE,
            driver="psycopg",
        ) as pg:
            yield pg.get_connection_url()
        return
    from hosepipe.localstack.servers import free_port, start_postgres

    server = start_postgres(
        servers_dir / "postgres",
        free_port(),
        user=PG_USER,
        password=PG_PASSWORD,
        database=PG_DATABASE,
        durable=False,  # a throwaway cluster: skip fsync
    )
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """``unique_name("orders")`` -> ``"orders_<12 hex>"``: for topics, prefixes, schemas."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}_{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def settings(
    kafka_bootstrap: str,
    s3_server: S3Endpoint,
    postgres_url: str,
    unique_name: Callable[..., str],
    tmp_path: Path,
) -> Settings:
    """Settings for all three servers; lake under a fresh prefix of the test bucket."""
    from hosepipe.localstack.servers import free_port

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        config_file=tmp_path / "hosepipe.yaml",
        data_dir=tmp_path / "data",
        kafka_bootstrap=kafka_bootstrap,
        lake_url=f"s3://{s3_server.bucket}/{unique_name('lake')}",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,  # type: ignore[arg-type]
        s3_region=s3_server.region,
        database_url=postgres_url,
        bind_host="127.0.0.1",
        ingest_port=free_port(),
        api_port=free_port(),
        metrics_port=0,
    )


@pytest.fixture
def hosepipe_yaml(tmp_path: Path) -> Callable[[str | Mapping[str, Any]], Path]:
    """Write pipeline YAML (text or a mapping) to ``tmp_path/hosepipe.yaml``.

    That is where the ``settings`` fixture's ``config_file`` points. Load it with
    ``hosepipe.config.load_pipeline(path)``.
    """

    def write(content: str | Mapping[str, Any]) -> Path:
        path = tmp_path / "hosepipe.yaml"
        text = content if isinstance(content, str) else yaml.safe_dump(dict(content))
        path.write_text(text, encoding="utf-8")
        return path

    return write
