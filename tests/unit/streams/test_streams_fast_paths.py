"""The worker's fast paths give exactly what the general code gives; the limits never crash.

- the canonical Avro writer against fastavro, byte for byte;
- the payload removal against :func:`delete_path` on a deep copy;
- exact integers beyond 64 bits (ids, payload, hash);
- times beyond the calendar in error messages; dead letters cut to the producer's limit;
- the time index of the dedupe store (one entry per batch; older stores still expire).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hosepipe.avro import AvroEncoder, make_decoder, single_object_header
from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings
from schemas import CANONICAL_EVENT, load_schema
from streams.canonical_avro import encode_long, fast_writer_for, has_canonical_layout
from streams.core import (
    ORIGINAL_BYTES_HEADER,
    TRUNCATED_HEADER,
    RawRecord,
    StreamCore,
    fit_dead_letter,
    message_bytes,
    never_seen,
)
from streams.dedupe import ID_PREFIX, TIME_PREFIX, PartitionStore, encode_time
from streams.kafka_runner import _chunks
from streams.mapping import hash_event_id, loads_exact, scalar_text
from streams.output import max_message_bytes
from streams.paths import compile_removal, delete_path, parse_path
from streams.timestamps import format_micros

NOW = 1795327200_000000  # 2026-11-22T06:00:00Z
HOUR = 3600 * 1_000_000


def encoder() -> AvroEncoder:
    schema = load_schema(CANONICAL_EVENT)
    return AvroEncoder(schema, single_object_header(schema), "single-object")


text = st.text(max_size=40)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
events = st.fixed_dictionaries(
    {
        "event_id": text,
        "source": text,
        "event_type": text,
        "occurred_at": longs,
        "ingested_at": longs,
        "subject": st.none() | text,
        "payload": st.text(max_size=20_000),
        "attributes": st.dictionaries(text, text, max_size=5),
    }
)


# ------------------------------------------------------------------ Avro


def test_the_shipped_schema_takes_the_fast_writer() -> None:
    enc = encoder()
    assert has_canonical_layout(enc.schema)
    assert fast_writer_for(enc) != enc.encode_many
    other = dict(enc.schema, fields=[*enc.schema["fields"], {"name": "x", "type": "int"}])
    assert not has_canonical_layout(other)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=5))
def test_fast_writer_writes_what_fastavro_writes(batch: list[dict[str, Any]]) -> None:
    enc = encoder()
    written = fast_writer_for(enc)(batch)
    assert written == enc.encode_many(batch)
    decoder = make_decoder(Settings(_env_file=None))  # type: ignore[call-arg]
    assert [decoder.decode(value) for value in written] == batch


@given(longs)
def test_long_encoding(value: int) -> None:
    enc = encoder()
    body = enc.encode({**_event(), "occurred_at": value})
    assert encode_long(value) in body


def _event(**fields: Any) -> dict[str, Any]:
    base = {
        "event_id": "e",
        "source": "s",
        "event_type": "t",
        "occurred_at": NOW,
        "ingested_at": NOW,
        "subject": None,
        "payload": "{}",
        "attributes": {},
    }
    return base | fields


@pytest.mark.parametrize(
    "bad",
    [{"occurred_at": 2**63}, {"event_type": None}, {"attributes": {"a": 1}}, {"occurred_at": 1.5}],
)
def test_fast_writer_refuses_what_does_not_fit(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        fast_writer_for(encoder())([_event(**bad)])


# ------------------------------------------------------------------ payload removal

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from("abc"), children, max_size=3)
    ),
    max_leaves=12,
)
paths = st.lists(
    st.lists(st.sampled_from("abc") | st.integers(0, 1), min_size=1, max_size=3).map(
        lambda steps: "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps)
    ),
    max_size=4,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from("abc"), json_values, max_size=3), paths)
def test_removal_equals_delete_path_on_a_copy(record: dict[str, Any], spec: list[str]) -> None:
    steps = [parse_path(p) for p in spec]
    before = copy.deepcopy(record)
    expected = copy.deepcopy(record)
    for s in steps:
        delete_path(expected, s)
    assert compile_removal(steps)(record) == expected
    assert record == before, "the input must stay intact"


# ------------------------------------------------------------------ integers beyond 64 bits


def test_big_integers_stay_exact() -> None:
    raw = b'{"id": 123456789012345678901234567890, "n": -9223372036854775809, "f": 1.5}'
    value = loads_exact(raw)
    assert value == json.loads(raw)
    assert scalar_text(value["id"], "event_id") == "123456789012345678901234567890"
    assert hash_event_id("s", [value["id"]]) == hash_event_id("s", [123456789012345678901234567890])
    assert loads_exact(b'{"a": 1}') == {"a": 1}
    with pytest.raises(orjson.JSONDecodeError):  # orjson still validates first
        loads_exact(b'{"id": 1234567890123456789012345, "x": NaN}')


def test_big_integer_ids_and_payloads_reach_the_event() -> None:
    pipeline = PipelineConfig.model_validate(
        {
            "sources": {
                "s": {
                    "kind": "push",
                    "mapping": {"event_id": "$.id", "occurred_at": "$.ts", "event_type": "$.t"},
                }
            }
        }
    )
    core = StreamCore.from_pipeline(pipeline)
    values = [
        b'{"id": 123456789012345678901234567890, "ts": 1795327200, "t": "x", '
        b'"n": 18446744073709551616}',
        b'{"id": 123456789012345678901234567891, "ts": 1795327200, "t": "x"}',
    ]
    batch = [RawRecord("raw.s", 0, i, v) for i, v in enumerate(values)]
    result = core.process_batch(batch, never_seen, NOW)
    assert not result.dead_letters and not result.duplicates
    first, second = (o.event for o in result.outputs)
    assert first["event_id"] == "123456789012345678901234567890"
    assert second["event_id"] == "123456789012345678901234567891"
    assert first["payload"] == '{"n":18446744073709551616}'


# ------------------------------------------------------------------ limits


def test_times_beyond_the_calendar_are_named_not_raised() -> None:
    assert (
        format_micros(10**27) == "1000000000000000000000000000 µs since the epoch (after year 9999)"
    )
    assert "before year 1" in format_micros(-(10**27))
    pipeline = PipelineConfig.model_validate(
        {
            "sources": {
                "s": {
                    "kind": "push",
                    "mapping": {"event_id": "$.id", "occurred_at": "$.ts", "event_type": "$.t"},
                }
            }
        }
    )
    record = RawRecord("raw.s", 0, 0, b'{"id": "a", "ts": 1e30, "t": "x"}')
    result = StreamCore.from_pipeline(pipeline).process_batch([record], never_seen, NOW)
    (letter,) = result.dead_letters
    assert (letter.stage, letter.error_class) == ("validate", "ImplausibleTimestamp")
    assert "occurred_at 1000000000000000013287555072 µs since the epoch (after year 9999)" in (
        letter.message
    )
    assert "outside the plausible range" in letter.message


def test_dead_letters_are_cut_to_the_limit_with_the_original_size() -> None:
    headers = [("hosepipe.source", b"s"), ("trace", b"t" * 100)]
    value = b"x" * 50_000
    cut, marked = fit_dead_letter(b"key", value, headers, 20_000)
    assert value.startswith(cut) and 0 < len(cut) < 20_000
    total = len(cut) + 3 + sum(len(n) + len(v) for n, v in marked)
    assert total < 20_000
    assert dict(marked)[ORIGINAL_BYTES_HEADER] == b"50000"
    assert dict(marked)[TRUNCATED_HEADER] == b"true"
    # original headers that alone exceed the room are dropped, reasons kept
    cut, marked = fit_dead_letter(None, value, [*headers, ("big", b"y" * 30_000)], 20_000)
    assert "big" not in dict(marked) and "hosepipe.source" in dict(marked)
    assert len(cut) > 0


def test_a_cut_dead_letter_passes_the_check_that_cut_it() -> None:
    headers = [("hosepipe.source", b"s"), ("trace", b"t" * 100)]
    assert message_bytes(b"key", b"x" * 50_000, headers) > 20_000
    cut, marked = fit_dead_letter(b"key", b"x" * 50_000, headers, 20_000)
    assert message_bytes(b"key", cut, marked) <= 20_000


def test_producer_limit_covers_the_largest_source_record() -> None:
    def pipeline(size: int) -> PipelineConfig:
        mapping = {"event_id": "$.id", "occurred_at": "$.ts", "event_type": "$.t"}
        source = {"kind": "push", "mapping": mapping, "max_record_bytes": size}
        return PipelineConfig.model_validate({"sources": {"s": source}})

    assert max_message_bytes(pipeline(1_024_000)) > 2 * 1_024_000
    assert max_message_bytes(pipeline(100)) >= 1_000_000  # never below librdkafka's default


# ------------------------------------------------------------------ dedupe time index


def test_interleaved_times_expire_separately(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p", window_us=HOUR)
    store.remember([("a", 1000), ("b", 1000 + HOUR), ("c", 1000)])
    store.remember([("d", 1000)])
    assert store.expire(1000 + HOUR) == 3
    assert store.seen(["a", "b", "c", "d"], 1000 + HOUR) == [False, True, False, False]
    assert store.count() == 1
    store.close()


def test_stores_with_the_older_per_id_index_still_expire(tmp_path: Path) -> None:
    from rocksdict import Options, Rdict

    path = tmp_path / "old"
    path.mkdir()
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(str(path), options)
    stamp = encode_time(1000)
    db[ID_PREFIX + b"old"] = stamp
    db[TIME_PREFIX + stamp + b"old"] = b""
    db.close()
    store = PartitionStore(path, window_us=HOUR)
    assert store.seen(["old"], 1000 + HOUR - 1) == [True]
    assert store.expire(1000 + HOUR) == 1
    assert store.count() == 0
    store.close()


def test_changelog_messages_are_split_by_size() -> None:
    ids = [f"evt-{i:09d}" for i in range(100_000)]
    chunks = _chunks(ids, 512 * 1024)
    assert [i for chunk in chunks for i in chunk] == ids
    assert all(len(orjson.dumps(chunk)) < 512 * 1024 for chunk in chunks)
    assert _chunks(["x" * 600_000, "a"], 512 * 1024) == [["x" * 600_000], ["a"]]
