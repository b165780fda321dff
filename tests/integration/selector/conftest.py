"""Selector fixtures: a fresh database per test, an S3 lake prefix, lake-file writers."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from hosepipe.config import PipelineConfig, load_pipeline
from hosepipe.lake import (
    data_file_key,
    events_to_table,
    open_lake_store,
    parquet_bytes,
    partition_path,
)
from hosepipe.settings import Settings

HOUR_US = 3_600_000_000
BASE_US = 1_763_769_600_000_000  # 2025-11-22T00:00:00Z

ORDERS_RULE: dict[str, Any] = {
    "name": "orders",
    "table": "orders",
    "sources": ["orders"],
    "columns": {
        "order_id": {"path": "$.payload.id", "type": "text", "nullable": False},
        "customer_id": {"path": "$.payload.customer.id"},
        "status": {"path": "event_type"},
        "amount": {
            "path": "$.payload.total.amount",
            "type": "numeric",
            "precision": 12,
            "scale": 2,
        },
        "currency": {"path": "$.payload.total.currency"},
        "occurred_at": {"path": "occurred_at", "type": "timestamptz", "nullable": False},
    },
    "key": ["order_id"],
}


def make_event(
    i: int,
    *,
    hour: int = 0,
    source: str = "orders",
    amount: Any = None,
    order: str | None = None,
    payload: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A canonical event in hour ``hour`` after BASE_US (orders payload shape)."""
    occurred = BASE_US + hour * HOUR_US + (i % 3600) * 1_000_000
    body = {
        "id": order or f"o{i}",
        "customer": {"id": f"c{i % 7}"},
        "total": {"amount": amount if amount is not None else f"{i}.50", "currency": "EUR"},
    }
    return {
        "event_id": event_id or f"e{i}",
        "source": source,
        "event_type": "created",
        "occurred_at": occurred,
        "ingested_at": occurred + 1000,
        "subject": f"c{i % 7}",
        "payload": payload if payload is not None else json.dumps(body),
        "attributes": {"channel": "test"} if i % 2 else {},
    }


@pytest.fixture(name="make_event")
def make_event_fixture() -> Callable[..., dict[str, Any]]:
    """The :func:`make_event` factory."""
    return make_event


@pytest.fixture
def orders_rule() -> dict[str, Any]:
    """A fresh copy of the orders selection rule."""
    return json.loads(json.dumps(ORDERS_RULE))


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server; dropped afterwards."""
    name = f"sel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def selector_settings(s3_server: Any, database_url: str, tmp_path: Path) -> Settings:
    """Settings with a fresh S3 lake prefix and a fresh database (no broker needed)."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        config_file=tmp_path / "hosepipe.yaml",
        data_dir=tmp_path / "data",
        lake_url=f"s3://{s3_server.bucket}/lake_{uuid.uuid4().hex[:12]}",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_access_key_id=s3_server.access_key,
        s3_secret_access_key=s3_server.secret_key,  # type: ignore[arg-type]
        s3_region=s3_server.region,
        database_url=database_url,
        metrics_port=0,
    )


@pytest.fixture
def write_pipeline(selector_settings: Settings) -> Callable[..., PipelineConfig]:
    """Write hosepipe.yaml with a selection section (and sink keys); return the model."""

    def write(
        rules: Sequence[dict[str, Any]] = (ORDERS_RULE,),
        partition_keys: Sequence[str] = ("source",),
        **selection: Any,
    ) -> PipelineConfig:
        document = {
            "version": 1,
            "sources": {
                "orders": {
                    "kind": "push",
                    "mapping": {
                        "event_id": "$.id",
                        "occurred_at": "$.at",
                        "event_type": {"const": "created"},
                    },
                }
            },
            "sink": {"partition_keys": list(partition_keys)},
            "selection": {"rules": list(rules), **selection},
        }
        path = selector_settings.config_file
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        return load_pipeline(path)

    return write


@pytest.fixture
def write_lake(selector_settings: Settings) -> Callable[..., list[str]]:
    """Write events as lake files (one per partition, offset = first_offset + n); keys."""

    def write(
        events: Sequence[dict[str, Any]],
        keys: Sequence[str] = ("source",),
        first_offset: int = 0,
        topic: str = "events.canonical",
    ) -> list[str]:
        store = open_lake_store(selector_settings)
        by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_partition[partition_path(event, keys)].append(event)
        written = []
        for n, (directory, rows) in enumerate(sorted(by_partition.items())):
            key = data_file_key(directory, topic, 0, first_offset + n)
            store.put(key, parquet_bytes(events_to_table(rows)))
            written.append(key)
        return written

    return write
