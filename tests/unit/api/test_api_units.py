"""Pure parts of the API: cursors, filters to SQL, payload paths, cost, auth, notices, schema."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from api.auth import Authenticator, AuthError
from api.events import (
    ApiError,
    EventCriteria,
    EventKey,
    EventOrder,
    decode_cursor,
    encode_cursor,
    from_micros,
    page_statement,
    parse_payload_path,
    to_micros,
)
from api.live import notice_window, parse_notice, touches_events
from api.schema import build_schema, print_schema
from hosepipe.config import ApiConfig
from tests.integration.api.api_support import pipeline_with

SNAPSHOT = Path(__file__).parent / "schema.graphql"


@given(
    order=st.sampled_from(list(EventOrder)),
    at_us=st.integers(min_value=0, max_value=2**52),
    # PostgreSQL text cannot hold NUL, so no stored event_id (and no cursor) has one.
    event_id=st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=80
    ),
)
def test_cursor_round_trip(order: EventOrder, at_us: int, event_id: str) -> None:
    key = EventKey(order, at_us, event_id)
    assert decode_cursor(encode_cursor(key), order) == key


@pytest.mark.parametrize("bad", ["", "!!!", "e30", "WyJyIiwib3JkZXJzIixbXV0"])
def test_damaged_cursors_are_client_errors(bad: str) -> None:
    with pytest.raises(ApiError, match="cursor"):
        decode_cursor(bad, EventOrder.OCCURRED_AT_DESC)


def test_micros_round_trip() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    assert from_micros(to_micros(moment)) == moment


@pytest.mark.parametrize(
    ("path", "keys"),
    [("$.a.b", ("a", "b")), ("a", ("a",)), ("$.items[2].sku", ("items", "2", "sku"))],
)
def test_payload_paths(path: str, keys: tuple[str, ...]) -> None:
    assert parse_payload_path(path) == keys


@pytest.mark.parametrize("path", ["$", "a..b", "a[x]"])
def test_bad_payload_paths(path: str) -> None:
    with pytest.raises(ApiError):
        parse_payload_path(path)


def test_every_value_is_a_bound_parameter() -> None:
    evil = "x'; DROP TABLE events; --"
    criteria = EventCriteria(
        sources=(evil,),
        event_types=(evil, "b"),
        subject=evil,
        payload_contains={"k": evil},
        payload_equals=((("a", evil), evil),),
        attributes_contains={"k": evil},
    )
    stmt = page_statement(
        criteria, EventOrder.OCCURRED_AT_DESC, 10, EventKey(EventOrder.OCCURRED_AT_DESC, 0, evil)
    )
    sql = str(stmt.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    assert "DROP TABLE" not in sql
    assert "%(" in sql  # values travel as parameters


def test_notices() -> None:
    notice = parse_notice(
        '{"count": 2, "tables": {"events": 2}, "min_occurred_at": "2026-01-01T00:00:00Z",'
        ' "max_occurred_at": "2026-01-01T01:00:00Z"}'
    )
    assert notice_window(notice) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 1, tzinfo=UTC),
    )
    assert touches_events(notice)
    assert not touches_events({"count": 0, "tables": {"orders": 3}})
    assert parse_notice("not json") == {}


def test_auth_modes() -> None:
    keys = Authenticator(ApiConfig(auth="api_key", api_keys=[{"key": "k" * 20, "name": "n"}]))
    assert keys.authenticate("Bearer " + "k" * 20).name == "n"
    for header in (None, "", "Bearer", "Basic " + "k" * 20, "Bearer " + "k" * 19):
        with pytest.raises(AuthError):
            keys.authenticate(header)
    assert Authenticator(ApiConfig()).authenticate(None).name == "anonymous"


def test_cost_rule_counts_nested_lists() -> None:
    schema = build_schema(pipeline_with())
    cheap = schema.execute_sync("{ sources { name } }")
    assert not cheap.errors or "cost" not in str(cheap.errors)
    costly = schema.execute_sync(
        "{ a: events(first: 1000) { edges { node { eventId } } }"
        "  b: events(first: 1000) { edges { node { eventId } } }"
        "  c: events(first: 1000) { edges { node { eventId } } } }"
    )
    assert costly.errors and "more than the limit" in costly.errors[0].message


def test_schema_snapshot() -> None:
    """The public GraphQL contract of the example pipeline; UPDATE_SNAPSHOTS=1 rewrites it."""
    printed = print_schema(pipeline_with())
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(printed)
    assert printed == SNAPSHOT.read_text(), (
        "the GraphQL schema changed: review, then rerun with UPDATE_SNAPSHOTS=1"
    )
