"""One typed GraphQL query per selection-rule table, generated from ``hosepipe.yaml`` at start.

A rule ``orders`` with columns ``order_id text, amount numeric, occurred_at timestamptz`` and
key ``[order_id]`` becomes::

    orders(filter: OrdersFilter, first: Int = 50, after: String): OrdersConnection!
    type OrdersRow { orderId: String! amount: Decimal occurredAt: DateTime! loadedAt: DateTime!
                     event: Event }

Filters: ``<col>`` equals, ``<col>In`` any of, ``<col>Range {gte, lt}`` for ordered types,
``<col>Contains`` for jsonb. Rows are paged by the table's key (its upsert key), ascending.

This module builds classes at run time, so its annotations are evaluated eagerly (no
``from __future__ import annotations``): strawberry reads them as real types.
"""

import asyncio
import base64
import binascii
import datetime as dt
import decimal
import re
from collections.abc import Callable
from typing import Any, NewType, Optional

import orjson
import strawberry
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Double,
    Integer,
    Numeric,
    Select,
    String,
    Table,
    cast,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from strawberry.scalars import JSON

from api.events import ApiError, reject_nul
from hosepipe.config import PipelineConfig, SelectionRule
from hosepipe.db import rule_table

BigInt = NewType("BigInt", int)


def scalar_map() -> dict[object, Any]:
    """Custom scalars of the generated types (for ``StrawberryConfig.scalar_map``)."""
    from strawberry import scalar as scalar_definition

    return {
        BigInt: scalar_definition(
            name="BigInt",
            serialize=int,
            parse_value=int,
            description="A 64-bit integer (JSON number; exact up to 2^53 in JavaScript).",
        )
    }


RESERVED_FIELDS = frozenset({"events", "event", "eventCounts", "sources"})
_RANGE_INPUTS: dict[str, type] = {}


def _camel(name: str) -> str:
    head, *rest = name.strip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _pascal(name: str) -> str:
    camel = _camel(name)
    return camel[:1].upper() + camel[1:]


def graphql_type(column: Column[Any]) -> tuple[Any, bool]:
    """Python/strawberry type of a column and whether it is ordered (gets a range filter)."""
    t = column.type
    if isinstance(t, TIMESTAMP):
        return dt.datetime, True
    if isinstance(t, Date):
        return dt.date, True
    if isinstance(t, BigInteger):
        return BigInt, True
    if isinstance(t, Integer):
        return int, True
    if isinstance(t, Double):
        return float, True
    if isinstance(t, Numeric):
        return decimal.Decimal, True
    if isinstance(t, Boolean):
        return bool, False
    if isinstance(t, JSONB):
        return JSON, False
    return str, False


def _range_input(py_type: Any) -> type:
    name = {
        dt.datetime: "TimeRange",
        dt.date: "DateRange",
        int: "IntRange",
        float: "FloatRange",
        decimal.Decimal: "DecimalRange",
    }.get(py_type, "BigIntRange")
    if name == "TimeRange":
        from api.schema import TimeRange

        return TimeRange
    if name not in _RANGE_INPUTS:
        cls = type(
            name,
            (),
            {
                "__annotations__": {"gte": Optional[py_type], "lt": Optional[py_type]},  # noqa: UP045
                "gte": None,
                "lt": None,
            },
        )
        _RANGE_INPUTS[name] = strawberry.input(cls, description="gte <= value < lt")
    return _RANGE_INPUTS[name]


def _parse_key_value(column: Column[Any], raw: Any) -> Any:
    py_type, _ = graphql_type(column)
    if raw is None:
        return None
    if py_type is dt.datetime:
        return dt.datetime.fromisoformat(raw)
    if py_type is dt.date:
        return dt.date.fromisoformat(raw)
    if py_type is decimal.Decimal:
        return decimal.Decimal(raw)
    return raw


