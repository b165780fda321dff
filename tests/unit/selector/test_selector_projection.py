"""Selection rules: matching, projection to declared types, reasons for rejects."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosepipe.config import ColumnSpec, SelectionRule
from selector.projection import CompiledRule, Path, PathError, Rejected, apply_rule, to_column

T0 = 1_763_769_600_000_000  # 2025-11-22T00:00Z in µs


def event(payload: Any, **fields: Any) -> dict[str, Any]:
    base = {
        "event_id": "e1",
        "source": "orders",
        "event_type": "created",
        "occurred_at": T0,
        "ingested_at": T0 + 1,
        "subject": "c1",
        "payload": payload if isinstance(payload, str) else json.dumps(payload),
        "attributes": {"channel": "web"},
    }
    return {**base, **fields}


def rule(**kwargs: Any) -> CompiledRule:
    return CompiledRule.compile(SelectionRule.model_validate({"name": "r", "table": "t", **kwargs}))


def col(type_: str, **kwargs: Any) -> ColumnSpec:
    return ColumnSpec.model_validate({"path": "$.payload.v", "type": type_, **kwargs})


def test_paths() -> None:
    assert Path.parse("$.payload.a.b[2]") == Path("payload", ("a", "b", 2))
    assert Path.parse("occurred_at") == Path("occurred_at")
    assert Path.parse("$.source") == Path("source")
    assert Path.parse("$.attributes.k") == Path("attributes", ("k",))
    with pytest.raises(PathError):
        Path.parse("$.nope")
    with pytest.raises(PathError):
        Path.parse("$.attributes.a.b")


@pytest.mark.parametrize(
    ("value", "spec", "expected"),
    [
        ("12.345", col("numeric", precision=12, scale=2), Decimal("12.35")),
        (7, col("numeric", precision=5, scale=2), Decimal("7.00")),
        ("1e3", col("numeric"), Decimal("1E+3")),
        ("42", col("integer"), 42),
        (42.0, col("bigint"), 42),
        ("0.5", col("double"), 0.5),
        ("yes", col("boolean"), True),
        (0, col("boolean"), False),
        ("2025-11-22T10:00:00+01:00", col("timestamptz"), datetime(2025, 11, 22, 9, tzinfo=UTC)),
        (1_763_769_600, col("timestamptz"), datetime(2025, 11, 22, tzinfo=UTC)),
        (1_763_769_600_000, col("timestamptz"), datetime(2025, 11, 22, tzinfo=UTC)),
        ("2025-11-22", col("date"), date(2025, 11, 22)),
        ({"a": [1]}, col("jsonb"), {"a": [1]}),
        (12, col("text"), "12"),
        ({"a": 1}, col("text"), '{"a":1}'),
        (None, col("integer"), None),
    ],
)
def test_to_column(value: Any, spec: ColumnSpec, expected: Any) -> None:
    assert to_column(value, spec) == expected


@pytest.mark.parametrize(
    ("value", "spec", "reason"),
    [
        ("abc", col("numeric", precision=12, scale=2), "'abc' is not numeric(12,2)"),
        ("NaN", col("numeric"), "is not numeric"),
        (123456.0, col("numeric", precision=5, scale=2), "overflows numeric(5,2)"),
        (2**31, col("integer"), "out of range for integer"),
        (1.5, col("integer"), "is not integer"),
        (True, col("integer"), "is not integer"),
        ("maybe", col("boolean"), "is not boolean"),
        ("yesterday", col("timestamptz"), "is not timestamptz"),
        ([1], col("double"), "is not double"),
    ],
)
def test_to_column_rejects(value: Any, spec: ColumnSpec, reason: str) -> None:
    with pytest.raises(Rejected, match=reason.replace("(", r"\(").replace(")", r"\)")):
        to_column(value, spec)


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False))
def test_numeric_in_range_round_trips(value: Decimal) -> None:
    assert to_column(str(value), col("numeric", precision=12, scale=2)) == value


def test_rule_matching() -> None:
    r = rule(
        sources=["orders"],
        event_types=["created"],
        since="2025-11-21T00:00:00Z",
        until="2025-11-23",
        where=[
            {"path": "$.payload.kind", "equals": "shop"},
            {"path": "$.payload.n", "in": [1, 2]},
            {"path": "$.payload.gone", "exists": False},
        ],
    )
    out = apply_rule(r, [event({"kind": "shop", "n": 2})])
    assert len(out.rows) == 1
    for other in (
        event({"kind": "shop", "n": 2}, source="clicks"),
        event({"kind": "shop", "n": 2}, event_type="paid"),
        event({"kind": "shop", "n": 2}, occurred_at=T0 + 2 * 86_400_000_000),
        event({"kind": "market", "n": 2}),
        event({"kind": "shop", "n": 3}),
        event({"kind": "shop", "n": 1, "gone": 1}),
    ):
        assert apply_rule(r, [other]).rows == {}


def test_projection_and_rejects_with_reasons() -> None:
    r = rule(
        columns={
            "order_id": {"path": "$.payload.id", "nullable": False},
            "amount": {"path": "$.payload.total", "type": "numeric", "precision": 12, "scale": 2},
            "channel": {"path": "$.attributes.channel"},
            "at": {"path": "occurred_at", "type": "timestamptz"},
        },
        key=["order_id"],
    )
    out = apply_rule(
        r,
        [
            event({"id": "A", "total": "1.5"}, event_id="e1"),
            event({"id": "B", "total": "x"}, event_id="e2"),
            event({"total": "1"}, event_id="e3"),
            event("{oops", event_id="e4"),
        ],
    )
    assert list(out.rows) == [("A",)]
    row = out.rows[("A",)]
    assert row["amount"] == Decimal("1.50") and row["channel"] == "web"
    assert row["at"] == datetime(2025, 11, 22, tzinfo=UTC)
    assert row["_event_id"] == "e1"
    reasons = {event_id: reason for event_id, reason, _ in out.rejected}
    assert reasons["e2"] == "column amount ($.payload.total): 'x' is not numeric(12,2)"
    assert reasons["e3"].startswith("column order_id ($.payload.id): missing or null")
    assert reasons["e4"].startswith("payload is not valid JSON")


def test_repeated_key_keeps_the_latest_event() -> None:
    r = rule(columns={"id": {"path": "$.payload.id"}, "v": {"path": "$.payload.v"}}, key=["id"])
    out = apply_rule(
        r,
        [
            event({"id": "A", "v": "new"}, event_id="n", occurred_at=T0 + 10),
            event({"id": "A", "v": "old"}, event_id="o", occurred_at=T0),
        ],
    )
    assert out.rows[("A",)]["v"] == "new"


def test_nul_in_text_jsonb_or_event_id_rejects_the_row() -> None:
    r = rule(
        columns={
            "id": {"path": "$.payload.id"},
            "who": {"path": "subject"},
            "extra": {"path": "$.payload.extra", "type": "jsonb"},
            "n": {"path": "$.payload.n", "type": "integer"},
        },
        key=["id"],
    )
    out = apply_rule(
        r,
        [
            event({"id": "A", "extra": {"k": ["ok"]}, "n": 1}, event_id="e1"),
            event({"id": "B\u0000"}, event_id="e2"),
            event({"id": "C"}, event_id="e3", subject="c\x00"),
            event({"id": "D", "extra": {"k": ["\u0000"]}}, event_id="e4"),
            event({"id": "E"}, event_id="e5\x00"),
            event({"id": "F", "n": "1\u0000"}, event_id="e6"),
            # Not a NUL: a backslash followed by "u0000" is storable text.
            event({"id": "G\\u0000"}, event_id="e7"),
        ],
    )
    assert sorted(out.rows) == [("A",), ("G\\u0000",)]
    reasons = {event_id: reason for event_id, reason, _ in out.rejected}
    nul = "contains a NUL character (U+0000, \\u0000)"
    assert reasons["e2"].startswith("column id ($.payload.id): " + nul)
    assert reasons["e3"].startswith("column who (subject): " + nul)
    assert reasons["e4"].startswith("column extra ($.payload.extra): " + nul)
    assert reasons["e5\x00"].startswith("event_id: " + nul)
    assert reasons["e6"] == "column n ($.payload.n): '1\\x00' is not integer"
    with pytest.raises(Rejected, match="NUL"):
        to_column("a\x00", col("text"))
