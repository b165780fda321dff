"""Servers of the bad-input tests: one pipeline per module on fresh topics.

Only what a test module asks for starts: the worker and ingest tests need the broker alone,
the GraphQL and loader tests PostgreSQL alone.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings
from tests.badinput.support import pipeline


@dataclass
class Stack:
    """Settings and pipeline of one module, its topics created."""

    settings: Settings
    pipeline: PipelineConfig


def make_stack(kafka_bootstrap: str, data: Path) -> Stack:
    """A pipeline on fresh topics (created) and settings for the broker only."""
    from hosepipe.topics import ensure_topics

    prefix = f"bi{uuid.uuid4().hex[:10]}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap=kafka_bootstrap,
        data_dir=data,
        config_file=data / "hosepipe.yaml",
        bind_host="127.0.0.1",
    )
    config = pipeline(prefix)
    ensure_topics(settings, config)
    return Stack(settings, config)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return make_stack(kafka_bootstrap, tmp_path_factory.mktemp("badinput"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(app: Any, port: int) -> Iterator[str]:
    """Run an ASGI app on uvicorn in a thread on 127.0.0.1:port; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="badinput-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start within 30 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def ingest_url(stack: Stack) -> Iterator[str]:
    from connectors.http.app import build_app

    yield from serve(build_app(stack.settings, stack.pipeline), free_port())


def read_all(settings: Settings, topic: str) -> list[Any]:
    from streams.dlq import read_topic

    return list(read_topic(settings, topic))
