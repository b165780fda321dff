"""The events read model: filters, orderings, cursors and the SQL they become.

Pure: nothing here touches a connection. Resolvers turn GraphQL input into an
:class:`EventCriteria`, ask this module for a SQLAlchemy statement and run it. Every value
travels as a bound parameter; identifiers come from :mod:`hosepipe.db`'s table definition.

Pagination is keyset (seek) pagination: a page is "the next ``first`` rows after this key" in
a total order ``(time column, event_id)``. Rows inserted while a client pages never shift the
pages it has not read yet and never make it see a row twice, unlike ``OFFSET``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    String,
    any_,
    bindparam,
    cast,
    false,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from hosepipe.db import events

EVENT_COLUMNS = (
    events.c.event_id,
    events.c.source,
    events.c.event_type,
    events.c.occurred_at,
    events.c.ingested_at,
    events.c.subject,
    events.c.payload,
    events.c.attributes,
)


class ApiError(Exception):
    """A client mistake (bad cursor, limit exceeded); its message is shown to the caller."""


def reject_nul(value: Any, where: str) -> None:
    """:class:`ApiError` naming ``where`` when a string in ``value`` holds a NUL character.

    PostgreSQL text and jsonb cannot hold U+0000, so a comparison with such a string fails
    inside the database; ``value`` may be a string or a JSON document (keys are checked too).
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ApiError(
                    f"{where} contains a NUL character (\\u0000), which PostgreSQL text and "
                    "jsonb cannot hold: no stored value can match it; remove it"
                )
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


class EventOrder(enum.Enum):
    """Total orders over events; each ends with ``event_id`` so keys are unique."""

    OCCURRED_AT_DESC = "occurred_at_desc"
    OCCURRED_AT_ASC = "occurred_at_asc"
    INGESTED_AT_DESC = "ingested_at_desc"
    INGESTED_AT_ASC = "ingested_at_asc"

    @property
    def column(self) -> Any:
        return (
            events.c.occurred_at if self.time_attribute == "occurred_at" else events.c.ingested_at
        )

    @property
    def time_attribute(self) -> str:
        """Name of the row attribute holding the time of this order."""
        return "occurred_at" if self.value.startswith("occurred") else "ingested_at"

    @property
    def descending(self) -> bool:
        return self.name.endswith("DESC")


class GroupBy(enum.Enum):
    """Dimensions of ``eventCounts``."""

    SOURCE = "source"
    EVENT_TYPE = "event_type"
    HOUR = "hour"
    DAY = "day"


@dataclass(frozen=True)
class EventCriteria:
    """Which events a query means; every given condition must hold (AND)."""

    sources: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    subject: str | None = None
    occurred_gte: datetime | None = None
    occurred_lt: datetime | None = None
    ingested_gte: datetime | None = None
    ingested_lt: datetime | None = None
    payload_contains: Any = None
    payload_equals: tuple[tuple[tuple[str, ...], Any], ...] = ()
    attributes_contains: dict[str, str] | None = None
    event_ids: tuple[str, ...] | None = field(default=None)


