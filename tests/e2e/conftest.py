"""Fixtures of the end-to-end suite: a whole pipeline as subprocesses (see support.py).

- ``e2e_stack(feed_url=None, **settings_overrides)`` -> a migrated, not yet started
  :class:`~tests.e2e.support.Stack` with its own topics, groups, database and lake prefix;
- ``make_database(server_url)`` -> URL of a fresh database on that server;
- ``feed_api`` -> a paginated JSON API on 127.0.0.1 for the HTTP poller, and its URL.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hosepipe.config import load_pipeline
from hosepipe.settings import Settings
from tests.e2e.support import FeedApi, Stack, pipeline_document


@pytest.fixture
def feed_api() -> Iterator[tuple[FeedApi, str]]:
    """A :class:`FeedApi` served on 127.0.0.1; yields it and its URL."""
    api = FeedApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            body = api.answer(query)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="feed-api")
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}/items"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def make_database(postgres_url: str) -> Iterator[Callable[..., str]]:
    """``make_database(server_url)`` -> URL of a fresh database there; dropped afterwards."""
    made: list[tuple[str, str]] = []

    def make(server_url: str = postgres_url) -> str:
        name = f"e2e_{uuid.uuid4().hex[:12]}"
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        made.append((server_url, name))
        return make_url(server_url).set(database=name).render_as_string(hide_password=False)

    yield make
    for server_url, name in made:
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception:
            pass  # the server of a fault test may be gone already
        finally:
            admin.dispose()


@pytest.fixture
def e2e_stack(
    settings: Settings,
    make_database: Callable[..., str],
    tmp_path: Path,
) -> Iterator[Callable[..., Stack]]:
    """``e2e_stack(feed_url=None, **settings_overrides)`` -> a migrated, not yet started Stack.

    Call ``stack.start_all()`` to run the components. Everything is stopped afterwards.
    """
    stacks: list[Stack] = []

    def build(feed_url: str | None = None, **overrides: Any) -> Stack:
        from hosepipe.topics import ensure_topics

        tag = uuid.uuid4().hex[:10]
        database_url = overrides.pop("database_url", None) or make_database()
        config_file = tmp_path / f"hosepipe-{tag}.yaml"
        config_file.write_text(yaml.safe_dump(pipeline_document(tag, feed_url)))
        stack_settings = settings.model_copy(
            update={
                "config_file": config_file,
                "data_dir": tmp_path / f"data-{tag}",
                "database_url": database_url,
                **overrides,
            }
        )
        pipeline = load_pipeline(config_file)
        ensure_topics(stack_settings, pipeline)
        log_dir = tmp_path / f"logs-{tag}"
        log_dir.mkdir()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("HOSEPIPE_")}
        base_env["PYTHONUNBUFFERED"] = "1"
        stack = Stack(stack_settings, pipeline, tag, log_dir, base_env)
        stacks.append(stack)
        stack.run_once("db", "upgrade")
        return stack

    yield build
    for stack in stacks:
        stack.stop_all()
