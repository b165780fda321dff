"""Avro serde: both wire formats, old versions stay readable, clear errors, ints for times."""

from __future__ import annotations

import copy
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hosepipe.avro import (
    AvroDecoder,
    AvroEncoder,
    SerdeError,
    UnknownSchemaError,
    confluent_header,
    make_decoder,
    make_encoder,
    schema_fingerprint,
    shipped_writer_schemas,
    single_object_header,
)
from hosepipe.settings import Settings
from schemas import CANONICAL_EVENT, load_schema, schema_names

SCHEMA = load_schema(CANONICAL_EVENT)


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "evt-1",
        "source": "clickstream",
        "event_type": "page_view",
        "occurred_at": 1_763_790_000_123_456,
        "ingested_at": 1_763_790_001_000_000,
        "subject": "user-42",
        "payload": '{"url": "/checkout", "items": [1, 2]}',
        "attributes": {"raw_topic": "raw.clickstream", "raw_offset": "17"},
    }
    base.update(changes)
    return base


def single_object_pair() -> tuple[AvroEncoder, AvroDecoder]:
    return (
        AvroEncoder(SCHEMA, single_object_header(SCHEMA), "single-object"),
        AvroDecoder(SCHEMA, shipped_writer_schemas()),
    )


def test_shipped_schema_is_the_canonical_event() -> None:
    assert "canonical_event" in schema_names()
    assert SCHEMA["name"] == "CanonicalEvent" and SCHEMA["namespace"] == "io.hosepipe"
    fields = {f["name"]: f for f in SCHEMA["fields"]}
    assert list(fields) == [
        "event_id",
        "source",
        "event_type",
        "occurred_at",
        "ingested_at",
        "subject",
        "payload",
        "attributes",
    ]
    assert fields["occurred_at"]["type"] == {"type": "long", "logicalType": "timestamp-micros"}
    assert fields["subject"]["default"] is None and fields["attributes"]["default"] == {}
    assert all(f.get("doc") for f in SCHEMA["fields"])


def test_fingerprint_matches_the_avro_spec_test_vector() -> None:
    # Avro's Java SchemaNormalization test: CRC-64-AVRO("null") = 7195948357588979594
    assert schema_fingerprint("null") == (7195948357588979594).to_bytes(8, "little")


def test_single_object_layout() -> None:
    encoder, decoder = single_object_pair()
    data = encoder.encode(event())
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == schema_fingerprint(SCHEMA)
    # The body is plain Avro binary: a standard reader with the shipped schema decodes it.
    body = fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(SCHEMA))
    assert isinstance(body, dict)
    assert body["occurred_at"] == datetime(2025, 11, 22, 5, 40, 0, 123456, tzinfo=UTC)
    assert decoder.decode(data) == event()


def test_timestamps_stay_int_microseconds() -> None:
    encoder, decoder = single_object_pair()
    decoded = decoder.decode(encoder.encode(event()))
    assert type(decoded["occurred_at"]) is int and type(decoded["ingested_at"]) is int


def test_defaults_fill_optional_fields() -> None:
    encoder, decoder = single_object_pair()
    minimal = {k: v for k, v in event().items() if k not in {"subject", "attributes"}}
    assert decoder.decode(encoder.encode(minimal)) == {
        **minimal,
        "subject": None,
        "attributes": {},
    }


def test_confluent_layout_and_decoding_without_registry_fails_clearly() -> None:
    encoder = AvroEncoder(SCHEMA, confluent_header(42), "confluent")
    data = encoder.encode(event())
    assert data[:5] == b"\x00\x00\x00\x00\x2a"
    _, decoder = single_object_pair()
    with pytest.raises(UnknownSchemaError, match=r"schema id 42.*no schema registry"):
        decoder.decode(data)


def test_confluent_decoding_with_a_lookup() -> None:
    encoder = AvroEncoder(SCHEMA, confluent_header(7), "confluent")
    asked: list[int] = []

    def lookup(schema_id: int) -> dict[str, Any]:
        asked.append(schema_id)
        return SCHEMA

    decoder = AvroDecoder(SCHEMA, shipped_writer_schemas(), lookup)
    values = encoder.encode_many([event(event_id=str(i)) for i in range(5)])
    assert [e["event_id"] for e in decoder.decode_many(values)] == ["0", "1", "2", "3", "4"]
    assert asked == [7]  # looked up once, then cached


