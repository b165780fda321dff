"""The GraphQL schema: types, inputs and resolvers over :mod:`api.events` and :mod:`api.store`.

:func:`build_schema` assembles it at start from the pipeline config, adding one typed query per
selection-rule table (:mod:`api.rule_tables`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import strawberry
from graphql import ASTValidationRule, GraphQLError, MaxIntrospectionDepthRule
from strawberry.dataloader import DataLoader
from strawberry.extensions import AddValidationRules, MaskErrors, MaxTokensLimiter
from strawberry.scalars import JSON
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter

from api import events as ev
from api.auth import AuthError, Principal
from api.documents import DocumentCache, ValidDocuments
from api.events import ApiError, EventCriteria
from api.events import EventOrder as _EventOrder
from api.events import GroupBy as _GroupBy
from api.execution import LeafObjectsExecutionContext
from api.limits import cost_rule, depth_rule
from api.store import Count, Store
from hosepipe.config import PipelineConfig

EventOrder = strawberry.enum(_EventOrder, description="Order of the events connection.")
GroupBy = strawberry.enum(_GroupBy, description="Dimensions to count events by.")


@dataclass
class ApiContext:
    """Per request (per websocket connection for subscriptions)."""

    store: Store
    pipeline: PipelineConfig
    principal: Principal
    live: Any = None  # api.live.LiveHub
    connection_params: dict[str, Any] | None = None
    loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict)

    def loader(self, name: str, load: Any) -> DataLoader[Any, Any]:
        """A DataLoader shared by every field of this request (batches, no cross-request cache)."""
        if name not in self.loaders:
            self.loaders[name] = DataLoader(load_fn=load, cache=False)
        return self.loaders[name]


Info = strawberry.Info[ApiContext, None]


# --------------------------------------------------------------------------- types


@strawberry.type(description="One canonical event as loaded into PostgreSQL.")
class Event:
    event_id: str
    source: str
    event_type: str
    occurred_at: datetime
    ingested_at: datetime
    subject: str | None
    payload: JSON = strawberry.field(description="The normalized body (a JSON value).")
    attributes: JSON = strawberry.field(description="String attributes (a JSON object).")

    @classmethod
    def from_row(cls, row: Any) -> Event:
        return cls(
            event_id=row.event_id,
            source=row.source,
            event_type=row.event_type,
            occurred_at=row.occurred_at,
            ingested_at=row.ingested_at,
            subject=row.subject,
            payload=row.payload,
            attributes=row.attributes,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class EventEdge:
    cursor: str
    node: Event


@strawberry.type(description="A page of events (Relay connection).")
class EventConnection:
    edges: list[EventEdge]
    page_info: PageInfo
    criteria: strawberry.Private[EventCriteria]
    memo: strawberry.Private[dict[str, Any]]

    async def _count(self, info: Info) -> Count:
        # totalCount and totalCountIsExact share one query, run only when asked for.
        if "count" not in self.memo:
            limit = info.context.pipeline.api.exact_count_limit
            self.memo["count"] = asyncio.ensure_future(
                info.context.store.count(self.criteria, limit)
            )
        return cast(Count, await self.memo["count"])

    @strawberry.field(
        description=(
            "Rows matching the filter: exact up to api.exact_count_limit, above it the "
            "query planner's estimate (see totalCountIsExact)."
        )
    )
    async def total_count(self, info: Info) -> int:
        return (await self._count(info)).value

    @strawberry.field(description="False when totalCount is the planner's estimate.")
    async def total_count_is_exact(self, info: Info) -> bool:
        return (await self._count(info)).exact


@strawberry.type(description="Events per bucket of the requested dimensions.")
class EventCount:
    source: str | None
    event_type: str | None
    bucket: datetime | None = strawberry.field(description="Start of the HOUR or DAY (UTC).")
    count: int


@strawberry.type
class EventTypeCount:
    event_type: str
    count: int


@strawberry.type(description="A source seen in the events table.")
class Source:
    name: str
    event_count: int
    last_occurred_at: datetime | None = strawberry.field(description="Newest event time.")
    last_ingested_at: datetime | None = strawberry.field(description="Last-seen time.")

    @strawberry.field(description="Counts per event type of this source.")
    async def event_types(self, info: Info) -> list[EventTypeCount]:
        store = info.context.store

        async def load(names: list[str]) -> list[list[EventTypeCount]]:
            grouped: dict[str, list[EventTypeCount]] = {n: [] for n in names}
            for row in await store.event_types(names):
                grouped[row.source].append(
                    EventTypeCount(event_type=row.event_type, count=row.count)
                )
            return [grouped[n] for n in names]

        result: list[EventTypeCount] = await info.context.loader("event_types", load).load(
            self.name
        )
        return result


# --------------------------------------------------------------------------- inputs


@strawberry.input(description="A half-open time interval: gte <= t < lt (either may be omitted).")
class TimeRange:
    gte: datetime | None = None
    lt: datetime | None = None


@strawberry.input(description="The payload value at a path equals a JSON value.")
class PayloadPathEquals:
    path: str = strawberry.field(description="$.a.b or a.b; [n] indexes a list.")
    equals: JSON


@strawberry.input(description="Conditions on events; all given ones must hold.")
class EventFilter:
    source: str | None = None
    sources: list[str] | None = strawberry.field(default=None, description="Any of these.")
    event_type: str | None = None
    event_types: list[str] | None = strawberry.field(default=None, description="Any of these.")
    subject: str | None = None
    occurred_at: TimeRange | None = None
    ingested_at: TimeRange | None = None
    payload: JSON | None = strawberry.field(
        default=None, description="JSON containment: the payload contains this document (@>)."
    )
    payload_path: list[PayloadPathEquals] | None = strawberry.field(
        default=None, description="Each path of the payload equals its value."
    )
    attributes: JSON | None = strawberry.field(
        default=None, description="The attributes contain these key/value pairs."
    )


def criteria_of(flt: EventFilter | None) -> EventCriteria:
    """The pure criteria of a GraphQL filter; :class:`ApiError` on contradictions."""
    if flt is None:
        return EventCriteria()
    for name, value in (
        ("source", flt.source),
        ("sources", flt.sources),
        ("eventType", flt.event_type),
        ("eventTypes", flt.event_types),
        ("subject", flt.subject),
        ("payload", flt.payload),
        ("attributes", flt.attributes),
    ):
        ev.reject_nul(value, f"filter.{name}")
    for i, condition in enumerate(flt.payload_path or ()):
        ev.reject_nul(condition.path, f"filter.payloadPath[{i}].path")
        ev.reject_nul(condition.equals, f"filter.payloadPath[{i}].equals")
    sources = _one_or_many(flt.source, flt.sources, "source", "sources")
    types = _one_or_many(flt.event_type, flt.event_types, "eventType", "eventTypes")
    attributes = flt.attributes
    if attributes is not None and (
        not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values())
    ):
        raise ApiError("filter.attributes must be an object of string values")
    return EventCriteria(
        sources=sources,
        event_types=types,
        subject=flt.subject,
        occurred_gte=flt.occurred_at.gte if flt.occurred_at else None,
        occurred_lt=flt.occurred_at.lt if flt.occurred_at else None,
        ingested_gte=flt.ingested_at.gte if flt.ingested_at else None,
        ingested_lt=flt.ingested_at.lt if flt.ingested_at else None,
        payload_contains=flt.payload,
        payload_equals=tuple(
            (ev.parse_payload_path(p.path), p.equals) for p in (flt.payload_path or ())
        ),
        attributes_contains=attributes,
    )


def _one_or_many(
    one: str | None, many: Sequence[str] | None, one_name: str, many_name: str
) -> tuple[str, ...]:
    if one is not None and many is not None:
        raise ApiError(f"filter: give {one_name} or {many_name}, not both")
    if one is not None:
        return (one,)
    if many is not None:
        if not many:
            raise ApiError(f"filter.{many_name} is empty: omit it to match every value")
        return tuple(many)
    return ()


def check_first(first: int, info: Info) -> int:
    """``first`` within 0..api.max_first, else :class:`ApiError`."""
    limit = info.context.pipeline.api.max_first
    if first < 0 or first > limit:
        raise ApiError(f"first must be between 0 and {limit} (api.max_first), got {first}")
    return first


# --------------------------------------------------------------------------- root types


async def resolve_events(
    info: Info,
    filter: EventFilter | None = None,
    first: int = 50,
    after: str | None = None,
    order_by: _EventOrder = _EventOrder.OCCURRED_AT_DESC,
) -> EventConnection:
    order = _EventOrder(order_by)
    check_first(first, info)
    criteria = criteria_of(filter)
    key = ev.decode_cursor(after, order) if after else None
    rows = await info.context.store.page(criteria, order, first, key) if first else []
    page = rows[:first]
    # The row itself is the node: its attributes are named like Event's fields, and skipping
    # one Event object per row is measurable on a 50-row page.
    edges = [
        EventEdge(cursor=cursor, node=cast(Event, r))
        for cursor, r in zip(ev.row_cursors(page, order), page, strict=True)
    ]
    return EventConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > first,
            has_previous_page=key is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else (after if after else None),
        ),
        criteria=criteria,
        memo={},
    )


@strawberry.type
class Query:
    @strawberry.field(description="Events matching a filter, newest first by default.")
    async def events(
        self,
        info: Info,
        filter: EventFilter | None = None,
        first: int = 50,
        after: str | None = None,
        order_by: _EventOrder = _EventOrder.OCCURRED_AT_DESC,
    ) -> EventConnection:
        return await resolve_events(info, filter, first, after, order_by)

    @strawberry.field(description="One event by its id (batched when asked several times).")
    async def event(self, info: Info, event_id: str) -> Event | None:
        ev.reject_nul(event_id, "eventId")
        store = info.context.store

        async def load(ids: list[str]) -> list[Event | None]:
            found = {r.event_id: Event.from_row(r) for r in await store.by_ids(list(set(ids)))}
            return [found.get(i) for i in ids]

        result: Event | None = await info.context.loader("event", load).load(event_id)
        return result

    @strawberry.field(description="Event counts grouped by source, type and/or time bucket.")
    async def event_counts(
        self, info: Info, group_by: list[_GroupBy], filter: EventFilter | None = None
    ) -> list[EventCount]:
        dims = [_GroupBy(g) for g in group_by]
        rows = await info.context.store.counts(dims, criteria_of(filter))
        return [
            EventCount(
                source=getattr(r, "source", None),
                event_type=getattr(r, "event_type", None),
                bucket=getattr(r, "bucket", None),
                count=r.count,
            )
            for r in rows
        ]

    @strawberry.field(description="Every source with its event count and last-seen times.")
    async def sources(self, info: Info) -> list[Source]:
        return [
            Source(
                name=r.source,
                event_count=r.count,
                last_occurred_at=r.last_occurred_at,
                last_ingested_at=r.last_ingested_at,
            )
            for r in await info.context.store.sources()
        ]


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Events as the selector loads them (at least once; filter applied)."
    )
    async def event_added(
        self, info: Info, filter: EventFilter | None = None
    ) -> AsyncGenerator[Event, None]:
        criteria = criteria_of(filter)
        hub = info.context.live
        if hub is None:
            raise ApiError("live updates are not available on this server")
        async for row in hub.follow(criteria):
            yield Event.from_row(row)


# --------------------------------------------------------------------------- assembly


class CachedNameConverter(NameConverter):
    """strawberry's GraphQL names, each converted once.

    strawberry converts the Python name of every argument and input field to camelCase again
    on every request (for each field of an input type, present or not); the conversion depends
    on the name only.
    """

    def __init__(self, auto_camel_case: bool = True) -> None:
        super().__init__(auto_camel_case)
        self._names: dict[str, str] = {}

    def apply_naming_config(self, name: str) -> str:
        converted = self._names.get(name)
        if converted is None:
            converted = self._names[name] = super().apply_naming_config(name)
        return converted


def _mask(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, ApiError | AuthError | GraphQLError)


def mask_errors() -> MaskErrors:
    """Hides unexpected errors (database, bugs) from clients; ours keep their message."""
    return MaskErrors(
        should_mask_error=_mask, error_message="internal error (logged on the server)"
    )


def build_schema(
    pipeline: PipelineConfig, documents: ValidDocuments | None = None
) -> strawberry.Schema:
    """The schema for ``pipeline``: fixed event queries plus one query per rule table.

    ``documents`` caches the validated operations (a new cache when not given).
    """
    from api.rule_tables import rule_query_fields, scalar_map

    api = pipeline.api
    # The rule classes are built once so that a validated document can be cached under them.
    rules: list[type[ASTValidationRule]] = [
        depth_rule(api.max_depth),
        cost_rule(api.max_cost, api.max_first),
        MaxIntrospectionDepthRule,  # graphql-js's cap on cyclic introspection lists
    ]
    documents = documents if documents is not None else ValidDocuments()
    extensions: list[Any] = [
        # The parser stops after this many tokens (comments included): bounds parse CPU.
        lambda: MaxTokensLimiter(api.max_query_tokens),
        lambda: AddValidationRules(rules),
        lambda: DocumentCache(documents),
        mask_errors,
    ]
    if not api.introspection:
        from strawberry.extensions import DisableIntrospection

        extensions.append(DisableIntrospection)
    extra = rule_query_fields(pipeline)
    query_type: type = Query
    if extra:
        query_type = strawberry.type(type("Query", (Query,), dict(extra)))
    return strawberry.Schema(
        query=query_type,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=LeafObjectsExecutionContext,
        config=StrawberryConfig(
            auto_camel_case=True, name_converter=CachedNameConverter(), scalar_map=scalar_map()
        ),
    )


def print_schema(pipeline: PipelineConfig) -> str:
    """SDL of the schema (used by the snapshot test and ``hosepipe api schema``)."""
    return build_schema(pipeline).as_str() + "\n"
