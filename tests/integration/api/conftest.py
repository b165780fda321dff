"""Fixtures of the API tests: a migrated schema of its own per test, a running API server."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.integration.api.api_support import (
    ApiDatabase,
    RunningApi,
    _run_server,
    api_settings,
    pipeline_with,
    with_search_path,
)


@pytest.fixture
def api_db(postgres_url: str, unique_name: Callable[..., str]) -> Iterator[ApiDatabase]:
    """A fresh schema migrated by the selector's migrations (``hosepipe db upgrade``)."""
    from selector.schema import upgrade

    schema = unique_name("api")
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = with_search_path(postgres_url, schema)
    engine = create_engine(url)
    upgrade(engine, pipeline_with().selection)
    try:
        yield ApiDatabase(url, schema, engine)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def start_api(api_db: ApiDatabase) -> Iterator[Callable[..., RunningApi]]:
    """``start_api(**api_config)`` runs an API server on the test schema; stopped after."""
    stack: list[Iterator[RunningApi]] = []

    def start(**api: Any) -> RunningApi:
        gen = _run_server(api_settings(api_db.url), pipeline_with(**api))
        stack.append(gen)
        return next(gen)

    yield start
    for gen in reversed(stack):
        with contextlib.suppress(StopIteration):
            next(gen)


@pytest.fixture
def api(start_api: Callable[..., RunningApi]) -> RunningApi:
    """An API server with auth off."""
    return start_api()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(7)