def test_unknown_registry_id_names_it() -> None:
    def lookup(schema_id: int) -> dict[str, Any]:
        raise LookupError("40403 Schema not found")

    decoder = AvroDecoder(SCHEMA, {}, lookup)
    data = AvroEncoder(SCHEMA, confluent_header(99), "confluent").encode(event())
    with pytest.raises(UnknownSchemaError, match="schema id 99"):
        decoder.decode(data)


def test_unknown_fingerprint_names_it() -> None:
    other = copy.deepcopy(SCHEMA)
    other["fields"].append({"name": "extra", "type": "string", "default": ""})
    data = AvroEncoder(other, single_object_header(other), "single-object").encode(event())
    _, decoder = single_object_pair()
    with pytest.raises(UnknownSchemaError, match=schema_fingerprint(other).hex()):
        decoder.decode(data)


def test_not_avro_and_truncated_messages_are_errors() -> None:
    encoder, decoder = single_object_pair()
    data = encoder.encode(event())
    with pytest.raises(SerdeError, match="not an Avro message"):
        decoder.decode(b'{"json": true}')
    with pytest.raises(SerdeError, match="cannot decode"):
        decoder.decode(data[:-5])
    with pytest.raises(SerdeError, match="trailing"):
        decoder.decode(data + b"\x00")


def test_encode_errors_name_the_event_and_field() -> None:
    encoder, _ = single_object_pair()
    with pytest.raises(SerdeError, match=r"'evt-1'.*occurred_at"):
        encoder.encode(event(occurred_at="yesterday"))
    with pytest.raises(SerdeError, match="payload"):
        encoder.encode({k: v for k, v in event().items() if k != "payload"})
    with pytest.raises(SerdeError, match="batch index 1"):
        encoder.encode_many([event(), event(attributes={"n": 1})])


def write_schemas(root: Path, current: dict[str, Any], history: list[dict[str, Any]]) -> Path:
    (root / "history").mkdir(parents=True)
    (root / "canonical_event.avsc").write_text(json.dumps(current))
    for number, schema in enumerate(history, start=1):
        (root / "history" / f"canonical_event.v{number}.avsc").write_text(json.dumps(schema))
    return root


def test_data_of_an_older_shipped_version_stays_readable(tmp_path: Path) -> None:
    v1 = copy.deepcopy(SCHEMA)
    v1["fields"] = [f for f in v1["fields"] if f["name"] not in {"subject", "attributes"}]
    root = write_schemas(tmp_path, SCHEMA, [v1])
    old_event = {k: v for k, v in event().items() if k not in {"subject", "attributes"}}
    old_data = AvroEncoder(v1, single_object_header(v1), "single-object").encode(old_event)

    decoder = AvroDecoder(SCHEMA, shipped_writer_schemas(root=root))
    assert decoder.decode(old_data) == {**old_event, "subject": None, "attributes": {}}
    # Without the history file, the same bytes are unknown.
    with pytest.raises(UnknownSchemaError):
        AvroDecoder(SCHEMA, shipped_writer_schemas()).decode(old_data)


def test_factories_choose_single_object_without_registry() -> None:
    settings_ = Settings(_env_file=None, schema_registry_url=None)  # type: ignore[call-arg]
    encoder = make_encoder(settings_, "events.canonical")
    assert encoder.wire_format == "single-object"
    assert make_decoder(settings_).decode(encoder.encode(event())) == event()


texts = st.text(max_size=40)
events = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=40),
        "source": texts,
        "event_type": texts,
        "occurred_at": st.integers(-(2**63), 2**63 - 1),
        "ingested_at": st.integers(0, 2**62),
        "subject": st.none() | texts,
        "payload": st.builds(json.dumps, st.dictionaries(texts, st.integers() | texts)),
        "attributes": st.dictionaries(texts, texts, max_size=5),
    }
)


@settings(max_examples=200)
@given(st.lists(events, max_size=20))
def test_round_trip_property(batch: list[dict[str, Any]]) -> None:
    encoder, decoder = single_object_pair()
    assert decoder.decode_many(encoder.encode_many(batch)) == batch
    assert [decoder.decode(encoder.encode(e)) for e in batch] == batch
