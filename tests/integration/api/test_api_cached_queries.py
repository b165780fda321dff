"""The short path for query texts validated before answers exactly as strawberry's view does."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from tests.integration.api.api_support import make_event

pytestmark = pytest.mark.integration

PAGE = (
    "query($f: EventFilter, $after: String, $first: Int = 3) { events(filter: $f, first: $first, "
    "after: $after) { edges { cursor node { eventId source eventType occurredAt ingestedAt "
    "subject payload attributes } } pageInfo { hasNextPage endCursor } totalCount } }"
)


def short_path_count() -> float:
    return REGISTRY.get_sample_value("hosepipe_api_cached_query_requests_total") or 0.0


def twice(api: Any, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """Send ``body`` twice: the first goes through the view (and validates), the second not."""
    first = httpx.post(api.graphql, json=body, headers=headers or {})
    before = short_path_count()
    second = httpx.post(api.graphql, json=body, headers=headers or {})
    took_short_path = short_path_count() - before == 1
    assert (second.status_code, second.json()) == (first.status_code, first.json())
    return first, took_short_path


def test_short_path_matches_the_view(api: Any, api_db: Any) -> None:
    api_db.add_events([make_event(i, source="orders" if i % 2 else "clicks") for i in range(10)])
    page, short = twice(api, {"query": PAGE, "variables": {"f": {"source": "orders"}}})
    assert short and page.status_code == 200
    data = page.json()["data"]["events"]
    assert len(data["edges"]) == 3 and data["totalCount"] == 5
    cursor = data["pageInfo"]["endCursor"]
    follow, short = twice(api, {"query": PAGE, "variables": {"after": cursor, "first": 2}})
    assert short and len(follow.json()["data"]["events"]["edges"]) == 2

    # Client mistakes keep their message, location and path on both paths.
    bad_cursor, short = twice(api, {"query": PAGE, "variables": {"after": "nonsense"}})
    assert short and "invalid cursor" in bad_cursor.json()["errors"][0]["message"]
    too_many, short = twice(api, {"query": PAGE, "variables": {"first": 5000}})
    assert short and "api.max_first" in too_many.json()["errors"][0]["message"]
    wrong_type, short = twice(api, {"query": PAGE, "variables": {"first": "ten"}})
    assert short and "$first" in wrong_type.json()["errors"][0]["message"]
    unknown_field, short = twice(api, {"query": PAGE, "variables": {"f": {"nope": 1}}})
    assert short and "nope" in unknown_field.json()["errors"][0]["message"]

    # Requests the short path leaves to the view: invalid documents, extra keys, GET.
    invalid, short = twice(api, {"query": "{ events { nope } }"})
    assert not short and invalid.json()["errors"]
    extra, short = twice(api, {"query": PAGE, "extensions": {"x": 1}})
    assert not short and extra.status_code == 200
    got = httpx.get(api.graphql, params={"query": "{ sources { name } }"})
    assert got.status_code == 200 and got.json()["data"]["sources"]

    # An internal error is masked on the short path too.
    with api_db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE events RENAME TO events_away"))
    before = short_path_count()
    masked = httpx.post(api.graphql, json={"query": PAGE}).json()
    assert short_path_count() - before == 1
    assert masked["errors"][0]["message"] == "internal error (logged on the server)"
    assert "events_away" not in str(masked) and "asyncpg" not in str(masked)


def test_short_path_keeps_auth_and_limits(start_api: Any) -> None:
    api = start_api(
        auth="api_key",
        api_keys=[{"key": "k-0123456789abcdef", "name": "d"}],
        max_depth=3,
        max_cost=500,
    )
    good = {"Authorization": "Bearer k-0123456789abcdef"}
    body = {"query": "{ sources { name } }"}
    ok, short = twice(api, body, good)
    assert short and ok.json() == {"data": {"sources": []}}
    before = short_path_count()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = httpx.post(api.graphql, json=body, headers=headers)
        assert refused.status_code == 401
    assert short_path_count() == before
    # Depth and cost are validation rules: a document over a limit is never cached.
    ok, short = twice(api, {"query": "{ events(first: 1) { edges { node { eventId } } } }"}, good)
    assert short and ok.json().get("errors") is None
    deep = "{ orders(first: 1) { edges { node { event { payload } } } } }"
    too_deep, short = twice(api, {"query": deep}, good)
    assert (
        not short and "exceeds maximum operation depth" in too_deep.json()["errors"][0]["message"]
    )
    costly = "{ events(first: 1000) { edges { node { eventId } } } }"
    too_costly, short = twice(api, {"query": costly}, good)
    assert not short and "more than the limit 500" in too_costly.json()["errors"][0]["message"]


# --------------------------------------------------------------------------- planned operations

PLAIN_PAGE = (
    "query($f: EventFilter, $after: String, $first: Int = 3) { events(filter: $f, first: $first, "
    "after: $after) { edges { cursor node { eventId source eventType occurredAt ingestedAt "
    "subject payload attributes __typename } } pageInfo { hasNextPage hasPreviousPage "
    "startCursor endCursor } } }"
)


def planned_count() -> float:
    return REGISTRY.get_sample_value("hosepipe_api_planned_query_requests_total") or 0.0


def ok_count() -> float:
    return REGISTRY.get_sample_value("hosepipe_api_requests_total", {"status": "200"}) or 0.0


def planned_twice(
    api: Any, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[Any, bool]:
    """Like :func:`twice`; True when the second request was answered by the operation's plan."""
    first = httpx.post(api.graphql, json=body, headers=headers or {})
    before = planned_count()
    second = httpx.post(api.graphql, json=body, headers=headers or {})
    assert (second.status_code, second.json()) == (first.status_code, first.json())
    return first, planned_count() - before == 1