def parse_payload_path(path: str) -> tuple[str, ...]:
    """``$.order.total.amount`` or ``order.total.amount`` → keys; ``[0]`` indexes a list."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:]
    text = text.lstrip(".")
    if not text:
        raise ApiError(f"payload path {path!r} is empty: use e.g. $.order.status")
    keys: list[str] = []
    for part in text.replace("[", ".[").split("."):
        if not part:
            raise ApiError(f"payload path {path!r} has an empty segment")
        if part.startswith("["):
            if not part.endswith("]") or not part[1:-1].isdigit():
                raise ApiError(f"payload path {path!r}: list index {part!r} must be [n]")
            keys.append(part[1:-1])
        else:
            keys.append(part)
    return tuple(keys)


def where_clauses(criteria: EventCriteria) -> list[ColumnElement[bool]]:
    """SQL conditions for ``criteria`` (bound parameters only)."""
    c = events.c
    clauses: list[ColumnElement[bool]] = []
    if criteria.event_ids is not None:
        clauses.append(c.event_id.in_(criteria.event_ids) if criteria.event_ids else false())
    if criteria.sources:
        clauses.append(
            c.source == criteria.sources[0]
            if len(criteria.sources) == 1
            else c.source.in_(criteria.sources)
        )
    if criteria.event_types:
        clauses.append(
            c.event_type == criteria.event_types[0]
            if len(criteria.event_types) == 1
            else c.event_type.in_(criteria.event_types)
        )
    if criteria.subject is not None:
        clauses.append(c.subject == criteria.subject)
    if criteria.occurred_gte is not None:
        clauses.append(c.occurred_at >= criteria.occurred_gte)
    if criteria.occurred_lt is not None:
        clauses.append(c.occurred_at < criteria.occurred_lt)
    if criteria.ingested_gte is not None:
        clauses.append(c.ingested_at >= criteria.ingested_gte)
    if criteria.ingested_lt is not None:
        clauses.append(c.ingested_at < criteria.ingested_lt)
    if criteria.payload_contains is not None:
        clauses.append(c.payload.op("@>")(cast(_json_param(criteria.payload_contains), JSONB)))
    for keys, expected in criteria.payload_equals:
        path = literal(list(keys), ARRAY(String))
        value = cast(_json_param(expected), JSONB)
        clauses.append(c.payload.op("#>", return_type=JSONB)(path).op("=")(value))
    if criteria.attributes_contains:
        clauses.append(
            c.attributes.op("@>")(cast(_json_param(criteria.attributes_contains), JSONB))
        )
    return clauses


def _json_param(value: Any) -> Any:
    # A JSON document as a bound text parameter, cast to jsonb by the caller.
    return literal(orjson.dumps(value).decode(), String)


# --------------------------------------------------------------------------- cursors


@dataclass(frozen=True)
class EventKey:
    """Position of a row in an :class:`EventOrder`."""

    order: EventOrder
    at_us: int
    event_id: str


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch, UTC (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // MICROSECOND


def from_micros(micros: int) -> datetime:
    """Inverse of :func:`to_micros`."""
    return EPOCH + timedelta(microseconds=micros)


def encode_cursor(key: EventKey) -> str:
    """An opaque cursor: urlsafe base64 of a small JSON array."""
    raw = orjson.dumps(["e", key.order.value, key.at_us, key.event_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


ORDER_VALUES = frozenset(o.value for o in EventOrder)


def decode_cursor(cursor: str, order: EventOrder) -> EventKey:
    """Parse a cursor from :func:`encode_cursor`; :class:`ApiError` when foreign or damaged."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, order_value, at_us, event_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ApiError("invalid cursor in 'after': pass an endCursor or edge cursor") from exc
    if (
        kind != "e"
        or not isinstance(at_us, int)
        or not isinstance(event_id, str)
        or order_value not in ORDER_VALUES
    ):
        raise ApiError("invalid cursor in 'after': not an events cursor")
    reject_nul(event_id, "the cursor in 'after'")
    if order_value != order.value:
        raise ApiError(
            f"cursor in 'after' was made for orderBy {EventOrder(order_value).name}, "
            f"not {order.name}: keep orderBy while paging"
        )
    return EventKey(order, at_us, event_id)


def row_key(row: Any, order: EventOrder) -> EventKey:
    """The key of a fetched row under ``order``."""
    return EventKey(order, to_micros(getattr(row, order.time_attribute)), row.event_id)


