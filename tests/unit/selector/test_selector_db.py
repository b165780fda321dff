"""hosepipe.db table definitions and the schema head, without a server."""

from __future__ import annotations

from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from hosepipe.config import SelectionConfig
from hosepipe.db import SCHEMA_HEAD, async_url, events, rule_tables
from selector.schema import head_revision


def selection(**rule: Any) -> SelectionConfig:
    return SelectionConfig.model_validate({"rules": [{"name": "r", "table": "t", **rule}]})


def test_schema_head_matches_the_migrations() -> None:
    assert head_revision() == SCHEMA_HEAD


def test_events_table_shape() -> None:
    assert [c.name for c in events.primary_key.columns] == ["event_id"]
    assert {i.name for i in events.indexes} == {
        "events_occurred_at_event_id_idx",
        "events_source_occurred_at_event_id_idx",
        "events_subject_idx",
        "events_event_type_idx",
    }


def test_rule_table_from_declared_columns() -> None:
    config = selection(
        columns={
            "order_id": {"path": "$.payload.id"},
            "amount": {"path": "$.payload.a", "type": "numeric", "precision": 12, "scale": 2},
            "at": {"path": "occurred_at", "type": "timestamptz", "nullable": False},
        },
        key=["order_id"],
    )
    table = rule_tables(config)["r"]
    ddl = str(CreateTable(table).compile(dialect=postgresql.dialect()))
    assert "amount NUMERIC(12, 2)" in ddl
    assert "at TIMESTAMP WITH TIME ZONE NOT NULL" in ddl
    assert "order_id TEXT NOT NULL" in ddl  # key columns are never null
    assert "PRIMARY KEY (order_id)" in ddl
    assert {"_event_id", "_occurred_at", "_loaded_at"} <= set(table.columns.keys())


def test_rule_without_columns_copies_events_shape() -> None:
    table = rule_tables(selection(sources=["orders"]), MetaData())["r"]
    assert set(events.columns.keys()) <= set(table.columns.keys())
    assert [c.name for c in table.primary_key.columns] == ["event_id"]


def test_async_url() -> None:
    assert async_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert async_url("postgresql+asyncpg://u@h/d") == "postgresql+asyncpg://u@h/d"
