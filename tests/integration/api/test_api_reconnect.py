"""The API survives a PostgreSQL restart: the first request after it succeeds.

The pool does not ping connections at checkout; a read that hits a connection the restart
killed is run once more on a fresh one (api/store.py). This test restarts a PostgreSQL of its
own (the session's server is shared by every test).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from tests.integration.api.api_support import (
    RunningApi,
    _run_server,
    api_settings,
    make_event,
    pipeline_with,
)

pytestmark = pytest.mark.integration

QUERY = {"query": "{ events(first: 5) { edges { node { eventId } } totalCount } sources { name } }"}


@pytest.fixture
def own_postgres() -> Iterator[tuple[Path, int]]:
    """Data dir and port of a PostgreSQL only this test uses (not under tmp_path: see
    tests/conftest.py servers_dir, PostgreSQL may run as another user)."""
    from hosepipe.localstack.servers import free_port

    data_dir = Path(tempfile.mkdtemp(prefix="hosepipe-test-pg-restart-"))
    try:
        yield data_dir, free_port()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def post(api: RunningApi) -> dict[str, object]:
    response = httpx.post(api.graphql, json=QUERY, timeout=30)
    assert response.status_code == 200, response.text[:300]
    body: dict[str, object] = response.json()
    return body


def test_first_request_after_a_postgres_restart_succeeds(own_postgres: tuple[Path, int]) -> None:
    from hosepipe.db import events
    from hosepipe.localstack.servers import start_postgres
    from selector.schema import upgrade

    data_dir, port = own_postgres
    pg = start_postgres(data_dir, port, durable=False)
    try:
        engine = create_engine(pg.url)
        upgrade(engine, pipeline_with().selection)
        with engine.begin() as conn:
            conn.execute(events.insert(), [make_event(i) for i in range(3)])
        engine.dispose()

        server = _run_server(api_settings(pg.url), pipeline_with())
        api = next(server)
        try:
            # Fill the pool with several open connections, all of which the restart kills.
            for _ in range(4):
                assert not post(api).get("errors")
            pg.stop()
            deadline = time.monotonic() + 15
            while True:  # the port is free again once the old server has closed it
                try:
                    pg = start_postgres(data_dir, port, durable=False)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            for attempt in range(4):
                body = post(api)
                assert not body.get("errors"), f"request {attempt} after restart: {body}"
                data = body["data"]
                assert isinstance(data, dict) and data["events"]["totalCount"] == 3
            health = httpx.get(f"{api.url}/healthz", timeout=30)
            assert health.status_code == 200, health.text
        finally:
            with contextlib.suppress(StopIteration):
                next(server)
    finally:
        pg.stop()
