"""The thin I/O shell over PostgreSQL: runs the statements :mod:`api.events` builds.

One pooled async engine per process, on asyncpg (the URL every component uses, with its
driver swapped).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

import asyncpg
import orjson
from sqlalchemy import URL, Select, event, func, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from api.events import (
    EventCriteria,
    EventKey,
    EventOrder,
    GroupBy,
    counts_statement,
    event_types_statement,
    page_query,
    page_statement,
    sources_statement,
    where_clauses,
)
from hosepipe.db import async_url, events
from hosepipe.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

OPTION = re.compile(r"(?:-c\s*|--)([A-Za-z_][\w.]*)=(\S+)")
"""One ``-c name=value`` (or ``--name=value``) of libpq's ``options`` parameter."""


class RawJson:
    """A json value as PostgreSQL sent it, passed to the response without parsing.

    Payloads are only ever returned to clients, so decoding them into Python objects and
    encoding them again is wasted work; :func:`json_default` embeds the text as it is. (jsonb
    values, the payloads, arrive as ``orjson.Fragment`` directly: see :func:`make_engine`.)
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def value(self) -> Any:
        """The parsed JSON value (for the rare caller that needs to look inside)."""
        return orjson.loads(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawJson) and other.value() == self.value()

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"RawJson({self.text!r})"


def json_default(value: Any) -> Any:
    """``default=`` for :func:`orjson.dumps`: embeds :class:`RawJson` verbatim."""
    if isinstance(value, RawJson):
        return orjson.Fragment(value.text)
    raise TypeError(f"cannot serialize {type(value).__name__} to JSON")


class EventRow(NamedTuple):
    """One row of ``events`` as :meth:`Store.page` returns it (attributes like Event's)."""

    event_id: str
    source: str
    event_type: str
    occurred_at: datetime
    ingested_at: datetime
    subject: str | None
    payload: Any
    attributes: Any


@dataclass(frozen=True)
class PreparedSql:
    """A statement compiled once: its SQL text and how to order and convert its parameters."""

    sql: str
    params: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        return [
            values[name] if process is None else process(values[name])
            for name, process in self.params
        ]


class DeadConnection(Exception):
    """A raw driver call failed because its pooled connection was dead."""


DRIVER_DISCONNECTS = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)
COMPILED_LIMIT = 512


@dataclass(frozen=True)
class Count:
    """A row count and whether it is exact or the planner's estimate."""

    value: int
    exact: bool


def make_engine(settings: Settings, pool_size: int = 10) -> AsyncEngine:
    """The API's pooled engine on asyncpg (several times less CPU per query than psycopg).

    json values come back as :class:`RawJson`, jsonb values as ``orjson.Fragment`` (not parsed).

    The pool holds ``pool_size`` connections and never opens short-lived extra ones: a burst
    waits for a free connection instead of paying a connect per request.
    """
    url, server_settings = asyncpg_url(settings.database_url)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=30,
        pool_pre_ping=False,
        pool_recycle=1800,
        # Read-only statements: no BEGIN/ROLLBACK round trips around each one.
        isolation_level="AUTOCOMMIT",
        json_deserializer=RawJson,
        json_serializer=lambda v: orjson.dumps(v, default=json_default).decode(),
        connect_args={"server_settings": server_settings} if server_settings else {},
    )
    event.listen(engine.sync_engine, "connect", _jsonb_as_text)
    return engine


def _jsonb_as_text(dbapi_connection: Any, _record: Any) -> None:
    """Replace SQLAlchemy's binary jsonb codec with a text one that yields ``orjson.Fragment``.

    Same wire content (binary jsonb is a version byte + the text), but asyncpg hands over a
    str: no Python wrapper slicing and decoding bytes for each value (~10 % of a page). The
    text goes into an ``orjson.Fragment`` (a C type, like :class:`RawJson` embedded verbatim
    but without a Python call per value when it is made or rendered); jsonb values are only
    ever returned to clients.
    """
    dbapi_connection.run_async(
        lambda conn: conn.set_type_codec(
            "jsonb", encoder=str, decoder=orjson.Fragment, schema="pg_catalog", format="text"
        )
    )


def asyncpg_url(database_url: str) -> tuple[URL, dict[str, str]]:
    """``database_url`` for the asyncpg driver, and the server settings of its libpq ``options``.

    asyncpg does not take libpq's ``options=-c name=value`` query parameter (used e.g. to set a
    ``search_path``); those become asyncpg ``server_settings``.
    """
    url = make_url(async_url(database_url)).set(drivername="postgresql+asyncpg")
    sslmode = url.query.get("sslmode")
    if isinstance(sslmode, str):  # libpq's name; asyncpg takes the same modes as ``ssl``
        url = url.difference_update_query(["sslmode"]).update_query_dict({"ssl": sslmode})
    options = url.query.get("options")
    if options is None:
        return url, {}
    text_value = options if isinstance(options, str) else " ".join(options)
    settings = dict(OPTION.findall(text_value))
    if OPTION.sub("", text_value).strip():
        raise ValueError(f"database URL: 'options={text_value}' has parts other than -c name=value")
    return url.difference_update_query(["options"]), settings


