"""``hosepipe db upgrade``: alembic migrations, then the tables the selection rules declare.

Migrations own the fixed tables (``events``, ``selector_files``, ``rejected_rows``). Rule
tables come from ``hosepipe.yaml`` and change with it, so they are reconciled after the
migrations: created when missing, declared columns added, types, nullability and the key
altered to match. Undeclared columns are left alone (dropping data is a person's decision).
Everything runs in one transaction under an advisory lock, so two pods may upgrade at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, Table, inspect, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from hosepipe.config import SelectionConfig
from hosepipe.db import rule_tables

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_LOCK = 0x686F7365  # advisory lock key: "hose"
DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


class SchemaError(RuntimeError):
    """A rule table cannot be brought to its declared shape; the message names table/column."""


def alembic_config() -> Config:
    """Alembic configuration pointing at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision among the packaged migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}")
    return head


@dataclass
class UpgradeReport:
    """What ``upgrade`` changed."""

    revision_before: str | None
    revision_after: str
    statements: list[str] = field(default_factory=list)


def migrate(conn: Connection, revision: str = "head") -> None:
    """Run alembic ``upgrade`` to ``revision`` on an open connection (its transaction)."""
    config = alembic_config()
    config.attributes["connection"] = conn
    # alembic logs its plugin setup at INFO; only our summary line is worth a log entry.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(config, revision)


def _revision(conn: Connection) -> str | None:
    if not conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar_one():
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(
    engine: Engine, selection: SelectionConfig | None, revision: str = "head"
) -> UpgradeReport:
    """Migrate to ``revision`` and reconcile the rule tables of ``selection``, atomically."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK})
        before = _revision(conn)
        migrate(conn, revision)
        statements: list[str] = []
        if selection is not None:
            statements = reconcile_rule_tables(conn, selection)
        after = _revision(conn) or ""
    log.info(
        "database schema upgraded",
        extra={"from": before, "to": after, "rule_table_changes": len(statements)},
    )
    return UpgradeReport(before, after, statements)


def _type_sql(type_: object) -> str:
    return str(type_.compile(dialect=DIALECT)).upper()  # type: ignore[attr-defined]


def plan_table_changes(conn: Connection, table: Table) -> list[str]:
    """SQL statements that bring an existing ``table`` to its declared shape."""
    inspector = inspect(conn)
    existing = {c["name"]: c for c in inspector.get_columns(table.name)}
    name = f'"{table.name}"'
    statements: list[str] = []
    for column in table.columns:
        declared = _type_sql(column.type)
        current = existing.get(column.name)
        if current is None:
            default = ""
            if column.server_default is not None:
                default = " DEFAULT now()"
            not_null = ""
            if not column.nullable:
                if column.server_default is None and _has_rows(conn, table.name):
                    raise SchemaError(
                        f"table {table.name}: new column {column.name} is not nullable and the "
                        "table already has rows without it; declare it nullable first"
                    )
                not_null = " NOT NULL"
            statements.append(
                f'ALTER TABLE {name} ADD COLUMN "{column.name}" {declared}{default}{not_null}'
            )
            continue
        if _type_sql(current["type"]) != declared:
            statements.append(
                f'ALTER TABLE {name} ALTER COLUMN "{column.name}" TYPE {declared} '
                f'USING "{column.name}"::{declared}'
            )
        if bool(current["nullable"]) != bool(column.nullable):
            action = "DROP NOT NULL" if column.nullable else "SET NOT NULL"
            statements.append(f'ALTER TABLE {name} ALTER COLUMN "{column.name}" {action}')
    pk = inspector.get_pk_constraint(table.name)
    declared_key = [c.name for c in table.primary_key.columns]
    if list(pk.get("constrained_columns") or []) != declared_key:
        if pk.get("name"):
            statements.append(f'ALTER TABLE {name} DROP CONSTRAINT "{pk["name"]}"')
        keys = ", ".join(f'"{k}"' for k in declared_key)
        statements.append(
            f'ALTER TABLE {name} ADD CONSTRAINT "{table.name}_pkey" PRIMARY KEY ({keys})'
        )
    undeclared = sorted(set(existing) - {c.name for c in table.columns})
    if undeclared:
        log.warning(
            "rule table has columns no longer declared; left in place",
            extra={"table": table.name, "columns": undeclared},
        )
    return statements


def _has_rows(conn: Connection, table: str) -> bool:
    return bool(conn.execute(text(f'SELECT EXISTS (SELECT 1 FROM "{table}")')).scalar_one())


def reconcile_rule_tables(conn: Connection, selection: SelectionConfig) -> list[str]:
    """Create or alter every rule table; returns the statements executed."""
    executed: list[str] = []
    for rule_name, table in rule_tables(selection, MetaData()).items():
        if table.name in {"events", "selector_files", "rejected_rows", "alembic_version"}:
            raise SchemaError(f"selection rule {rule_name}: table {table.name!r} is reserved")
        exists = conn.execute(
            text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table.name}
        ).scalar_one()
        if not exists:
            statements = [str(CreateTable(table).compile(dialect=DIALECT)).strip()]
        else:
            statements = plan_table_changes(conn, table)
        for statement in statements:
            try:
                conn.execute(text(statement))
            except Exception as exc:
                raise SchemaError(
                    f"selection rule {rule_name}: cannot apply to table {table.name}: "
                    f"{statement}: {exc}"
                ) from exc
            log.info("rule table changed", extra={"table": table.name, "sql": statement})
            executed.append(statement)
    return executed
