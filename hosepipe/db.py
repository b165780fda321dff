"""The serving database: engines, table definitions and the schema-version check.

The selector owns the schema (alembic migrations in ``selector/migrations``, applied by
``hosepipe db upgrade``); every component that reads or writes PostgreSQL imports the table
definitions from here and calls :func:`check_schema_version` at start, so a database that is
behind the code fails with one clear sentence instead of an SQL error later.

Tables:

* ``events`` — one row per ``event_id`` (the default selection).
* ``selector_files`` — the selector's checkpoint: every lake file loaded, in the same
  transaction as its rows.
* ``selector_file_log`` — per shard, the position in the lake's file log
  (:mod:`hosepipe.file_log`) up to which ``select --follow`` has loaded the announced files.
* ``rejected_rows`` — rows a selection rule could not type, with the reason.
* one table per selection rule (``selection.rules[].table``), created from the declared columns
  by ``hosepipe db upgrade`` after the migrations; each also carries ``_event_id``,
  ``_occurred_at`` and ``_loaded_at`` (which event wrote the row, and when).

After each committed load the selector sends ``NOTIFY hosepipe_events`` (:data:`NOTIFY_CHANNEL`)
with a JSON payload, see :class:`LoadNotice` / docs/selector.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    create_engine,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.types import TypeEngine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from hosepipe.config import ColumnSpec, SelectionConfig, SelectionRule
    from hosepipe.settings import Settings

SCHEMA_HEAD = "0004"
"""The alembic head revision this code expects (``selector/migrations/versions``)."""

VERSION_TABLE = "alembic_version"
NOTIFY_CHANNEL = "hosepipe_events"
"""PostgreSQL channel the selector notifies after every committed load."""

RULE_META_COLUMNS = ("_event_id", "_occurred_at", "_loaded_at")
"""Columns every rule table carries besides the declared ones."""

TimestampTZ = TIMESTAMP(timezone=True)


class LoadNotice(TypedDict):
    """JSON payload of ``NOTIFY hosepipe_events`` (one per committed load transaction)."""

    count: int  # events upserted into `events` (0 when load_all_events is off)
    tables: dict[str, int]  # rows upserted per table, rule tables included
    files: int  # lake files checkpointed by this transaction
    min_occurred_at: str | None  # ISO-8601 UTC of the oldest / newest event in it
    max_occurred_at: str | None
    shard: str  # "i/n" of the selector that loaded it ("0/1" when unsharded)


class SchemaBehindError(RuntimeError):
    """The database schema is older (or newer) than this code; the message says what to do."""


# --------------------------------------------------------------------------- engines


def sync_engine(settings: Settings, **kwargs: Any) -> Engine:
    """A pooled synchronous engine on ``settings.database_url`` (psycopg 3)."""
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(settings.database_url, **kwargs)


def async_url(database_url: str) -> str:
    """The async form of a sync URL (psycopg 3 serves both; bare ``postgresql`` → psycopg)."""
    scheme, sep, rest = database_url.partition("://")
    if scheme in {"postgresql", "postgres", "postgresql+psycopg2"}:
        scheme = "postgresql+psycopg"
    return f"{scheme}{sep}{rest}"


def async_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """An asyncio engine on the same database (``postgresql+psycopg`` or ``+asyncpg`` URLs)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(async_url(settings.database_url), **kwargs)


# --------------------------------------------------------------------------- fixed tables

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("source", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("occurred_at", TimestampTZ, nullable=False),
    Column("ingested_at", TimestampTZ, nullable=False),
    Column("subject", Text, nullable=True),
    Column("payload", JSONB, nullable=False),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Keyset pagination of the API orders by (occurred_at, event_id).
    Index("events_occurred_at_event_id_idx", "occurred_at", "event_id"),
    Index("events_source_occurred_at_event_id_idx", "source", "occurred_at", "event_id"),
    Index("events_subject_idx", "subject"),
    Index("events_event_type_idx", "event_type"),
)

selector_files = Table(
    "selector_files",
    metadata,
    Column("path", Text, primary_key=True, comment="Lake file path, relative to the lake root."),
    Column("partition", Text, nullable=False, comment="Hive partition directory of the file."),
    Column("size", BigInteger, nullable=False),
    Column("etag", Text, nullable=True, comment="mtime (ns) or S3 ETag when known."),
    Column("rows", BigInteger, nullable=False),
    Column("loaded_at", TimestampTZ, nullable=False, server_default=func.now()),
)

