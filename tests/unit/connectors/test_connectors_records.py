"""Body splitting, limits and keys of raw records (pure)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.records import (
    BodyError,
    RawRecord,
    Rejected,
    apply_record_limit,
    key_of,
    key_of_bytes,
    lookup,
    source_allowed,
    split_body,
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=20)
)
records = st.dictionaries(st.text(min_size=1, max_size=8), json_scalars, max_size=6)


def test_lookup_paths() -> None:
    doc = {"a": {"b": [10, {"c": "x"}]}, "id": 7}
    assert lookup(doc, "$") == doc
    assert lookup(doc, "$.id") == 7
    assert lookup(doc, "$.a.b[1].c") == "x"
    assert lookup(doc, "$.a.b[5]") is None
    assert lookup(doc, "$.missing.deeper") is None
    with pytest.raises(ValueError):
        lookup(doc, "$..a")


def test_keys() -> None:
    assert key_of({"id": "e1"}, "$.id") == b"e1"
    assert key_of({"id": 12}, "$.id") == b"12"
    assert key_of({"id": {"x": 1}}, "$.id") is None
    assert key_of({"id": "e1"}, None) is None
    assert key_of_bytes(b'{"user": {"id": "u"}}\n', "$.user.id") == b"u"
    assert key_of_bytes(b"\x00binary", "$.id") is None


@given(st.lists(records, min_size=1, max_size=20))
def test_array_and_ndjson_give_the_same_records(items: list[dict]) -> None:
    array = split_body(orjson.dumps(items), "application/json")
    ndjson = split_body(b"\n".join(orjson.dumps(i) for i in items) + b"\n", "application/x-ndjson")
    assert [orjson.loads(r.value) for r in array if isinstance(r, RawRecord)] == items
    assert [orjson.loads(r.value) for r in ndjson if isinstance(r, RawRecord)] == items


def test_bad_bodies() -> None:
    with pytest.raises(BodyError):
        split_body(b"  ", "application/json")
    with pytest.raises(BodyError, match="not valid JSON"):
        split_body(b"[1, 2", "application/json")
    mixed = split_body(b'[{"a": 1}, 2]', None)
    assert isinstance(mixed[0], RawRecord) and isinstance(mixed[1], Rejected)
    lines = split_body(b'{"a": 1}\n{oops\n[1]\n', None)
    assert [type(r).__name__ for r in lines] == ["RawRecord", "Rejected", "Rejected"]
    assert isinstance(lines[1], Rejected) and "line 2" in lines[1].reason


def test_record_limit() -> None:
    small, big = RawRecord(b"{}", None), RawRecord(b'{"x": "' + b"a" * 100 + b'"}', None)
    limited = apply_record_limit([small, big], 50)
    assert limited[0] is small
    assert isinstance(limited[1], Rejected) and limited[1].code == "RecordTooLarge"


def test_source_allowed() -> None:
    assert source_allowed(["*"], "x")
    assert source_allowed(["a", "x"], "x")
    assert not source_allowed(["a"], "x")
