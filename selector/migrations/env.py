"""Alembic environment of the serving schema; run through :mod:`selector.schema`.

The caller puts an open SQLAlchemy connection into ``config.attributes["connection"]`` so
migrations run in its transaction; offline (``--sql``) mode is not supported.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from hosepipe.db import VERSION_TABLE


def run_migrations_online() -> None:
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `hosepipe db upgrade` (selector.schema)")
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported")
run_migrations_online()
