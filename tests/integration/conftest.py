"""Integration fixtures beyond tests/conftest.py.

- ``schema_registry_url``: ``"http://127.0.0.1:PORT"`` of hosepipe's Confluent-compatible
  registry (:mod:`hosepipe.registry_server`), served in-process for the session.
- ``s3_broker``: ``(bootstrap, bucket)`` of a Tansu broker keeping its topics in the session's
  S3 server, as the embedded stack does (one per module; embedded backend only).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from hosepipe.registry_server import create_app
from tests.conftest import S3Endpoint


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="schema-registry", daemon=True
    )
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"{url}/subjects", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"schema registry on {url} did not answer within 10 s")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def s3_broker(
    server_backend: str, s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """``(bootstrap, bucket)`` of a Tansu broker with s3:// storage (embedded backend only)."""
    if server_backend == "docker":
        pytest.skip("these tests read Tansu's S3 layout; the docker backend runs Apache Kafka")
    from hosepipe.localstack.servers import BrokerS3Storage, free_port, start_broker

    bucket = f"broker-{uuid.uuid4().hex[:8]}"
    s3_server.client().create_bucket(Bucket=bucket)
    storage = BrokerS3Storage(
        bucket, s3_server.endpoint_url, s3_server.access_key, s3_server.secret_key
    )
    broker = start_broker(tmp_path_factory.mktemp("s3-broker"), free_port(), s3=storage)
    try:
        yield broker.bootstrap, bucket
    finally:
        broker.stop()
