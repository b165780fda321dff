"""Helpers of the API tests: the test pipeline, seed events, a server runner, the gql client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from gql import Client, gql
from gql.transport.httpx import HTTPXTransport
from sqlalchemy import Engine, insert, text

from hosepipe.config import PipelineConfig
from hosepipe.db import events
from hosepipe.settings import Settings

PIPELINE: dict[str, Any] = {
    "sources": {
        "orders": {
            "kind": "push",
            "mapping": {
                "event_id": "$.id",
                "occurred_at": "$.ts",
                "event_type": "$.status",
                "payload": {"path": "$.order"},
            },
        },
        "clicks": {
            "kind": "push",
            "mapping": {"event_id": "$.id", "occurred_at": "$.ts", "event_type": "$.type"},
        },
    },
    "selection": {
        "rules": [
            {
                "name": "orders",
                "table": "orders",
                "sources": ["orders"],
                "columns": {
                    "order_id": {"path": "$.payload.id", "type": "text", "nullable": False},
                    "amount": {
                        "path": "$.payload.amount",
                        "type": "numeric",
                        "precision": 12,
                        "scale": 2,
                    },
                    "quantity": {"path": "$.payload.quantity", "type": "integer"},
                    "occurred_at": {
                        "path": "occurred_at",
                        "type": "timestamptz",
                        "nullable": False,
                    },
                },
                "key": ["order_id"],
            }
        ]
    },
    "api": {"auth": "none", "max_first": 1000, "exact_count_limit": 1000},
}


def pipeline_with(**api: Any) -> PipelineConfig:
    """The test pipeline with ``api`` keys replaced."""
    raw = {**PIPELINE, "api": {**PIPELINE["api"], **api}}
    return PipelineConfig.model_validate(raw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` first (libpq ``options``, psycopg honours it)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@dataclass
class ApiDatabase:
    """A migrated schema of its own: URL, a sync engine, helpers to add events."""

    url: str
    schema: str
    engine: Engine

    def add_events(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(events), rows)

    def notify(self, payload: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("SELECT pg_notify('hosepipe_events', :p)"), {"p": payload})


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_event(i: int, **overrides: Any) -> dict[str, Any]:
    """A deterministic event number ``i`` (sources alternate, one per minute from T0)."""
    source = "orders" if i % 2 == 0 else "clicks"
    row = {
        "event_id": f"e{i:06d}",
        "source": source,
        "event_type": ["created", "paid", "shipped"][i % 3] if source == "orders" else "click",
        "occurred_at": T0 + timedelta(minutes=i),
        "ingested_at": T0 + timedelta(minutes=i, seconds=5),
        "subject": f"customer-{i % 5}",
        "payload": {
            "id": f"o{i}",
            "amount": i * 1.5,
            "customer": {"tier": "gold" if i % 4 == 0 else "basic"},
            "tags": ["a", "b"] if i % 2 else ["c"],
        },
        "attributes": {"channel": "web" if i % 2 else "backend"},
    }
    row.update(overrides)
    return row


def api_settings(url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,
        bind_host="127.0.0.1",
        api_port=free_port(),
    )


@dataclass
class RunningApi:
    url: str  # http://127.0.0.1:PORT
    settings: Settings
    pipeline: PipelineConfig

    @property
    def graphql(self) -> str:
        return f"{self.url}/graphql"

    @property
    def ws(self) -> str:
        return self.graphql.replace("http://", "ws://")


def _run_server(settings: Settings, pipeline: PipelineConfig) -> Iterator[RunningApi]:
    import uvicorn

    from api.app import build_state, create_app

    app = create_app(build_state(settings, pipeline, pool_size=4))
    config = uvicorn.Config(
        app, host="127.0.0.1", port=settings.api_port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("API server did not start within 20 s")
        time.sleep(0.02)
    try:
        yield RunningApi(f"http://127.0.0.1:{settings.api_port}", settings, pipeline)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run(
    url: str,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Execute ``query`` with gql over HTTP; raises gql's TransportQueryError on errors."""
    transport = HTTPXTransport(url=url, headers=headers or {}, timeout=30)
    with Client(transport=transport, fetch_schema_from_transport=False) as session:
        request = gql(query)
        request.variable_values = variables
        result: dict[str, Any] = session.execute(request)
        return result
