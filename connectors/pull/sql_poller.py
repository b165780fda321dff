"""Poll a SQL table by a monotonically increasing column (id, updated_at, ...).

Cursor (``sql/<source>``): ``{"value": <last column value delivered>, "type": "int"|...}``.
Each query reads rows with the column strictly greater than the cursor, in column order, up
to ``batch_size``. A full batch never ends in the middle of a run of equal values: the
trailing rows that share the last value are left for the next query (see :func:`trim_batch`),
so rows with equal values are never skipped.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import logging
import time
from typing import Any

import sqlalchemy as sa

from connectors.cursors import CursorStore
from connectors.metrics import POLL_ERRORS, POLL_LAG
from connectors.pull.emitter import Emitter
from connectors.pull.http_poller import Stopped, pause
from hosepipe.config import SqlPull

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- pure core


def encode_cursor(value: Any) -> dict[str, Any]:
    """A column value as JSON with its type, so it binds back as the same type."""
    if isinstance(value, bool) or value is None:
        return {"type": "json", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, decimal.Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, datetime.datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, float):
        return {"type": "float", "value": value}
    return {"type": "str", "value": str(value)}


def decode_cursor(cursor: dict[str, Any] | None) -> Any:
    if not cursor:
        return None
    kind: Any = cursor.get("type")
    value: Any = cursor.get("value")
    if kind == "decimal":
        return decimal.Decimal(value)
    if kind == "datetime":
        return datetime.datetime.fromisoformat(value)
    if kind == "date":
        return datetime.date.fromisoformat(value)
    return value


def trim_batch(rows: list[dict[str, Any]], column: str, batch_size: int) -> list[dict[str, Any]]:
    """Drop the trailing rows sharing the last cursor value of a *full* batch, unless every
    row shares it (then the caller must read that value completely)."""
    if len(rows) < batch_size or not rows:
        return rows
    last = rows[-1][column]
    cut = len(rows)
    while cut > 0 and rows[cut - 1][column] == last:
        cut -= 1
    return rows[:cut] if cut > 0 else rows


# --------------------------------------------------------------------------- I/O shell


class SqlPoller:
    """One source's SQL table poller (SQLAlchemy, queries run on a worker thread)."""

    def __init__(self, source: str, spec: SqlPull, emitter: Emitter, cursors: CursorStore) -> None:
        self.source = source
        self.spec = spec
        self.emitter = emitter
        self.cursors = cursors
        self.key = f"sql/{source}"
        self.engine = sa.create_engine(spec.url, pool_pre_ping=True)
        self.table: sa.Table | None = None
        self.last_complete = time.time()
        self.sweeps = 0
        self.last_error: str | None = None

    def _reflect(self) -> sa.Table:
        if self.table is None:
            schema, _, name = self.spec.table.rpartition(".")
            self.table = sa.Table(
                name, sa.MetaData(), schema=schema or None, autoload_with=self.engine
            )
            if self.spec.cursor_column not in self.table.c:
                raise ValueError(
                    f"source {self.source}: table {self.spec.table} has no column "
                    f"{self.spec.cursor_column!r} (pull.cursor_column)"
                )
        return self.table

    def fetch(self, after: Any) -> list[dict[str, Any]]:
        """Rows after ``after`` in cursor order (blocking)."""
        table = self._reflect()
        column = table.c[self.spec.cursor_column]
        selected = [table.c[c] for c in self.spec.columns] if self.spec.columns else [table]
        query = sa.select(*selected).order_by(column).limit(self.spec.batch_size)
        if after is not None:
            query = query.where(column > after)
        with self.engine.connect() as connection:
            rows = [{str(k): v for k, v in r._mapping.items()} for r in connection.execute(query)]
            if (
                rows
                and len(rows) == self.spec.batch_size
                and all(
                    r[self.spec.cursor_column] == rows[0][self.spec.cursor_column] for r in rows
                )
            ):
                # A whole batch of one value: read that value completely in one go.
                same = sa.select(*selected).where(column == rows[0][self.spec.cursor_column])
                rows = [
                    {str(k): v for k, v in r._mapping.items()} for r in connection.execute(same)
                ]
                return rows
        return trim_batch(rows, self.spec.cursor_column, self.spec.batch_size)

    async def sweep(self, stop: asyncio.Event) -> int:
        total = 0
        while not stop.is_set():
            after = decode_cursor(self.cursors.get(self.key))
            rows = await asyncio.to_thread(self.fetch, after)
            if not rows:
                return total
            await self.emitter.emit(rows)
            await self.cursors.save(self.key, encode_cursor(rows[-1][self.spec.cursor_column]))
            total += len(rows)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        POLL_LAG.labels(self.source).set_function(lambda: time.time() - self.last_complete)
        try:
            while not stop.is_set():
                try:
                    count = await self.sweep(stop)
                    self.last_complete = time.time()
                    self.sweeps, self.last_error = self.sweeps + 1, None
                    if count:
                        log.info("rows polled", extra={"source": self.source, "records": count})
                except sa.exc.SQLAlchemyError as exc:
                    POLL_ERRORS.labels(self.source, type(exc).__name__).inc()
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.error("sql poll failed", extra={"source": self.source, "reason": str(exc)})
                try:
                    await pause(stop, self.spec.interval.total_seconds())
                except Stopped:
                    return
        finally:
            self.engine.dispose()
