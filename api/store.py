"""The thin I/O shell over PostgreSQL: runs the statements :mod:`api.events` builds.

One pooled async engine (psycopg 3, the same URL every component uses) per process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.events import (
    EventCriteria,
    EventKey,
    EventOrder,
    GroupBy,
    counts_statement,
    event_types_statement,
    page_statement,
    sources_statement,
    where_clauses,
)
from hosepipe.db import async_url, events
from hosepipe.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Count:
    """A row count and whether it is exact or the planner's estimate."""

    value: int
    exact: bool


def make_engine(settings: Settings, pool_size: int = 10) -> AsyncEngine:
    """The API's pooled engine; JSONB decoded with orjson."""
    return create_async_engine(
        async_url(settings.database_url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        pool_recycle=1800,
        json_deserializer=orjson.loads,
        json_serializer=lambda v: orjson.dumps(v).decode(),
    )


class Store:
    """Read queries of the API."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def rows(self, stmt: Select[Any]) -> Sequence[Any]:
        async with self.engine.connect() as conn:
            result = await conn.execute(stmt)
            return result.all()

    async def page(
        self, criteria: EventCriteria, order: EventOrder, first: int, after: EventKey | None
    ) -> Sequence[Any]:
        return await self.rows(page_statement(criteria, order, first, after))

    async def count(self, criteria: EventCriteria, exact_limit: int) -> Count:
        """Matching events: exact up to ``exact_limit``, beyond it the planner's estimate."""
        return await self.count_select(
            select(events.c.event_id).where(*where_clauses(criteria)), exact_limit
        )

    async def count_select(self, stmt: Select[Any], exact_limit: int) -> Count:
        """Rows of ``stmt``: counted up to ``exact_limit + 1``, estimated above."""
        async with self.engine.connect() as conn:
            if exact_limit > 0:
                bounded = select(func.count()).select_from(stmt.limit(exact_limit + 1).subquery())
                n = int((await conn.execute(bounded)).scalar_one())
                if n <= exact_limit:
                    return Count(n, True)
            compiled = stmt.compile(
                dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
            )
            # Parameters stay bound: EXPLAIN of a parameterized statement plans with the values.
            result = await conn.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params
            )
            plan = result.scalar_one()
            if isinstance(plan, str | bytes):
                plan = orjson.loads(plan)
            estimate = int(plan[0]["Plan"]["Plan Rows"])
            return Count(max(estimate, exact_limit + 1), False)

    async def counts(self, group_by: Sequence[GroupBy], criteria: EventCriteria) -> Sequence[Any]:
        return await self.rows(counts_statement(group_by, criteria))

    async def sources(self, names: Sequence[str] | None = None) -> Sequence[Any]:
        return await self.rows(sources_statement(names))

    async def event_types(self, sources: Sequence[str]) -> Sequence[Any]:
        return await self.rows(event_types_statement(sources))

    async def by_ids(self, event_ids: Sequence[str]) -> Sequence[Any]:
        stmt = page_statement(
            EventCriteria(event_ids=tuple(event_ids)),
            EventOrder.OCCURRED_AT_DESC,
            len(event_ids),
            None,
        )
        return await self.rows(stmt)

    async def ping(self) -> datetime:
        async with self.engine.connect() as conn:
            return (await conn.execute(text("SELECT now()"))).scalar_one()  # type: ignore[no-any-return]
