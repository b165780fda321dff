"""Fixtures of the connector integration tests: a pipeline with fresh topics, a running
ingest server (uvicorn in a thread on a free loopback port) and a topic reader."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from confluent_kafka import Consumer, TopicPartition

from connectors.http.app import build_app
from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings
from hosepipe.topics import ensure_topics

API_KEY = "test-key-0123456789abcdef"
LIMITED_KEY = "limited-key-0123456789abcdef"
ACCESS_KEY = "AKIDHOSEPIPETEST"
SECRET_KEY = "hosepipe-firehose-secret"


def make_pipeline(
    unique: str, extra_sources: dict[str, Any] | None = None, **ingest: Any
) -> PipelineConfig:
    """A pipeline with push sources ``clicks`` (keyed by $.id) and ``orders``, on topics
    unique to the test."""
    mapping = {
        "event_id": "$.id",
        "occurred_at": {"path": "$.ts", "format": "epoch_ms"},
        "event_type": {"const": "test"},
    }
    sources: dict[str, Any] = {
        "clicks": {"kind": "push", "key_path": "$.id", "mapping": mapping},
        "orders": {"kind": "push", "mapping": mapping},
    }
    sources.update(extra_sources or {})
    return PipelineConfig.model_validate(
        {
            "topics": {
                "raw_prefix": f"raw.{unique}.",
                "canonical": f"canonical.{unique}",
                "dlq": f"dlq.{unique}",
                "partitions": 2,
            },
            "sources": sources,
            "ingest": {
                "auth": True,
                "api_keys": [
                    {"key": API_KEY, "name": "all"},
                    {"key": LIMITED_KEY, "name": "orders-only", "sources": ["orders"]},
                ],
                "firehose_keys": [{"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}],
                **ingest,
            },
        }
    )


@dataclass
class RunningServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(app: Any) -> RunningServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="ingest-test", daemon=True
    )
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return RunningServer(url, server, thread)
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"ingest on {url} did not become healthy within 15 s")
        time.sleep(0.05)


@pytest.fixture
def pipeline(settings: Settings, unique_name: Callable[..., str]) -> PipelineConfig:
    config = make_pipeline(unique_name("ing"))
    ensure_topics(settings, config)
    return config


@pytest.fixture
def ingest_url(settings: Settings, pipeline: PipelineConfig) -> Iterator[str]:
    running = start_server(build_app(settings, pipeline))
    try:
        yield running.url
    finally:
        running.stop()


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Any]:
    """Consume ``topic`` from the beginning until ``expected`` messages (or timeout); then
    keep reading briefly to catch extras."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = list(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    extra_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if extra_until is not None and time.monotonic() > extra_until:
                break
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            messages.append(msg)
            if len(messages) >= expected and extra_until is None:
                extra_until = time.monotonic() + 1.0
    finally:
        consumer.close()
    return messages


class Kit:
    """Helpers for the test modules (with --import-mode=importlib they cannot import this
    conftest, so they get it through the ``kit`` fixture)."""

    API_KEY = API_KEY
    LIMITED_KEY = LIMITED_KEY
    ACCESS_KEY = ACCESS_KEY
    SECRET_KEY = SECRET_KEY
    make_pipeline = staticmethod(make_pipeline)
    read_topic = staticmethod(read_topic)
    start_server = staticmethod(start_server)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
