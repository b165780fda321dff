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
    key_at,
    key_of,
    key_of_bytes,
    lookup,
    record_key,
    source_allowed,
    split_body,
    unkeyed,
)
from hosepipe.config import SourceConfig
from streams.mapping import compile_mapping

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
    assert key_of_bytes(b'{"user": {"id": "u"}}\n', key_at("$.user.id")) == b"u"
    assert key_of_bytes(b"\x00binary", key_at("$.id")) is None
    assert key_of_bytes(b'{"id": "e1"}', unkeyed) is None
    with pytest.raises(ValueError):
        key_at("$..id")


def source(**fields: object) -> SourceConfig:
    mapping = {
        "event_id": {"hash": ["$.order.id", "$.status"]},
        "occurred_at": "$.at",
        "event_type": "$.status",
    }
    return SourceConfig.model_validate({"kind": "push", "mapping": mapping, **fields})


def test_record_key_is_the_key_path_when_set() -> None:
    key = record_key("orders", source(key_path="$.order.id"))
    assert key({"order": {"id": "o-1"}, "status": "paid"}) == b"o-1"


def test_record_key_is_the_event_id_of_the_mapping_without_key_path() -> None:
    key = record_key("orders", source())
    to_canonical = compile_mapping("orders", source().mapping)
    record = {"order": {"id": "o-1"}, "status": "paid", "at": "2026-12-05T10:00:00Z"}
    assert key(record) == to_canonical(record, 0)["event_id"].encode()
    # equal events, equal keys; another event, another key
    assert key(dict(record)) == key(record)
    assert key({**record, "status": "shipped"}) != key(record)
    # no id in the record (the worker dead-letters it), not an object: unkeyed
    assert key({"order": {"id": "o-1"}}) is None
    assert key([1, 2]) is None
    # the key of the plain endpoint and of Firehose's opaque bytes is the same
    body = orjson.dumps(record)
    assert split_body(body + b"\n", None, key)[0] == RawRecord(body, key(record))
    assert key_of_bytes(body, key) == key(record)


def test_record_key_of_a_field_id() -> None:
    plain = SourceConfig.model_validate(
        {
            "kind": "push",
            "mapping": {"event_id": "$.id", "occurred_at": "$.at", "event_type": "$.t"},
        }
    )
    assert record_key("clicks", plain)({"id": 42}) == b"42"
    assert record_key("clicks", plain)({"id": "e-1"}) == b"e-1"
    assert record_key("clicks", plain)({"other": 1}) is None


def test_sources_keyed_only_by_key_path() -> None:
    # a transform may change the id's fields; Avro records are not parsed by ingest
    assert record_key("orders", source(transform="pkg.mod:fn")) is unkeyed
    assert record_key("orders", source(format="avro", avro_schema="s.avsc")) is unkeyed
    keyed = record_key("orders", source(transform="pkg.mod:fn", key_path="$.order.id"))
    assert keyed({"order": {"id": "o-1"}}) == b"o-1"


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


def test_pulled_sql_values_are_keyed_by_the_workers_event_id() -> None:
    """A SQL driver's UUID, Decimal and datetime become JSON text before the worker reads
    them; the key is made from that text, so it is the event id the worker computes."""
    import datetime
    import decimal
    import uuid

    from connectors.pull.emitter import encode_records

    by_field = SourceConfig.model_validate(
        {
            "kind": "push",
            "mapping": {"event_id": "$.id", "occurred_at": "$.at", "event_type": {"const": "t"}},
        }
    )
    by_hash = SourceConfig.model_validate(
        {
            "kind": "push",
            "mapping": {
                "event_id": {"hash": ["$.sku", "$.level", "$.at"]},
                "occurred_at": "$.at",
                "event_type": {"const": "t"},
            },
        }
    )
    row = {
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "sku": "A-1",
        "level": decimal.Decimal("1.50"),
        "at": datetime.datetime(2026, 12, 5, 10, 0, tzinfo=datetime.UTC),
    }
    for name, config in (("db", by_field), ("stock", by_hash)):
        [record] = encode_records([row], record_key(name, config))
        worker_id = compile_mapping(name, config.mapping)(orjson.loads(record.value), 0)
        assert record.key == worker_id["event_id"].encode()


BIG = 123456789012345678901234567890


def test_integers_beyond_64_bits_stay_exact_in_values_and_keys() -> None:
    """orjson alone reads such an integer as a float: the JSON-array path wrote the rounded
    number back (two ids rounding alike became one event), and keys would differ from the
    worker's event id."""
    from streams.mapping import loads_exact

    plain = SourceConfig.model_validate(
        {
            "kind": "push",
            "mapping": {"event_id": "$.id", "occurred_at": "$.at", "event_type": "$.t"},
        }
    )
    key = record_key("clicks", plain)
    to_canonical = compile_mapping("clicks", plain.mapping)
    line = b'{"id": %d, "at": 1, "t": "x"}' % BIG
    expected_key = to_canonical(loads_exact(line), 0)["event_id"].encode()
    assert expected_key == str(BIG).encode()
    [from_array] = split_body(b"[" + line + b"]", "application/json", key)
    [from_line] = split_body(line + b"\n", "application/x-ndjson", key)
    assert isinstance(from_array, RawRecord) and isinstance(from_line, RawRecord)
    assert loads_exact(from_array.value)["id"] == BIG  # the value keeps every digit
    assert from_array.key == from_line.key == key_of_bytes(line, key) == expected_key
    other = split_body(b'[{"id": %d}]' % (BIG + 1), "application/json", key)[0]
    assert isinstance(other, RawRecord) and other.key != from_array.key


def test_a_record_nested_too_deep_to_write_back_is_refused_alone() -> None:
    deep = b'{"p":' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}"
    records = split_body(b"[" + deep + b', {"id": "ok"}]', "application/json", key_at("$.id"))
    assert isinstance(records[0], Rejected) and "nested too deeply" in records[0].reason
    assert records[1] == RawRecord(b'{"id":"ok"}', b"ok")
    # 300 levels: more than orjson writes, written back by the standard library
    medium = b'{"p":' + b"[" * 300 + b"1" + b"]" * 300 + b"}"
    [kept] = split_body(b"[" + medium + b"]", "application/json")
    assert isinstance(kept, RawRecord) and orjson.loads(kept.value) == orjson.loads(medium)


def test_a_key_that_cannot_be_made_leaves_the_record_unkeyed() -> None:
    # the hash of a field nested ~1,000 deep cannot be written: no key, no error
    key = record_key("orders", source())
    deep: object = 1
    for _ in range(1000):
        deep = [deep]
    assert key({"order": {"id": deep}, "status": "paid"}) is None


def test_long_keys_are_hashed() -> None:
    from connectors.records import MAX_KEY_BYTES

    long_id = "x" * (MAX_KEY_BYTES + 1)
    key = key_at("$.id")
    hashed = key({"id": long_id})
    assert hashed is not None and len(hashed) == 64
    assert hashed == key({"id": long_id}) != key({"id": long_id + "y"})
    assert key({"id": "x" * MAX_KEY_BYTES}) == b"x" * MAX_KEY_BYTES
