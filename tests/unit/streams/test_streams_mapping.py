"""Mapping: paths, ids, payload, attributes — compiled from config, checked per record."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosepipe.config import MappingConfig
from streams.errors import InvalidField, InvalidTimestamp, MissingField
from streams.mapping import compile_mapping, hash_event_id
from streams.paths import MISSING, compile_path, delete_path, parse_path

CLICK = {
    "eventId": "e-1",
    "ts": 1795327200123,
    "type": "page_view",
    "user": {"id": 42, "plan": "pro"},
    "context": {"appVersion": "1.2.3"},
    "items": [{"sku": "a"}, {"sku": "b"}],
}


def mapping(**spec: Any) -> MappingConfig:
    base: dict[str, Any] = {
        "event_id": "$.eventId",
        "occurred_at": {"path": "$.ts", "format": "epoch_ms"},
        "event_type": "$.type",
    }
    base.update(spec)
    return MappingConfig.model_validate(base)


def test_paths() -> None:
    assert parse_path("$.a.b[0].c") == ("a", "b", 0, "c")
    assert compile_path("$")(CLICK) is CLICK
    assert compile_path("$.user.id")(CLICK) == 42
    assert compile_path("$.items[1].sku")(CLICK) == "b"
    assert compile_path("$.items[2].sku")(CLICK) is MISSING
    assert compile_path("$.user.id.x")(CLICK) is MISSING
    assert compile_path("$.nope")(CLICK) is MISSING
    with pytest.raises(ValueError, match="cannot parse"):
        parse_path("$.a..b")


def test_delete_path_prunes_empty_objects() -> None:
    record = {"a": {"b": {"c": 1}}, "d": 2}
    delete_path(record, ("a", "b", "c"))
    assert record == {"d": 2}
    delete_path(record, ("x", "y"))  # absent: no error
    assert record == {"d": 2}


def test_clickstream_example() -> None:
    to_canonical = compile_mapping(
        "clickstream",
        mapping(
            subject="$.user.id",
            attributes={"channel": "web"},
            attribute_paths={"app_version": "$.context.appVersion", "nope": "$.missing"},
        ),
    )
    raw = json.loads(json.dumps(CLICK))
    event = to_canonical(raw, 7)
    assert raw == CLICK, "the input record is not modified"
    assert event == {
        "event_id": "e-1",
        "source": "clickstream",
        "event_type": "page_view",
        "occurred_at": 1795327200123000,
        "ingested_at": 7,
        "subject": "42",
        "payload": event["payload"],
        "attributes": {"channel": "web", "app_version": "1.2.3"},
    }
    assert orjson.loads(event["payload"]) == {
        "user": {"plan": "pro"},
        "context": {"appVersion": "1.2.3"},
        "items": [{"sku": "a"}, {"sku": "b"}],
    }


def test_payload_subtree_and_constants() -> None:
    to_canonical = compile_mapping(
        "orders", mapping(event_type={"const": "order"}, payload={"path": "$.items"})
    )
    event = to_canonical(CLICK, 0)
    assert event["event_type"] == "order"
    assert orjson.loads(event["payload"]) == CLICK["items"]
    assert event["subject"] is None


def test_defaults_fill_absent_fields() -> None:
    to_canonical = compile_mapping(
        "s", mapping(event_type={"path": "$.kind", "default": "unknown"})
    )
    assert to_canonical(CLICK, 0)["event_type"] == "unknown"


def test_hash_id_is_documented_encoding() -> None:
    to_canonical = compile_mapping("orders", mapping(event_id={"hash": ["$.user.id", "$.type"]}))
    expected = hashlib.sha256(
        json.dumps(["orders", 42, "page_view"], separators=(",", ":")).encode()
    ).hexdigest()
    assert to_canonical(CLICK, 0)["event_id"] == expected


@pytest.mark.parametrize(
    ("spec", "record", "error", "match"),
    [
        ({}, {**CLICK, "eventId": None}, MissingField, "event_id"),
        ({}, {k: v for k, v in CLICK.items() if k != "ts"}, MissingField, "occurred_at"),
        ({}, {**CLICK, "ts": "noon"}, InvalidTimestamp, r"occurred_at at \$\.ts"),
        ({}, {**CLICK, "type": {"a": 1}}, InvalidField, "event_type"),
        ({}, {**CLICK, "eventId": ""}, MissingField, "empty value"),
        ({"event_id": {"hash": ["$.absent"]}}, CLICK, MissingField, r"hash field \$\.absent"),
        ({"payload": {"path": "$.absent"}}, CLICK, MissingField, "payload"),
    ],
)
def test_errors_name_field_and_path(
    spec: dict[str, Any], record: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        compile_mapping("s", mapping(**spec))(record, 0)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.lists(json_values, min_size=1, max_size=4))
def test_hash_matches_stdlib_json_and_ignores_key_order(values: list[Any]) -> None:
    reference = hashlib.sha256(
        json.dumps(
            ["src", *values], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    ).hexdigest()
    assert hash_event_id("src", values) == reference
    shuffled = json.loads(json.dumps(values))  # same content, fresh dicts
    assert hash_event_id("src", shuffled) == reference
    assert hash_event_id("other", values) != reference


keys = st.sampled_from(["a", "b", "c", "d"])
records = st.recursive(
    st.integers(-(2**63), 2**63 - 1) | st.text(max_size=3),
    lambda inner: st.dictionaries(keys, inner, max_size=4) | st.lists(inner, max_size=3),
    max_leaves=12,
)
paths = st.lists(keys | st.integers(0, 2), max_size=4).map(
    lambda steps: "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)
)


def reference_get(record: Any, path: str) -> Any:
    value = record
    for step in parse_path(path):
        if (isinstance(step, str) and isinstance(value, dict) and step in value) or (
            isinstance(step, int) and isinstance(value, list) and step < len(value)
        ):
            value = value[step]  # type: ignore[index]
        else:
            return MISSING
    return value


@given(records, paths)
def test_compiled_path_agrees_with_reference(record: Any, path: str) -> None:
    assert compile_path(path)(record) is reference_get(record, path) or compile_path(path)(
        record
    ) == reference_get(record, path)


@given(st.dictionaries(keys, records, max_size=4), st.lists(paths, max_size=3))
def test_rest_payload_removes_only_mapped_values(record: dict[str, Any], extra: list[str]) -> None:
    record = {**record, "eventId": "x", "ts": 1795327200123, "type": "t"}
    snapshot = json.loads(json.dumps(record))
    event = compile_mapping("s", mapping())(record, 0)
    assert record == snapshot
    expected = {k: v for k, v in snapshot.items() if k not in ("eventId", "ts", "type")}
    assert orjson.loads(event["payload"]) == expected
