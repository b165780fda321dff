"""What PostgreSQL cannot store: NUL characters found per row and column, without a server."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from hosepipe.lake import events_to_table
from selector.screen import escape_nul, has_nul, nul_reason, unstorable_rows

T0 = 1_763_769_600_000_000
# Text that often holds a NUL or a backslash next to "u0000" (the escape's look-alike).
tricky = st.lists(
    st.sampled_from(["a", "\x00", "\\", "u0000", '"', "é", "\U0001f600"]), max_size=6
).map("".join)


def event(i: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"e{i}",
        "source": "orders",
        "event_type": "created",
        "occurred_at": T0 + i,
        "ingested_at": T0 + i,
        "subject": "c1",
        "payload": "{}",
        "attributes": {},
    }
    return {**base, **fields}


def expected_columns(row: dict[str, Any]) -> list[str]:
    """The columns of ``row`` PostgreSQL refuses, by a plain Python reading of the values."""
    columns = [
        name
        for name in ("event_id", "source", "event_type", "subject")
        if row[name] is not None and "\x00" in row[name]
    ]
    if "\x00" in row["payload"] or has_nul(json.loads(row["payload"])):
        columns.append("payload")
    if has_nul(row["attributes"]):
        columns.append("attributes")
    return columns


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "event_id": tricky,
                "subject": st.none() | tricky,
                "payload": st.dictionaries(tricky, tricky | st.lists(tricky, max_size=2)),
                "attributes": st.dictionaries(tricky, tricky, max_size=3),
            }
        ),
        max_size=20,
    ),
    st.integers(0, 5),
)
def test_unstorable_rows_match_a_plain_reading(fields: list[dict[str, Any]], skip: int) -> None:
    rows = [
        event(i, **{**f, "payload": orjson.dumps(f["payload"]).decode()})
        for i, f in enumerate(fields)
    ]
    table = events_to_table(rows)
    want = {i: nul_reason(cols) for i, row in enumerate(rows) if (cols := expected_columns(row))}
    assert unstorable_rows(table) == want
    # A slice (a batch of a bigger file): indices are relative to the slice.
    sliced = {i - skip: r for i, r in want.items() if i >= skip}
    assert unstorable_rows(table.slice(skip)) == sliced


def test_json_escape_vs_an_escaped_backslash() -> None:
    payloads = [
        '{"note": "a\\u0000b"}',  # the escape: a NUL once parsed
        '{"note": "a\\\\u0000b"}',  # backslash + "u0000": storable text
        '{"a\\u0000": 1}',  # in a key
        '{"note": "\\\\\\u0000"}',  # an escaped backslash, then the escape
    ]
    table = events_to_table([event(i, payload=p) for i, p in enumerate(payloads)])
    assert sorted(unstorable_rows(table)) == [0, 2, 3]


def test_reason_names_every_column_and_the_character() -> None:
    table = events_to_table(
        [event(0), event(1, event_id="x\x00", subject="s\x00", attributes={"k\x00": "v"})]
    )
    assert unstorable_rows(table) == {
        1: "event_id, subject, attributes: contains a NUL character (U+0000, \\u0000), "
        "which PostgreSQL text and jsonb cannot store"
    }


def test_clean_tables_and_columns_absent() -> None:
    table = events_to_table([event(i, payload='{"a": "\\\\u0000"}') for i in range(3)])
    assert unstorable_rows(table) == {}
    assert unstorable_rows(pa.table({"subject": ["a\x00"]})) == {0: nul_reason(["subject"])}


def test_escape_nul_makes_rows_storable() -> None:
    row = {"event_id": "a\x00", "attributes": {"k\x00": ["v\x00", 1]}, "n": None}
    escaped = escape_nul(row)
    assert escaped == {
        "event_id": "a\\u0000",
        "attributes": {"k\\u0000": ["v\\u0000", 1]},
        "n": None,
    }
    assert not has_nul(escaped)
