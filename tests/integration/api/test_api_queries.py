"""Queries against a real PostgreSQL through a running API and the gql client."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from gql.transport.exceptions import TransportQueryError

from tests.integration.api.api_support import T0, ApiDatabase, RunningApi, make_event, run

pytestmark = pytest.mark.integration

N = 60
EVENTS_QUERY = """
query($filter: EventFilter, $first: Int!, $after: String, $order: EventOrder!) {
  events(filter: $filter, first: $first, after: $after, orderBy: $order) {
    totalCount totalCountIsExact
    edges { cursor node { eventId source eventType occurredAt ingestedAt subject payload
                          attributes } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}
"""


@pytest.fixture
def seeded(api_db: ApiDatabase) -> list[dict[str, Any]]:
    rows = [make_event(i) for i in range(N)]
    api_db.add_events(rows)
    return rows


def ids(
    api: RunningApi, flt: dict[str, Any] | None, first: int = 1000, order: str = "OCCURRED_AT_DESC"
) -> list[str]:
    data = run(
        api.graphql, EVENTS_QUERY, {"filter": flt, "first": first, "after": None, "order": order}
    )
    return [e["node"]["eventId"] for e in data["events"]["edges"]]


def iso(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


FILTERS: list[tuple[str, dict[str, Any], Any]] = [
    ("source", {"source": "orders"}, lambda r: r["source"] == "orders"),
    ("sources", {"sources": ["orders", "clicks"]}, lambda r: True),
    ("eventType", {"eventType": "paid"}, lambda r: r["event_type"] == "paid"),
    (
        "eventTypes",
        {"eventTypes": ["paid", "click"]},
        lambda r: r["event_type"] in {"paid", "click"},
    ),
    ("subject", {"subject": "customer-3"}, lambda r: r["subject"] == "customer-3"),
    (
        "occurredAt",
        {"occurredAt": {"gte": iso(10), "lt": iso(20)}},
        lambda r: T0 + timedelta(minutes=10) <= r["occurred_at"] < T0 + timedelta(minutes=20),
    ),
    (
        "ingestedAt",
        {"ingestedAt": {"gte": iso(50)}},
        lambda r: r["ingested_at"] >= T0 + timedelta(minutes=50),
    ),
    (
        "payload containment",
        {"payload": {"customer": {"tier": "gold"}}},
        lambda r: r["payload"]["customer"]["tier"] == "gold",
    ),
    (
        "payload array containment",
        {"payload": {"tags": ["c"]}},
        lambda r: "c" in r["payload"]["tags"],
    ),
    (
        "payloadPath",
        {"payloadPath": [{"path": "$.customer.tier", "equals": "basic"}]},
        lambda r: r["payload"]["customer"]["tier"] == "basic",
    ),
    (
        "payloadPath number",
        {"payloadPath": [{"path": "amount", "equals": 15.0}]},
        lambda r: r["payload"]["amount"] == 15.0,
    ),
    (
        "payloadPath index",
        {"payloadPath": [{"path": "$.tags[0]", "equals": "a"}]},
        lambda r: r["payload"]["tags"][0] == "a",
    ),
    (
        "attributes",
        {"attributes": {"channel": "web"}},
        lambda r: r["attributes"]["channel"] == "web",
    ),
    (
        "combined",
        {"source": "orders", "subject": "customer-0", "occurredAt": {"lt": iso(40)}},
        lambda r: (
            r["source"] == "orders"
            and r["subject"] == "customer-0"
            and r["occurred_at"] < T0 + timedelta(minutes=40)
        ),
    ),
]


@pytest.mark.parametrize(("name", "flt", "predicate"), FILTERS, ids=[f[0] for f in FILTERS])
def test_every_filter(
    api: RunningApi, seeded: list[dict[str, Any]], name: str, flt: dict[str, Any], predicate: Any
) -> None:
    expected = [
        r["event_id"]
        for r in sorted(seeded, key=lambda r: r["occurred_at"], reverse=True)
        if predicate(r)
    ]
    assert expected, f"filter {name} selects nothing in the seed: the test would prove nothing"
    assert len(expected) < N or name == "sources"
    assert ids(api, flt) == expected


def test_event_fields_and_orders(api: RunningApi, seeded: list[dict[str, Any]]) -> None:
    data = run(
        api.graphql,
        EVENTS_QUERY,
        {
            "filter": {"subject": "customer-1"},
            "first": 2,
            "after": None,
            "order": "OCCURRED_AT_ASC",
        },
    )
    node = data["events"]["edges"][0]["node"]
    first = next(r for r in seeded if r["subject"] == "customer-1")
    assert node["eventId"] == first["event_id"]
    assert node["payload"] == first["payload"]
    assert node["attributes"] == first["attributes"]
    assert node["occurredAt"].startswith("2026-01-01T00:01:00")
    assert ids(api, None, order="INGESTED_AT_ASC") == [r["event_id"] for r in seeded]


def test_total_count_exact_then_estimated(start_api: Any, seeded: list[dict[str, Any]]) -> None:
    api = start_api(exact_count_limit=20)
    small = run(
        api.graphql,
        EVENTS_QUERY,
        {
            "filter": {"subject": "customer-2"},
            "first": 1,
            "after": None,
            "order": "OCCURRED_AT_DESC",
        },
    )
    assert small["events"]["totalCount"] == 12
    assert small["events"]["totalCountIsExact"] is True
    big = run(
        api.graphql,
        EVENTS_QUERY,
        {"filter": None, "first": 1, "after": None, "order": "OCCURRED_AT_DESC"},
    )
    assert big["events"]["totalCountIsExact"] is False
    assert big["events"]["totalCount"] >= 21


def test_paging_visits_every_row_once(api: RunningApi, seeded: list[dict[str, Any]]) -> None:
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        data = run(
            api.graphql,
            EVENTS_QUERY,
            {"filter": None, "first": 7, "after": after, "order": "OCCURRED_AT_DESC"},
        )["events"]
        seen += [e["node"]["eventId"] for e in data["edges"]]
        pages += 1
        assert data["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not data["pageInfo"]["hasNextPage"]:
            break
        after = data["pageInfo"]["endCursor"]
    assert pages == -(-N // 7)
    assert seen == [f"e{i:06d}" for i in reversed(range(N))]


def test_pagination_under_concurrent_inserts(api: RunningApi, api_db: ApiDatabase) -> None:
    """Rows inserted while a client pages (older, newer and equal timestamps) never make it
    miss a row that existed when it started, nor see any row twice."""
    existing = [make_event(i) for i in range(0, 400, 2)]  # even minutes 0..398
    api_db.add_events(existing)
    stop = threading.Event()
    inserted: list[str] = []

    def writer() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            # Odd minutes land between existing rows; same-timestamp rows tie on event_id.
            rows = [
                make_event(2 * (n % 200) + 1, event_id=f"new{n:05d}a"),
                make_event(2 * (n % 200), event_id=f"new{n:05d}b"),
            ]
            api_db.add_events(rows)
            inserted.extend(r["event_id"] for r in rows)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[tuple[str, str]] = []
    after = None
    try:
        while True:
            data = run(
                api.graphql,
                EVENTS_QUERY,
                {"filter": None, "first": 13, "after": after, "order": "OCCURRED_AT_DESC"},
            )["events"]
            seen += [(e["node"]["occurredAt"], e["node"]["eventId"]) for e in data["edges"]]
            if not data["pageInfo"]["hasNextPage"]:
                break
            after = data["pageInfo"]["endCursor"]
    finally:
        stop.set()
        thread.join()
    assert inserted, "the writer inserted nothing while paging: the test proves nothing"
    seen_ids = [s[1] for s in seen]
    assert len(seen_ids) == len(set(seen_ids)), "a row was returned twice"
    missing = {r["event_id"] for r in existing} - set(seen_ids)
    assert not missing, f"rows present before paging were skipped: {sorted(missing)[:5]}"
    keys = [(s[0], s[1]) for s in seen]
    assert keys == sorted(keys, reverse=True), "pages are not in one consistent order"


def test_cursor_errors(api: RunningApi, seeded: list[dict[str, Any]]) -> None:
    with pytest.raises(TransportQueryError, match="invalid cursor"):
        run(
            api.graphql,
            EVENTS_QUERY,
            {"filter": None, "first": 5, "after": "garbage!", "order": "OCCURRED_AT_DESC"},
        )
    data = run(
        api.graphql,
        EVENTS_QUERY,
        {"filter": None, "first": 5, "after": None, "order": "OCCURRED_AT_DESC"},
    )
    with pytest.raises(TransportQueryError, match="keep orderBy"):
        run(
            api.graphql,
            EVENTS_QUERY,
            {
                "filter": None,
                "first": 5,
                "after": data["events"]["pageInfo"]["endCursor"],
                "order": "INGESTED_AT_ASC",
            },
        )


def test_event_by_id_batched(api: RunningApi, seeded: list[dict[str, Any]]) -> None:
    data = run(
        api.graphql,
        """{ a: event(eventId: "e000003") { eventId subject }
                                 b: event(eventId: "e000004") { eventId }
                                 c: event(eventId: "missing") { eventId } }""",
    )
    assert data == {
        "a": {"eventId": "e000003", "subject": "customer-3"},
        "b": {"eventId": "e000004"},
        "c": None,
    }


def test_event_counts(api: RunningApi, seeded: list[dict[str, Any]]) -> None:
    data = run(
        api.graphql,
        """{ bySource: eventCounts(groupBy: [SOURCE]) { source count }
        byType: eventCounts(groupBy: [SOURCE, EVENT_TYPE], filter: {source: "orders"}) {
          source eventType count }
        byHour: eventCounts(groupBy: [HOUR]) { bucket count }
        byDay: eventCounts(groupBy: [DAY]) { bucket count }
        total: eventCounts(groupBy: []) { count } }""",
    )
    assert data["bySource"] == [
        {"source": "clicks", "count": 30},
        {"source": "orders", "count": 30},
    ]
    assert sum(r["count"] for r in data["byType"]) == 30
    assert {r["eventType"] for r in data["byType"]} == {"created", "paid", "shipped"}
    assert data["byHour"] == [{"bucket": "2026-01-01T00:00:00+00:00", "count": 60}]
    assert data["byDay"] == [{"bucket": "2026-01-01T00:00:00+00:00", "count": 60}]
    assert data["total"] == [{"count": 60}]


def test_sources_with_counts_and_last_seen(api: RunningApi, seeded: list[dict[str, Any]]) -> None:
    data = run(
        api.graphql,
        """{ sources { name eventCount lastOccurredAt lastIngestedAt
                                           eventTypes { eventType count } } }""",
    )
    by_name = {s["name"]: s for s in data["sources"]}
    assert by_name["orders"]["eventCount"] == 30
    assert by_name["clicks"]["lastOccurredAt"].startswith("2026-01-01T00:59:00")
    assert by_name["clicks"]["lastIngestedAt"].startswith("2026-01-01T00:59:05")
    assert by_name["clicks"]["eventTypes"] == [{"eventType": "click", "count": 30}]


def test_rule_table_query(
    api: RunningApi, api_db: ApiDatabase, seeded: list[dict[str, Any]]
) -> None:
    from sqlalchemy import insert

    from api.rule_tables import RuleQuery

    table = RuleQuery(api.pipeline.selection.rules[0]).table
    rows = [
        {
            "order_id": f"o{i:03d}",
            "amount": i * 10,
            "quantity": i,
            "occurred_at": T0 + timedelta(minutes=i),
            "_event_id": f"e{i:06d}",
            "_occurred_at": T0 + timedelta(minutes=i),
        }
        for i in range(12)
    ]
    with api_db.engine.begin() as conn:
        conn.execute(insert(table), rows)
    query = """query($f: OrdersFilter, $after: String) {
      orders(filter: $f, first: 4, after: $after) {
        totalCount
        edges { node { orderId amount quantity occurredAt loadedAt event { eventId source } } }
        pageInfo { hasNextPage endCursor } } }"""
    got: list[str] = []
    after = None
    while True:
        page = run(api.graphql, query, {"f": None, "after": after})["orders"]
        got += [e["node"]["orderId"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert got == [f"o{i:03d}" for i in range(12)]
    data = run(
        api.graphql,
        query,
        {"f": {"amountRange": {"gte": "30", "lt": "60"}, "quantityIn": [3, 4, 5, 9]}},
    )
    nodes = [e["node"] for e in data["orders"]["edges"]]
    assert [n["orderId"] for n in nodes] == ["o003", "o004", "o005"]
    assert nodes[0]["amount"] == "30.00"
    assert nodes[0]["event"] == {"eventId": "e000003", "source": "clicks"}
    assert data["orders"]["totalCount"] == 3


def test_health_and_metrics(api: RunningApi) -> None:
    health = httpx.get(f"{api.url}/healthz")
    assert health.status_code == 200 and health.json()["ok"] is True
    run(api.graphql, "{ sources { name } }")
    metrics = httpx.get(f"{api.url}/metrics").text
    assert "hosepipe_api_requests_total" in metrics
    assert "hosepipe_api_request_seconds_bucket" in metrics
