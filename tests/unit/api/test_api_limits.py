"""Request limits of the API: depth and cost (introspection included), tokens, body size, NUL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from graphql import get_introspection_query
from starlette.types import Receive, Scope, Send

from api.app import QuerySizeLimit
from api.events import ApiError, EventKey, EventOrder, decode_cursor, encode_cursor, reject_nul
from api.schema import EventFilter, PayloadPathEquals, build_schema, criteria_of
from tests.integration.api.api_support import pipeline_with

# GraphiQL's introspection query (graphql-js getIntrospectionQuery) asks nine levels of ofType.
TYPE_REF_9 = "kind name " + "ofType { kind name " * 9 + "}" * 9


def errors_of(query: str, **api: Any) -> list[str]:
    result = build_schema(pipeline_with(**api)).execute_sync(query)
    return [e.message for e in result.errors or ()]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "descriptions": True,
            "specified_by_url": True,
            "directive_is_repeatable": True,
            "schema_description": True,
            "input_value_deprecation": True,
        },
    ],
)
def test_standard_introspection_passes_the_default_limits(options: dict[str, bool]) -> None:
    assert errors_of(get_introspection_query(**options)) == []


def test_graphiql_introspection_depth_passes() -> None:
    query = (
        "{ __schema { types { fields { args { type { ...T } } type { ...T } } "
        "inputFields { type { ...T } } possibleTypes { ...T } } } } "
        "fragment T on __Type { " + TYPE_REF_9 + " }"
    )
    assert errors_of(query) == []


def cyclic(levels: int) -> str:
    fields = ["__schema", "types", *(["fields", "type"] * levels)][:levels]
    return "{ " + " { ".join(fields) + " { name" + " }" * (len(fields) + 1)


def test_depth_counts_introspection_fields() -> None:
    assert not any("operation depth" in e for e in errors_of(cyclic(10), max_depth=10))
    errors = errors_of(cyclic(11), max_depth=10)
    assert errors and "exceeds maximum operation depth of 10 (api.max_depth)" in errors[0]


def test_depth_through_fragments_and_type_lookup() -> None:
    query = (
        '{ __type(name: "Query") { ...F } } '
        "fragment F on __Type { fields { args { type { ofType { enumValues { name } } } } } }"
    )
    assert not any("operation depth" in e for e in errors_of(query, max_depth=5))
    errors = errors_of(query, max_depth=4)
    assert errors and "exceeds maximum operation depth of 4" in errors[0]


def test_of_type_chains_add_no_depth() -> None:
    query = "{ __schema { queryType { " + "ofType { " * 40 + "name" + " }" * 40 + " } } }"
    assert errors_of(query, max_depth=3) == []


def test_cyclic_introspection_lists_are_capped() -> None:
    # Within the depth limit, but three nested `fields` lists: graphql-js's own cap.
    query = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    errors = errors_of(query, max_depth=20)
    assert errors and "Maximum introspection depth exceeded" in errors[0]


def test_fragments_spread_many_times_are_measured_once() -> None:
    # 40 fragments each spreading the next twice: 2**40 paths for a naive walk.
    fragments = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(40))
    query = "{ ...F0 } " + fragments + " fragment F40 on Query { sources { name } }"
    started = time.perf_counter()
    errors_of(query)
    assert time.perf_counter() - started < 5


def test_cost_counts_introspection_fields() -> None:
    query = "{ __schema { types { fields { type { name } } } } }"  # 4 object fields
    assert errors_of(query, max_cost=4) == []
    errors = errors_of(query, max_cost=3)
    assert errors and "costs 4, more than the limit 3" in errors[0]


def test_token_limit() -> None:
    errors = errors_of("{" + " a" * 2_000 + " }", max_query_tokens=1_000)
    assert errors and "more than 1000 tokens" in errors[0]


# --------------------------------------------------------------------------- NUL characters


def json(value: Any) -> Any:
    """A value for a strawberry ``JSON`` input (typed as a NewType)."""
    return value


@pytest.mark.parametrize(
    ("flt", "where"),
    [
        (EventFilter(subject="a\x00b"), "filter.subject"),
        (EventFilter(sources=["ok", "x\x00"]), "filter.sources"),
        (EventFilter(event_type="\x00"), "filter.eventType"),
        (EventFilter(payload=json({"a": [{"b\x00": 1}]})), "filter.payload"),
        (EventFilter(attributes=json({"k": "v\x00"})), "filter.attributes"),
        (
            EventFilter(payload_path=[PayloadPathEquals(path="$.a", equals=json("x\x00"))]),
            "filter.payloadPath[0].equals",
        ),
        (
            EventFilter(payload_path=[PayloadPathEquals(path="$.a\x00", equals=json(1))]),
            "filter.payloadPath[0].path",
        ),
    ],
)
def test_nul_in_a_filter_is_a_client_error(flt: EventFilter, where: str) -> None:
    with pytest.raises(ApiError, match=rf"^{where.replace('[', '.').replace(']', '.')} contains"):
        criteria_of(flt)


def test_nul_elsewhere() -> None:
    reject_nul({"k": ["fine", 1, None, {"x": "ok"}]}, "anything")
    cursor = encode_cursor(EventKey(EventOrder.OCCURRED_AT_DESC, 1, "a\x00"))
    with pytest.raises(ApiError, match="cursor in 'after' contains a NUL"):
        decode_cursor(cursor, EventOrder.OCCURRED_AT_DESC)


# --------------------------------------------------------------------------- body size


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def request(method: str, content: Any = None, params: dict[str, str] | None = None) -> Any:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=QuerySizeLimit(echo, 1_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, "/graphql", content=content, params=params)

    return asyncio.run(run())


def test_size_limit_passes_small_bodies_intact() -> None:
    body = b"x" * 1_000
    response = request("POST", body)
    assert response.status_code == 200 and response.content == body


def test_size_limit_refuses_large_bodies() -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(30):
            yield b"y" * 100

    for content in (b"x" * 1_001, chunks()):
        response = request("POST", content)
        assert response.status_code == 413
        message = response.json()["errors"][0]["message"]
        assert "more than 1000 bytes (api.max_query_bytes)" in message


def test_size_limit_on_get() -> None:
    assert request("GET", params={"query": "q" * 1_100}).status_code == 413
    assert request("GET", params={"query": "{ a }"}).status_code == 200
