"""The API's fast paths give the same answers as the general ones (no servers needed).

* :class:`api.execution.LeafObjectsExecutionContext` against graphql-core's own completion,
  on a small schema with aliases, fragments, directives, nulls and errors;
* planned operations (:func:`api.execution.run_plan`) against graphql-core: the same JSON when
  planned, no plan where one would be wrong, and an exception (the caller reruns the request
  on graphql-core) wherever graphql-core reports an error;
* :class:`api.documents.DocumentCache`: a cached document still gets rejected or accepted
  exactly as without the cache;
* :func:`api.events.row_cursors` equals :func:`api.events.encode_cursor` of each row key;
* :func:`api.store.asyncpg_url` keeps libpq ``options`` as server settings.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
import strawberry
from graphql import ASTValidationRule, parse
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql
from strawberry.extensions import AddValidationRules
from strawberry.extensions.query_depth_limiter import create_validator
from strawberry.scalars import JSON

from api.arguments import direct_resolver
from api.documents import DocumentCache, ValidDocuments
from api.events import (
    EventCriteria,
    EventKey,
    EventOrder,
    encode_cursor,
    page_query,
    row_cursors,
    row_key,
)
from api.execution import LeafObjectsExecutionContext, plan_operation, run_plan
from api.store import RawJson, asyncpg_url, json_default


@strawberry.type
class Item:
    name: str
    size: int | None
    when: datetime
    data: JSON


@strawberry.type
class Edge:
    cursor: str
    node: Item


@strawberry.type
class Page:
    edges: list[Edge]
    label: str | None

    @strawberry.field
    def computed(self) -> int:
        return len(self.edges)


@dataclass
class Bad:
    """An object whose non-null ``name`` is missing: graphql-core must report it."""

    name: Any = None
    size: int | None = None
    when: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    data: Any = None


def _items() -> list[Edge]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Edge(
            cursor=f"c{i}",
            node=Item(
                name=f"n{i}",
                size=None if i % 2 else i,
                when=at + timedelta(seconds=i),
                data={"i": i},  # type: ignore[arg-type]
            ),
        )
        for i in range(5)
    ]


@strawberry.type
class Query:
    @strawberry.field
    def page(self, broken: bool = False) -> Page:
        edges = _items()
        if broken:
            edges[2] = Edge(cursor="x", node=Bad())  # type: ignore[arg-type]
        return Page(edges=edges, label=None)

    @strawberry.field
    async def later(self) -> Page:
        await asyncio.sleep(0)
        return Page(edges=_items(), label="later")


QUERIES = [
    "{ page { edges { cursor node { name size when data } } label } }",
    "{ page { e: edges { c: cursor n: node { n: name s: size } } computed } }",
    "query($skip: Boolean!) { page { edges { node { name size @skip(if: $skip) when } } } }",
    "fragment F on Item { name data } { page { edges { node { ...F when } } } }",
    "{ page { edges { node { ... on Item { name __typename } } } } }",
    "{ page(broken: true) { edges { cursor node { name size } } } }",
    "{ later { edges { node { name } } label } }",
    "{ page { edges { node { name } } } later { label } }",
]


class CountingContext(LeafObjectsExecutionContext):
    """Records how many objects took the fast path (so the comparison below proves something)."""

    fast_objects = 0

    def complete_object_value(self, return_type: Any, fields: Any, *args: Any) -> Any:
        if self._leaf_plan(return_type, fields) is not None:
            CountingContext.fast_objects += 1
        return super().complete_object_value(return_type, fields, *args)


def _run(schema: strawberry.Schema, query: str) -> Any:
    result = asyncio.run(schema.execute(query, variable_values={"skip": True}))
    errors = [(e.message, e.path) for e in result.errors or ()]
    return orjson.loads(orjson.dumps(result.data)), errors


@pytest.mark.parametrize("query", QUERIES)
def test_leaf_completion_matches_graphql_core(query: str) -> None:
    general = strawberry.Schema(query=Query)
    fast = strawberry.Schema(query=Query, execution_context_class=CountingContext)
    CountingContext.fast_objects = 0
    assert _run(fast, query) == _run(general, query)
    assert CountingContext.fast_objects > 0


def test_leaf_completion_skips_resolvers() -> None:
    fast = strawberry.Schema(query=Query, execution_context_class=CountingContext)
    CountingContext.fast_objects = 0
    _run(fast, "{ page { computed } }")  # a resolver field: the general path
    assert CountingContext.fast_objects == 0


def test_leaf_completion_reports_null_in_non_null_field() -> None:
    fast = strawberry.Schema(query=Query, execution_context_class=LeafObjectsExecutionContext)
    data, errors = _run(fast, QUERIES[5])
    assert data is None or data["page"] is None
    assert errors and "non-nullable" in errors[0][0]


def test_document_cache_keeps_validation() -> None:
    documents = ValidDocuments(size=2)
    rules: list[type[ASTValidationRule]] = [create_validator(2, None)]
    schema = strawberry.Schema(
        query=Query,
        extensions=[lambda: AddValidationRules(rules), lambda: DocumentCache(documents)],
    )
    ok = "{ page { label } }"
    too_deep = "{ page { edges { node { name } } } }"
    for _ in range(3):
        assert not asyncio.run(schema.execute(ok)).errors
        result = asyncio.run(schema.execute(too_deep))
        assert result.errors and "exceeds maximum operation depth" in result.errors[0].message
    assert len(documents) == 1  # only the valid document is kept
    assert not asyncio.run(schema.execute("{ page { computed } }")).errors
    assert not asyncio.run(schema.execute("{ later { label } }")).errors
    assert len(documents) == 2  # bounded


@given(
    at=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    ),
    event_id=st.text(min_size=1, max_size=40),
    order=st.sampled_from(list(EventOrder)),
)
def test_row_cursors_match_encode_cursor(at: datetime, event_id: str, order: EventOrder) -> None:
    row = SimpleNamespace(occurred_at=at, ingested_at=at + timedelta(seconds=1), event_id=event_id)
    assert row_cursors([row], order) == [encode_cursor(row_key(row, order))]


def test_asyncpg_url_moves_options_to_server_settings() -> None:
    url, settings = asyncpg_url(
        "postgresql+psycopg://u:p@h:5432/db?options=-csearch_path%3Dapi_1%20-c%20"
        "statement_timeout%3D5000&sslmode=require"
    )
    assert url.drivername == "postgresql+asyncpg"
    assert settings == {"search_path": "api_1", "statement_timeout": "5000"}
    assert dict(url.query) == {"ssl": "require"}
    assert asyncpg_url("postgresql://u@h/db")[1] == {}
    with pytest.raises(ValueError, match="options"):
        asyncpg_url("postgresql://u@h/db?options=-x")


def test_raw_json_is_embedded_verbatim() -> None:
    raw = RawJson('{"a": [1, 2.50, null]}')
    assert orjson.loads(orjson.dumps({"p": raw}, default=json_default)) == {
        "p": {"a": [1, 2.5, None]}
    }
    assert raw.value() == {"a": [1, 2.5, None]}
    with pytest.raises(TypeError):
        orjson.dumps({"x": object()}, default=json_default)


def test_validated_answers_only_under_one_rule_set() -> None:
    documents = ValidDocuments()
    document = parse("{ page { label } }")
    assert documents.validated("{ page { label } }") is None
    documents.put(("{ page { label } }", (int,)), document)
    assert documents.validated("{ page { label } }") is document
    assert documents.validated("{ other }") is None
    documents.put(("{ other }", (str,)), document)  # a second rule set: trust neither
    assert documents.validated("{ page { label } }") is None


def test_page_query_is_shared_per_shape_and_binds_every_value() -> None:
    evil = "x'; DROP TABLE events; --"
    criteria = EventCriteria(
        sources=(evil, "b"),
        event_types=(evil,),
        subject=evil,
        occurred_gte=datetime(2026, 1, 1, tzinfo=UTC),
        payload_contains={"k": evil},
        payload_equals=((("a", evil), evil),),
        attributes_contains={"k": evil},
    )
    after = EventKey(EventOrder.OCCURRED_AT_DESC, 0, evil)
    stmt, params = page_query(criteria, EventOrder.OCCURRED_AT_DESC, 10, after)
    sql = str(stmt.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    assert "DROP TABLE" not in sql and "2026" not in sql
    assert params["limit"] == 11 and params["source"] == [evil, "b"]
    assert params["event_type"] == evil and params["after_id"] == evil
    other = EventCriteria(
        sources=("c", "d", "e"),
        event_types=("t",),
        subject="s",
        occurred_gte=datetime(2025, 1, 1, tzinfo=UTC),
        payload_contains=[1],
        payload_equals=((("z",), 1),),
        attributes_contains={"a": "b"},
    )
    same, _ = page_query(other, EventOrder.OCCURRED_AT_DESC, 3, after)
    assert same is stmt  # built once per shape
    assert page_query(other, EventOrder.OCCURRED_AT_ASC, 3, None)[0] is not stmt
    assert page_query(EventCriteria(), EventOrder.OCCURRED_AT_DESC, 3, None)[0] is not stmt


# --------------------------------------------------------------------------- planned operations


@strawberry.type
class Stamp:
    label: str
    at: datetime | None


@strawberry.type
class PlanQuery(Query):
    @strawberry.field
    def stamps(self) -> list[Stamp]:
        base = datetime(2026, 1, 1, 12, 30, 15, 250, tzinfo=UTC)
        return [
            Stamp(label="utc", at=base),
            Stamp(label="whole second", at=base.replace(microsecond=0)),
            Stamp(label="naive", at=base.replace(tzinfo=None)),
            Stamp(label="offset", at=base.astimezone(timezone(timedelta(hours=5, minutes=30)))),
            Stamp(label="none", at=None),
        ]

    @strawberry.field
    def maybe(self, present: bool) -> Item | None:
        return _items()[0].node if present else None

    @strawberry.field
    def wrong(self) -> Stamp:
        return Stamp(label=cast(str, 42.5), at=None)  # String serializes it as "42.5"

    @strawberry.field
    def missing(self) -> Stamp:
        return Stamp(label=cast(str, None), at=None)  # null in a non-null field: an error

    @strawberry.field
    def fails(self) -> Page:
        raise ValueError("boom")


PLANNED = [
    "{ page { edges { cursor node { name size when data } } label } }",
    "{ page { e: edges { c: cursor n: node { n: name s: size } } } }",
    "fragment F on Item { name data } { page { edges { node { ...F when } } } }",
    "{ page { edges { node { ... on Item { name __typename } } } __typename } __typename }",
    "{ later { edges { node { name } } label } }",
    "{ page { edges { node { name } } } later { label } stamps { at label } }",
    "query($p: Boolean!) { maybe(present: $p) { name when } stamps { label at } }",
    "query Named($p: Boolean! = true) { maybe(present: $p) { name } }",
]
NOT_PLANNED = [
    "{ page { computed } }",  # a resolver below the root
    "query($skip: Boolean!) { page { edges { node { name size @skip(if: $skip) } } } }",
    "{ page @include(if: true) { label } }",
    "{ __schema { queryType { name } } }",
    '{ __type(name: "Item") { name } }',
]
FAILING = [
    "{ page(broken: true) { edges { cursor node { name size } } } }",
    "{ missing { label } }",
    "{ fails { label } }",
    "{ page { label } fails { label } }",
]


def _plan_schema() -> strawberry.Schema:
    return strawberry.Schema(query=PlanQuery, execution_context_class=LeafObjectsExecutionContext)


def _planned(schema: strawberry.Schema, query: str, variables: dict[str, Any]) -> Any:
    """(plan or None, data of run_plan or the exception it raised)."""
    executor = LeafObjectsExecutionContext.build(
        schema._schema, parse(query), None, None, variables, None
    )
    assert isinstance(executor, LeafObjectsExecutionContext)
    plan = plan_operation(executor)
    if plan is None:
        return None, None
    try:
        data = asyncio.run(run_plan(plan, executor))
    except Exception as exc:
        return plan, exc
    return plan, orjson.loads(orjson.dumps({"data": data}, default=json_default))


def _general(schema: strawberry.Schema, query: str, variables: dict[str, Any]) -> Any:
    result = asyncio.run(schema.execute(query, variable_values=variables))
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [e.formatted for e in result.errors]
    return orjson.loads(orjson.dumps(body, default=json_default))


@pytest.mark.parametrize("query", PLANNED)
def test_planned_operation_matches_graphql_core(query: str) -> None:
    schema = _plan_schema()
    for variables in ({"p": True}, {"p": False}):
        plan, answer = _planned(schema, query, variables)
        assert plan is not None
        assert answer == _general(schema, query, variables)


def test_planned_datetimes_read_as_isoformat() -> None:
    schema = _plan_schema()
    _, answer = _planned(schema, "{ stamps { label at } }", {})
    stamps = {s["label"]: s["at"] for s in answer["data"]["stamps"]}
    assert stamps == {
        "utc": "2026-01-01T12:30:15.000250+00:00",
        "whole second": "2026-01-01T12:30:15+00:00",
        "naive": "2026-01-01T12:30:15.000250",
        "offset": "2026-01-01T18:00:15.000250+05:30",
        "none": None,
    }


@given(
    at=st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    )
    | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
)
def test_orjson_writes_utc_and_naive_datetimes_as_isoformat(at: datetime) -> None:
    # What the DATETIME steps of a plan rely on (other time zones take isoformat itself).
    assert orjson.loads(orjson.dumps(at)) == at.isoformat()


@pytest.mark.parametrize("query", NOT_PLANNED)
def test_operations_that_are_not_planned(query: str) -> None:
    plan, _ = _planned(_plan_schema(), query, {"skip": True})
    assert plan is None


@pytest.mark.parametrize("query", FAILING)
def test_planned_operation_raises_where_graphql_core_reports_errors(query: str) -> None:
    schema = _plan_schema()
    plan, answer = _planned(schema, query, {})
    assert plan is not None and isinstance(answer, Exception)
    assert _general(schema, query, {})["errors"]


def test_planned_leaf_uses_the_scalar_serializer() -> None:
    schema = _plan_schema()
    plan, answer = _planned(schema, "{ wrong { label } }", {})
    assert plan is not None and answer == _general(schema, "{ wrong { label } }", {})
    assert answer == {"data": {"wrong": {"label": "42.5"}}}


# --------------------------------------------------------------------------- direct resolvers


@strawberry.enum
class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


@strawberry.input
class Span:
    gte: int | None = None
    lt: int | None = None


@strawberry.input
class Filter:
    tag: str
    name: str | None = None
    names: list[str] | None = None
    level: Level = Level.LOW
    spans: list[Span] | None = None
    within: Span | None = None
    data: JSON | None = None
    stamp: datetime | None = None


@strawberry.type
class EchoQuery:
    @strawberry.field
    def echo(
        self,
        info: strawberry.Info,
        filter: Filter | None = None,
        levels: list[Level] | None = None,
        first: int = 5,
        after: str | None = None,
    ) -> str:
        return repr((filter, levels, first, after, info.field_name, info.path.key))

    @strawberry.field
    async def root_echo(self, root: Any, words: list[list[str | None]] | None = None) -> str:
        return repr((root, words))

    @strawberry.field
    def maybe_echo(self, value: strawberry.Maybe[str]) -> str:
        return repr(value)


ECHOES = [
    ("{ echo }", {}),
    ("query($f: Filter) { echo(filter: $f, first: 3) }", {"f": {"tag": "t"}}),
    ("query($f: Filter) { echo(filter: $f) }", {"f": None}),
    (
        'query($f: Filter, $l: [Level!]) { a: echo(filter: $f, levels: $l, after: "x") }',
        {
            "f": {
                "tag": "t",
                "name": "n",
                "names": ["a", "b"],
                "level": "HIGH",
                "spans": [{"gte": 1}, {"lt": 2, "gte": None}],
                "within": {"lt": 9},
                "data": {"k": [1, {"z": None}]},
                "stamp": "2026-01-01T10:00:00+02:00",
            },
            "l": ["LOW", "HIGH"],
        },
    ),
    ('{ echo(filter: {tag: "lit", spans: [], level: HIGH}, levels: []) }', {}),
    ('{ rootEcho(words: [["a", null], []]) rootEcho2: rootEcho }', {}),
    ('{ maybeEcho(value: "v") }', {}),
]


@pytest.mark.parametrize(("query", "variables"), ECHOES)
def test_direct_resolvers_receive_what_strawberry_gives(
    query: str, variables: dict[str, Any]
) -> None:
    schema = strawberry.Schema(query=EchoQuery, execution_context_class=LeafObjectsExecutionContext)
    plan, answer = _planned(schema, query, variables)
    assert plan is not None
    assert answer == _general(schema, query, variables)
    assert "errors" not in answer


def test_direct_resolvers_cover_the_api_root_fields() -> None:
    schema = strawberry.Schema(query=EchoQuery)
    fields = schema._schema.query_type.fields  # type: ignore[union-attr]
    assert direct_resolver(fields["echo"], schema._schema) is not None
    assert direct_resolver(fields["rootEcho"], schema._schema) is not None
    assert direct_resolver(fields["maybeEcho"], schema._schema) is None  # strawberry's own

    from api.schema import build_schema
    from hosepipe.config import PipelineConfig

    pipeline = PipelineConfig.model_validate(
        {
            "sources": {
                "orders": {
                    "kind": "push",
                    "mapping": {"event_id": "$.id", "occurred_at": "$.ts", "event_type": "$.t"},
                }
            }
        }
    )
    api_schema = build_schema(pipeline)._schema
    for name in ("events", "event", "eventCounts", "sources"):
        assert direct_resolver(api_schema.query_type.fields[name], api_schema) is not None  # type: ignore[union-attr]