def is_disconnect(error: BaseException) -> bool:
    """Whether ``error`` means the pooled connection was dead (e.g. PostgreSQL restarted).

    SQLAlchemy flags it (``connection_invalidated``) and then discards the whole pool, so a
    retry gets a fresh connection.
    """
    return isinstance(error, DBAPIError) and error.connection_invalidated


class Store:
    """Read queries of the API.

    The pool does not ping connections at checkout (a round trip per query); instead a read
    that fails because its connection was dead is run once more on a new one. Every query
    here is a read, so running it again is safe.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # Statement (kept alive here, so identity is a safe key) -> its compiled SQL.
        self._compiled: dict[Select[Any], PreparedSql] = {}

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` on a pooled connection, once more on a fresh one after a disconnect."""
        try:
            async with self.engine.connect() as conn:
                return await work(conn)
        except DBAPIError as exc:
            if not is_disconnect(exc):
                raise
            log.warning("database connection was lost (%s); retrying the read once", exc.orig)
        except DeadConnection as exc:
            log.warning("database connection was lost (%s); retrying the read once", exc)
            await self.engine.dispose()  # the others are likely dead too (a server restart)
        async with self.engine.connect() as conn:
            return await work(conn)

    def prepared(self, stmt: Select[Any], conn: AsyncConnection) -> PreparedSql:
        """``stmt`` compiled for the connection's dialect, once per statement object."""
        found = self._compiled.get(stmt)
        if found is None:
            compiled = stmt.compile(dialect=conn.dialect)
            processors: dict[str, Any] = dict(compiled._bind_processors)
            names = compiled.positiontup or ()
            found = PreparedSql(str(compiled), tuple((n, processors.get(n)) for n in names))
            if len(self._compiled) >= COMPILED_LIMIT:
                self._compiled.clear()
            self._compiled[stmt] = found
        return found

    async def fetch_raw(
        self, conn: AsyncConnection, stmt: Select[Any], values: dict[str, Any]
    ) -> list[Any]:
        """Rows of ``stmt`` straight from asyncpg (no SQLAlchemy execution or result layer).

        The SQL text is fixed per statement, so asyncpg's per-connection cache reuses the
        server-side prepared statement; every value is a bound parameter.
        """
        prepared = self.prepared(stmt, conn)
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        try:
            return await driver.fetch(prepared.sql, *prepared.arguments(values))
        except DRIVER_DISCONNECTS as exc:
            await conn.invalidate(exc)
            raise DeadConnection(f"{type(exc).__name__}: {exc}") from exc

    async def rows(self, stmt: Select[Any], params: dict[str, Any] | None = None) -> Sequence[Any]:
        async def run(conn: AsyncConnection) -> Sequence[Any]:
            return (await conn.execute(stmt, params)).all()

        return await self.read(run)

    async def page(
        self, criteria: EventCriteria, order: EventOrder, first: int, after: EventKey | None
    ) -> Sequence[Any]:
        stmt, values = page_query(criteria, order, first, after)

        async def run(conn: AsyncConnection) -> list[EventRow]:
            return [EventRow(*record) for record in await self.fetch_raw(conn, stmt, values)]

        return await self.read(run)

    async def count(self, criteria: EventCriteria, exact_limit: int) -> Count:
        """Matching events: exact up to ``exact_limit``, beyond it the planner's estimate."""
        return await self.count_select(
            select(events.c.event_id).where(*where_clauses(criteria)), exact_limit
        )

    async def count_select(self, stmt: Select[Any], exact_limit: int) -> Count:
        """Rows of ``stmt``: counted up to ``exact_limit + 1``, estimated above."""
        return await self.read(lambda conn: self._count_select(conn, stmt, exact_limit))

    async def _count_select(
        self, conn: AsyncConnection, stmt: Select[Any], exact_limit: int
    ) -> Count:
        if exact_limit > 0:
            bounded = select(func.count()).select_from(stmt.limit(exact_limit + 1).subquery())
            n = int((await conn.execute(bounded)).scalar_one())
            if n <= exact_limit:
                return Count(n, True)
        compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        # Parameters stay bound: EXPLAIN of a parameterized statement plans with the values.
        params: Any = compiled.params
        if compiled.positiontup is not None:
            params = tuple(params[name] for name in compiled.positiontup)
        result = await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), params)
        plan = result.scalar_one()
        if isinstance(plan, RawJson):
            plan = plan.value()
        elif isinstance(plan, str | bytes):
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
        async def now(conn: AsyncConnection) -> datetime:
            return (await conn.execute(text("SELECT now()"))).scalar_one()  # type: ignore[no-any-return]

        return await self.read(now)