def _dump_key_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def encode_row_cursor(table: str, values: list[Any]) -> str:
    raw = orjson.dumps(["r", table, [_dump_key_value(v) for v in values]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_row_cursor(cursor: str, table: Table, key: list[Column[Any]]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, name, values = orjson.loads(raw)
        if kind != "r" or name != table.name or len(values) != len(key):
            raise ValueError("foreign cursor")
        reject_nul(values, f"the cursor in 'after' for {table.name}")
        return [_parse_key_value(c, v) for c, v in zip(key, values, strict=True)]
    except (binascii.Error, ValueError, TypeError, decimal.InvalidOperation) as exc:
        raise ApiError(f"invalid cursor in 'after' for {table.name}") from exc


class RuleQuery:
    """Types and the statement builder of one rule table."""

    def __init__(self, rule: SelectionRule) -> None:
        from sqlalchemy import MetaData

        self.rule = rule
        self.table = rule_table(rule, MetaData())
        self.key = list(self.table.primary_key.columns)
        self.prefix = _pascal(rule.table)
        self.field_name = _camel(rule.table)
        if self.field_name in RESERVED_FIELDS:
            raise ValueError(
                f"selection rule {rule.name!r}: table {rule.table!r} would shadow the built-in "
                f"query {self.field_name!r}; rename the table"
            )
        self.declared = [c for c in self.table.columns if not c.name.startswith("_")]
        self.row_type = self._row_type()
        self.filter_type = self._filter_type()
        self.connection_type = self._connection_type()

    # -- types

    def _row_type(self) -> type:
        annotations: dict[str, Any] = {}
        namespace: dict[str, Any] = {}
        for column in self.declared:
            py_type, _ = graphql_type(column)
            annotations[column.name] = py_type if not column.nullable else Optional[py_type]  # noqa: UP045
        if "_loaded_at" in self.table.c:
            annotations["loaded_at"] = dt.datetime
            namespace["loaded_at"] = strawberry.field(description="When the selector wrote it.")
        annotations["source_event_id"] = strawberry.Private[Optional[str]]  # type: ignore[misc]  # noqa: UP045
        from api.schema import Event

        async def event(root: Any, info: strawberry.Info) -> Optional[Event]:  # noqa: UP045
            if root.source_event_id is None:
                return None
            store = info.context.store

            async def load(ids: list[str]) -> list[Optional[Event]]:  # noqa: UP045
                found = {r.event_id: Event.from_row(r) for r in await store.by_ids(list(set(ids)))}
                return [found.get(i) for i in ids]

            result: Optional[Event] = await info.context.loader("event", load).load(  # noqa: UP045
                root.source_event_id
            )
            return result

        namespace["event"] = strawberry.field(
            resolver=event, description="The event that wrote this row (batched)."
        )
        namespace["__annotations__"] = annotations
        cls = type(f"{self.prefix}Row", (), namespace)
        return strawberry.type(cls, description=f"A row of table {self.table.name}.")

    def _filter_type(self) -> type:
        annotations: dict[str, Any] = {}
        namespace: dict[str, Any] = {}
        for column in self.declared:
            py_type, ordered = graphql_type(column)
            if py_type is JSON:
                annotations[f"{column.name}_contains"] = Optional[JSON]  # noqa: UP045
                namespace[f"{column.name}_contains"] = None
                continue
            annotations[column.name] = Optional[py_type]  # noqa: UP045
            namespace[column.name] = None
            annotations[f"{column.name}_in"] = Optional[list[py_type]]  # type: ignore[valid-type]  # noqa: UP045
            namespace[f"{column.name}_in"] = None
            if ordered:
                annotations[f"{column.name}_range"] = Optional[_range_input(py_type)]  # noqa: UP045
                namespace[f"{column.name}_range"] = None
        namespace["__annotations__"] = annotations
        cls = type(f"{self.prefix}Filter", (), namespace)
        return strawberry.input(cls, description=f"Conditions on table {self.table.name}.")

    def _connection_type(self) -> type:
        from api.schema import PageInfo

        row_type = self.row_type
        edge = strawberry.type(
            type(
                f"{self.prefix}Edge",
                (),
                {"__annotations__": {"cursor": str, "node": row_type}},
            )
        )
        query = self

        async def _count(root: Any, info: strawberry.Info) -> Any:
            if "count" not in root.memo:
                limit = info.context.pipeline.api.exact_count_limit
                root.memo["count"] = asyncio.ensure_future(
                    info.context.store.count_select(query.base(root.flt), limit)
                )
            return await root.memo["count"]

        async def total_count(root: Any, info: strawberry.Info) -> int:
            count = await _count(root, info)
            return int(count.value)

        async def total_count_is_exact(root: Any, info: strawberry.Info) -> bool:
            count = await _count(root, info)
            return bool(count.exact)

        namespace = {
            "__annotations__": {
                "edges": list[edge],  # type: ignore[valid-type]
                "page_info": PageInfo,
                "flt": strawberry.Private[Any],  # type: ignore[misc]
                "memo": strawberry.Private[dict[str, Any]],
            },
            "total_count": strawberry.field(
                resolver=total_count, description="Exact up to api.exact_count_limit."
            ),
            "total_count_is_exact": strawberry.field(resolver=total_count_is_exact),
        }
        self.edge_type = edge
        return strawberry.type(type(f"{self.prefix}Connection", (), namespace))

    # -- SQL

    def where(self, flt: Any) -> list[Any]:
        clauses: list[Any] = []
        if flt is None:
            return clauses
        for column in self.declared:
            py_type, ordered = graphql_type(column)
            for suffix in ("", "_in", "_contains"):
                name = column.name + suffix
                reject_nul(getattr(flt, name, None), f"filter.{_camel(name)}")
            if py_type is JSON:
                value = getattr(flt, f"{column.name}_contains", None)
                if value is not None:
                    doc = literal(orjson.dumps(value).decode(), String)
                    clauses.append(column.op("@>")(cast(doc, JSONB)))
                continue
            value = getattr(flt, column.name, None)
            if value is not None:
                clauses.append(column == value)
            values = getattr(flt, f"{column.name}_in", None)
            if values is not None:
                clauses.append(column.in_(values))
            if ordered:
                rng = getattr(flt, f"{column.name}_range", None)
                if rng is not None and rng.gte is not None:
                    clauses.append(column >= rng.gte)
                if rng is not None and rng.lt is not None:
                    clauses.append(column < rng.lt)
        return clauses

    def base(self, flt: Any) -> Select[Any]:
        return select(*self.key).select_from(self.table).where(*self.where(flt))

    def page(self, flt: Any, first: int, after: list[Any] | None) -> Select[Any]:
        columns = [*self.declared]
        for meta in ("_event_id", "_loaded_at"):
            if meta in self.table.c:
                columns.append(self.table.c[meta])
        stmt = select(*columns).where(*self.where(flt))
        if after is not None:
            stmt = stmt.where(
                tuple_(*self.key)
                > tuple_(*(literal(v, c.type) for v, c in zip(after, self.key, strict=True)))
            )
        return stmt.order_by(*(c.asc() for c in self.key)).limit(first + 1)

    def make_row(self, row: Any) -> Any:
        values = {c.name: getattr(row, c.name) for c in self.declared}
        if "_loaded_at" in self.table.c:
            values["loaded_at"] = row._loaded_at
        event_id = getattr(row, "_event_id", None)
        if event_id is None and "event_id" in self.table.c:
            event_id = row.event_id
        return self.row_type(source_event_id=event_id, **values)

    def resolver(self) -> Callable[..., Any]:
        query = self
        filter_type = self.filter_type
        connection_type = self.connection_type
        edge_type = self.edge_type

        async def resolve(
            info: strawberry.Info,
            filter: Optional[filter_type] = None,  # type: ignore[valid-type]  # noqa: UP045
            first: int = 50,
            after: Optional[str] = None,  # noqa: UP045
        ) -> connection_type:  # type: ignore[valid-type]
            from api.schema import PageInfo, check_first

            check_first(first, info)
            key = decode_row_cursor(after, query.table, query.key) if after else None
            rows = await info.context.store.rows(query.page(filter, first, key)) if first else []
            edges = [
                edge_type(
                    cursor=encode_row_cursor(
                        query.table.name, [getattr(r, c.name) for c in query.key]
                    ),
                    node=query.make_row(r),
                )
                for r in rows[:first]
            ]
            return connection_type(
                edges=edges,
                page_info=PageInfo(
                    has_next_page=len(rows) > first,
                    has_previous_page=key is not None,
                    start_cursor=edges[0].cursor if edges else None,
                    end_cursor=edges[-1].cursor if edges else after,
                ),
                flt=filter,
                memo={},
            )

        return resolve


def rule_query_fields(pipeline: PipelineConfig) -> dict[str, Any]:
    """``{python_name: strawberry field}`` for every selection rule."""
    fields: dict[str, Any] = {}
    for rule in pipeline.selection.rules:
        if not re.match(r"^[a-z_][a-z0-9_]*$", rule.table):
            raise ValueError(f"selection rule {rule.name!r}: bad table name {rule.table!r}")
        query = RuleQuery(rule)
        fields[rule.table] = strawberry.field(
            resolver=query.resolver(),
            name=query.field_name,
            description=f"Rows of table {rule.table} (selection rule {rule.name!r}), by key.",
        )
    return fields
