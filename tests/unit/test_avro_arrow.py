"""Column-wise Avro decoding: same values as fastavro, refuses what it cannot read exactly."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hosepipe.avro import make_decoder, make_encoder
from hosepipe.avro_arrow import ArrowBatchDecoder, FastPathError, record_plan
from hosepipe.settings import Settings

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
ENCODER = make_encoder(SETTINGS, "t")
DECODER = make_decoder(SETTINGS)
FAST = ArrowBatchDecoder(DECODER)

text = st.text(max_size=80)
events = st.fixed_dictionaries(
    {
        "event_id": text,
        "source": text,
        "event_type": text,
        "occurred_at": st.integers(-(2**63), 2**63 - 1),
        "ingested_at": st.integers(-(2**63), 2**63 - 1),
        "subject": st.none() | text,
        "payload": st.text(max_size=300),
        "attributes": st.dictionaries(text, text, max_size=5),
    }
)


def as_dicts(table: Any) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for row in rows:
        row["attributes"] = dict(row["attributes"])
    return list(rows)


def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@settings(max_examples=60, deadline=None)
@given(st.lists(events, min_size=1, max_size=30))
def test_same_values_as_fastavro(batch: list[dict[str, Any]]) -> None:
    values = ENCODER.encode_many(batch)
    assert as_dicts(FAST.decode(values)) == DECODER.decode_many(values)


def test_map_blocks_with_negative_counts_and_several_blocks() -> None:
    plain = ENCODER.encode({**base_event(), "attributes": {}})
    assert plain.endswith(b"\x00")
    k, v = b"\x02k", b"\x04vv"  # "k", "vv"
    blocks = zigzag(-1) + zigzag(len(k + v)) + k + v + zigzag(1) + b"\x02x" + b"\x02y" + b"\x00"
    value = plain[:-1] + blocks
    assert DECODER.decode(value)["attributes"] == {"k": "vv", "x": "y"}
    assert as_dicts(FAST.decode([value, plain]))[0]["attributes"] == {"k": "vv", "x": "y"}


def base_event() -> dict[str, Any]:
    return {
        "event_id": "e1",
        "source": "web",
        "event_type": "click",
        "occurred_at": 1,
        "ingested_at": 2,
        "subject": None,
        "payload": "{}",
        "attributes": {"a": "b"},
    }


@pytest.mark.parametrize(
    "damage",
    [
        lambda v: v + b"\x00",  # trailing bytes
        lambda v: v[:-3],  # truncated
        lambda v: v[:10] + b"\x04\xff\xfe" + v[12:],  # event_id "e1" → invalid UTF-8
        lambda v: v[:2] + b"\x00" * 8 + v[10:],  # unknown fingerprint
    ],
)
def test_malformed_or_foreign_values_raise(damage: Any) -> None:
    good = ENCODER.encode(base_event())
    assert good[10:13] == b"\x04e1"
    with pytest.raises(FastPathError):
        FAST.decode([good, damage(good)])


def test_unsupported_schemas_have_no_plan() -> None:
    assert record_plan({"fields": [{"name": "x", "type": "double"}]}) is None
    assert record_plan({"fields": [{"name": "x", "type": ["null", "long"]}]}) is None
    assert record_plan(DECODER.reader_schema) is not None and FAST.available


def test_a_length_reaching_into_the_next_message_raises() -> None:
    good = ENCODER.encode({**base_event(), "payload": "x" * 60})
    damaged = good[:10] + b"\x7e" + good[11:]  # event_id claims 63 bytes: past its message
    with pytest.raises(FastPathError):
        FAST.decode([damaged, good, good])


def test_empty_poll_has_the_typed_columns() -> None:
    table = FAST.decode([])
    assert table.num_rows == 0
    assert table.schema.field("occurred_at").type == "int64"
    assert (
        table.schema.field("attributes").type
        == FAST.decode([ENCODER.encode(base_event())]).schema.field("attributes").type
    )


def test_nulls_and_values_of_a_union_keep_their_rows() -> None:
    rows = [
        {**base_event(), "event_id": f"e{i}", "subject": None if i % 3 else f"s{i}"}
        for i in range(50)
    ]
    table = FAST.decode(ENCODER.encode_many(rows))
    assert table.column("subject").to_pylist() == [r["subject"] for r in rows]
    assert table.column("event_id").to_pylist() == [r["event_id"] for r in rows]


def test_eight_byte_timestamps_are_read_as_words_and_mixed_lengths_fall_back() -> None:
    """Microsecond timestamps of this era are 8-byte varints (the 64-bit word path); a batch
    whose first value is 8 bytes long but another is not takes the byte-by-byte path."""
    now = 1_763_791_200_000_000
    eight = [now, -now, now + 12_345, 2**48, 2**55 - 1, -(2**55)]
    batch = [{**base_event(), "occurred_at": t, "ingested_at": t + 1} for t in eight]
    values = ENCODER.encode_many(batch)
    assert as_dicts(FAST.decode(values)) == DECODER.decode_many(values)
    mixed = ENCODER.encode_many([*batch, {**base_event(), "occurred_at": 5}, batch[0]])
    assert as_dicts(FAST.decode(mixed)) == DECODER.decode_many(mixed)


@pytest.mark.parametrize("entries", [1, 2, 3])
def test_maps_with_the_same_number_of_entries_keep_record_order(entries: int) -> None:
    batch = [
        {**base_event(), "attributes": {f"k{j}-{n}": f"v{j}-{n}" for j in range(entries)}}
        for n in range(7)
    ]
    values = ENCODER.encode_many(batch)
    assert as_dicts(FAST.decode(values)) == DECODER.decode_many(values)


def test_an_arrow_array_of_values_is_decoded_without_a_copy_of_the_list() -> None:
    import pyarrow as pa

    values = ENCODER.encode_many([base_event(), {**base_event(), "event_id": "e2"}])
    array = pa.array([b"junk", *values], pa.large_binary()).slice(1)  # offset is handled
    assert as_dicts(FAST.decode(array)) == DECODER.decode_many(values)
    with pytest.raises(FastPathError):
        FAST.decode(pa.array([values[0], None], pa.large_binary()))