selector_file_log = Table(
    "selector_file_log",
    metadata,
    Column("shard", Text, nullable=False, comment="Selector shard, e.g. 0/1."),
    Column("topic", Text, nullable=False, comment="The file-log topic (topics.file_log)."),
    Column("partition", Integer, nullable=False),
    Column("next_offset", BigInteger, nullable=False, comment="First record not yet loaded."),
    Column("updated_at", TimestampTZ, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("shard", "topic", "partition", name="selector_file_log_pkey"),
)

rejected_rows = Table(
    "rejected_rows",
    metadata,
    Column("rule", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("row", JSONB, nullable=False, comment="The event as read from the lake."),
    Column("file", Text, nullable=True),
    Column("at", TimestampTZ, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("rule", "event_id", name="rejected_rows_pkey"),
    Index("rejected_rows_at_idx", "at"),
)


# --------------------------------------------------------------------------- rule tables


def column_type(spec: ColumnSpec) -> TypeEngine[Any]:
    """The SQLAlchemy type of a declared rule column."""
    match spec.type:
        case "text":
            return Text()
        case "integer":
            return Integer()
        case "bigint":
            return BigInteger()
        case "numeric":
            if spec.precision is not None:
                return Numeric(spec.precision, spec.scale or 0)
            return Numeric()
        case "double":
            return Double()
        case "boolean":
            return Boolean()
        case "timestamptz":
            return TIMESTAMP(timezone=True)
        case "date":
            return Date()
        case "jsonb":
            return JSONB()
    raise ValueError(f"unknown column type {spec.type!r}")


def rule_table(rule: SelectionRule, target: MetaData) -> Table:
    """The table a selection rule loads into: declared columns + meta columns, key = PK.

    A rule without columns is a filtered copy of ``events`` (same columns and key).
    """
    if not rule.columns:
        return Table(
            rule.table,
            target,
            *(Column(c.name, c.type, primary_key=c.primary_key) for c in events.columns),
            Column("_loaded_at", TimestampTZ, nullable=False, server_default=func.now()),
        )
    columns = [
        Column(
            name,
            column_type(spec),
            nullable=spec.nullable and name not in rule.key,
        )
        for name, spec in rule.columns.items()
    ]
    return Table(
        rule.table,
        target,
        *columns,
        Column("_event_id", Text, nullable=False),
        Column("_occurred_at", TimestampTZ, nullable=False),
        Column("_loaded_at", TimestampTZ, nullable=False, server_default=func.now()),
        PrimaryKeyConstraint(*rule.key, name=f"{rule.table}_pkey"),
    )


def rule_tables(selection: SelectionConfig, target: MetaData | None = None) -> dict[str, Table]:
    """Tables of every selection rule, by rule name (in a fresh MetaData unless given)."""
    meta = target if target is not None else MetaData()
    return {rule.name: rule_table(rule, meta) for rule in selection.rules}


# --------------------------------------------------------------------------- version check


def current_revision(engine: Engine) -> str | None:
    """The alembic revision the database is at; None when never migrated."""
    with engine.connect() as conn:
        exists = conn.execute(
            text("SELECT to_regclass(:name) IS NOT NULL"), {"name": VERSION_TABLE}
        ).scalar_one()
        if not exists:
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def check_schema_version(engine: Engine, selection: SelectionConfig | None = None) -> None:
    """Raise :class:`SchemaBehindError` unless the database is at :data:`SCHEMA_HEAD`.

    With ``selection``, also require every rule table to exist (``hosepipe db upgrade``
    creates them).
    """
    where = engine.url.render_as_string(hide_password=True)
    revision = current_revision(engine)
    if revision is None:
        raise SchemaBehindError(
            f"database {where} has no hosepipe schema: run `hosepipe db upgrade`"
        )
    if revision != SCHEMA_HEAD:
        if revision < SCHEMA_HEAD:
            raise SchemaBehindError(
                f"database {where} is at schema revision {revision}, this hosepipe needs "
                f"{SCHEMA_HEAD}: run `hosepipe db upgrade`"
            )
        raise SchemaBehindError(
            f"database {where} is at schema revision {revision}, newer than this hosepipe "
            f"({SCHEMA_HEAD}): upgrade hosepipe"
        )
    if selection is not None and selection.rules:
        with engine.connect() as conn:
            missing = [
                rule.table
                for rule in selection.rules
                if not conn.execute(
                    text("SELECT to_regclass(:name) IS NOT NULL"), {"name": rule.table}
                ).scalar_one()
            ]
        if missing:
            raise SchemaBehindError(
                f"database {where} lacks the table(s) {', '.join(missing)} of the selection "
                "rules: run `hosepipe db upgrade`"
            )