def test_planned_operations_match_the_view(api: Any, api_db: Any) -> None:
    api_db.add_events([make_event(i) for i in range(10)])
    before_ok = ok_count()
    page, planned = planned_twice(
        api, {"query": PLAIN_PAGE, "variables": {"f": {"source": "orders"}}}
    )
    assert planned and page.status_code == 200
    assert ok_count() - before_ok == 2  # planned requests are counted too
    data = page.json()["data"]["events"]
    assert [e["node"]["eventId"] for e in data["edges"]] == ["e000008", "e000006", "e000004"]
    assert data["edges"][0]["node"]["occurredAt"] == "2026-01-01T00:08:00+00:00"
    assert data["edges"][0]["node"]["payload"]["customer"] == {"tier": "gold"}
    cursor = data["pageInfo"]["endCursor"]
    follow, planned = planned_twice(
        api, {"query": PLAIN_PAGE, "variables": {"after": cursor, "first": 2}}
    )
    assert planned and len(follow.json()["data"]["events"]["edges"]) == 2

    one = "query($id: String!) { event(eventId: $id) { eventId payload attributes } }"
    found, planned = planned_twice(api, {"query": one, "variables": {"id": "e000003"}})
    assert planned and found.json()["data"]["event"]["eventId"] == "e000003"
    missing, planned = planned_twice(api, {"query": one, "variables": {"id": "nope"}})
    assert planned and missing.json() == {"data": {"event": None}}
    both = '{ a: event(eventId: "e000001") { eventId } b: event(eventId: "e000002") { eventId } }'
    pair, planned = planned_twice(api, {"query": both})
    assert planned and pair.json()["data"] == {
        "a": {"eventId": "e000001"},
        "b": {"eventId": "e000002"},
    }

    # Errors leave the plan: graphql-core answers them, with message, location and path.
    before = planned_count()
    for variables in ({"after": "nonsense"}, {"first": 5000}, {"first": "ten"}):
        failed, short = twice(api, {"query": PLAIN_PAGE, "variables": variables})
        assert short and failed.json()["errors"]
    assert planned_count() == before


def test_requests_the_plan_leaves_to_the_app(start_api: Any, api_db: Any) -> None:
    api = start_api(cors_origins=["http://dashboard.example"])
    api_db.add_events([make_event(i) for i in range(4)])
    body = {"query": PLAIN_PAGE}
    expected, planned = planned_twice(api, body)
    assert planned
    before = planned_count()
    # A body without a declared length (chunked) and a cross-origin request (CORS headers are
    # Starlette's) pass the layer in front of the app; behind Starlette the plan answers them.
    chunked = httpx.post(
        api.graphql,
        content=iter([orjson.dumps(body)]),
        headers={"content-type": "application/json"},
    )
    assert chunked.json() == expected.json()
    cors = httpx.post(api.graphql, json=body, headers={"Origin": "http://dashboard.example"})
    assert cors.json() == expected.json()
    assert cors.headers.get("access-control-allow-origin") == "http://dashboard.example"
    assert planned_count() == before + 2


def test_planned_operations_keep_auth(start_api: Any) -> None:
    api = start_api(auth="api_key", api_keys=[{"key": "k-0123456789abcdef", "name": "d"}])
    good = {"Authorization": "Bearer k-0123456789abcdef"}
    body = {"query": PLAIN_PAGE}
    ok, planned = planned_twice(api, body, good)
    assert planned and ok.json() == {
        "data": {
            "events": {
                "edges": [],
                "pageInfo": {
                    "hasNextPage": False,
                    "hasPreviousPage": False,
                    "startCursor": None,
                    "endCursor": None,
                },
            }
        }
    }
    before = planned_count()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = httpx.post(api.graphql, json=body, headers=headers)
        assert refused.status_code == 401 and "unauthorized" in refused.text
    assert planned_count() == before