def row_cursors(rows: Sequence[Any], order: EventOrder) -> list[str]:
    """:func:`encode_cursor` of every row's key (the per-page hot path, kept lean)."""
    attribute, value = order.time_attribute, order.value
    dumps, encode = orjson.dumps, base64.urlsafe_b64encode
    return [
        encode(dumps(["e", value, (getattr(r, attribute) - EPOCH) // MICROSECOND, r.event_id]))
        .decode()
        .rstrip("=")
        for r in rows
    ]


# --------------------------------------------------------------------------- statements


def page_statement(
    criteria: EventCriteria, order: EventOrder, first: int, after: EventKey | None
) -> Select[Any]:
    """``first + 1`` rows after ``after`` (the extra row tells whether a next page exists)."""
    time_col = order.column
    stmt = select(*EVENT_COLUMNS).where(*where_clauses(criteria))
    if after is not None:
        position = tuple_(time_col, events.c.event_id)
        key = tuple_(literal(from_micros(after.at_us), time_col.type), literal(after.event_id))
        stmt = stmt.where(position < key if order.descending else position > key)
    if order.descending:
        stmt = stmt.order_by(time_col.desc(), events.c.event_id.desc())
    else:
        stmt = stmt.order_by(time_col.asc(), events.c.event_id.asc())
    return stmt.limit(first + 1)


PageShape = tuple[Any, ...]
"""What a page statement's SQL depends on: which conditions are present, order, cursor."""


def page_query(
    criteria: EventCriteria, order: EventOrder, first: int, after: EventKey | None
) -> tuple[Select[Any], dict[str, Any]]:
    """:func:`page_statement` as a statement shared by every page of the same shape + values.

    Every value is a named bound parameter, so the statement depends only on which conditions
    are present; it is built once per shape and SQLAlchemy compiles it once (building and
    cache-keying a fresh statement per request cost ~0.3 ms).
    """
    c = criteria
    params: dict[str, Any] = {"limit": first + 1}
    if c.event_ids is not None:
        params["event_ids"] = list(c.event_ids)
    for name, values in (("source", c.sources), ("event_type", c.event_types)):
        if len(values) == 1:
            params[name] = values[0]
        elif values:
            params[name] = list(values)
    for name in ("subject", "occurred_gte", "occurred_lt", "ingested_gte", "ingested_lt"):
        if getattr(c, name) is not None:
            params[name] = getattr(c, name)
    if c.payload_contains is not None:
        params["payload"] = orjson.dumps(c.payload_contains).decode()
    for i, (keys, expected) in enumerate(c.payload_equals):
        params[f"path_{i}"] = list(keys)
        params[f"value_{i}"] = orjson.dumps(expected).decode()
    if c.attributes_contains:
        params["attributes"] = orjson.dumps(c.attributes_contains).decode()
    if after is not None:
        params["after_at"] = from_micros(after.at_us)
        params["after_id"] = after.event_id
    shape = (
        None if c.event_ids is None else bool(c.event_ids),
        min(len(c.sources), 2),
        min(len(c.event_types), 2),
        c.subject is not None,
        c.occurred_gte is not None,
        c.occurred_lt is not None,
        c.ingested_gte is not None,
        c.ingested_lt is not None,
        c.payload_contains is not None,
        len(c.payload_equals),
        bool(c.attributes_contains),
        order,
        after is not None,
    )
    return _page_template(shape), params


@functools.lru_cache(maxsize=256)
def _page_template(shape: PageShape) -> Select[Any]:
    (ids, sources, types, subject, occ_gte, occ_lt, ing_gte, ing_lt) = shape[:8]
    (payload, n_paths, attributes, order, after) = shape[8:]
    c = events.c
    clauses: list[ColumnElement[bool]] = []
    if ids is not None:
        clauses.append(c.event_id == any_(_text_array("event_ids")) if ids else false())
    for column, count in ((c.source, sources), (c.event_type, types)):
        if count == 1:
            clauses.append(column == bindparam(column.name))
        elif count:
            # = ANY($n) instead of IN (...): one SQL text whatever the number of values.
            clauses.append(column == any_(_text_array(column.name)))
    if subject:
        clauses.append(c.subject == bindparam("subject"))
    for present, column, op, name in (
        (occ_gte, c.occurred_at, ">=", "occurred_gte"),
        (occ_lt, c.occurred_at, "<", "occurred_lt"),
        (ing_gte, c.ingested_at, ">=", "ingested_gte"),
        (ing_lt, c.ingested_at, "<", "ingested_lt"),
    ):
        if present:
            bound = bindparam(name, type_=column.type)
            clauses.append(column >= bound if op == ">=" else column < bound)
    if payload:
        clauses.append(c.payload.op("@>")(cast(_text_param("payload"), JSONB)))
    for i in range(n_paths):
        path = bindparam(f"path_{i}", type_=ARRAY(String))
        value = cast(_text_param(f"value_{i}"), JSONB)
        clauses.append(c.payload.op("#>", return_type=JSONB)(path).op("=")(value))
    if attributes:
        clauses.append(c.attributes.op("@>")(cast(_text_param("attributes"), JSONB)))
    time_col = order.column
    stmt = select(*EVENT_COLUMNS).where(*clauses)
    if after:
        position = tuple_(time_col, c.event_id)
        key = tuple_(
            bindparam("after_at", type_=time_col.type), bindparam("after_id", type_=String)
        )
        stmt = stmt.where(position < key if order.descending else position > key)
    if order.descending:
        stmt = stmt.order_by(time_col.desc(), c.event_id.desc())
    else:
        stmt = stmt.order_by(time_col.asc(), c.event_id.asc())
    return stmt.limit(bindparam("limit", type_=Integer))


def _text_param(name: str) -> BindParameter[str]:
    return bindparam(name, type_=String)


def _text_array(name: str) -> BindParameter[Any]:
    return bindparam(name, type_=ARRAY(String))  # type: ignore[arg-type]


def counts_statement(group_by: Sequence[GroupBy], criteria: EventCriteria) -> Select[Any]:
    """``count(*)`` per combination of ``group_by`` dimensions, biggest bucket first."""
    dims: list[Any] = []
    for dim in dict.fromkeys(group_by):
        if dim is GroupBy.SOURCE:
            dims.append(events.c.source.label("source"))
        elif dim is GroupBy.EVENT_TYPE:
            dims.append(events.c.event_type.label("event_type"))
        else:
            # date_trunc on a timestamptz truncates in the session zone: pin it to UTC.
            unit = "hour" if dim is GroupBy.HOUR else "day"
            bucket = func.date_trunc(unit, func.timezone("UTC", events.c.occurred_at))
            dims.append(func.timezone("UTC", bucket).label("bucket"))
    stmt = select(*dims, func.count().label("count")).select_from(events)
    stmt = stmt.where(*where_clauses(criteria))
    if dims:
        stmt = stmt.group_by(*dims).order_by(*dims)
    return stmt


def sources_statement(names: Sequence[str] | None = None) -> Select[Any]:
    """Per source: event count, newest occurred_at and ingested_at."""
    stmt = select(
        events.c.source,
        func.count().label("count"),
        func.max(events.c.occurred_at).label("last_occurred_at"),
        func.max(events.c.ingested_at).label("last_ingested_at"),
    )
    if names is not None:
        stmt = stmt.where(events.c.source.in_(list(names)))
    return stmt.group_by(events.c.source).order_by(events.c.source)


def event_types_statement(sources: Sequence[str]) -> Select[Any]:
    """Per (source, event_type) counts for a batch of sources (the DataLoader's query)."""
    return (
        select(events.c.source, events.c.event_type, func.count().label("count"))
        .where(events.c.source.in_(list(sources)))
        .group_by(events.c.source, events.c.event_type)
        .order_by(events.c.source, func.count().desc(), events.c.event_type)
    )
