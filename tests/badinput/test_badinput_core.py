"""The catalogue against the pure cores: the stream batch core and the ingest body splitter.

Each bad record travels in a batch with a good one: the bad one becomes exactly one dead
letter (or one per-record rejection) with the catalogued class, the good one comes out.
"""

from __future__ import annotations

import json
import time

import pytest

from connectors.records import (
    BodyError,
    RawRecord,
    Rejected,
    apply_record_limit,
    key_at,
    split_body,
)
from hosepipe.avro import AvroEncoder, make_decoder, single_object_header
from hosepipe.settings import Settings
from schemas import CANONICAL_EVENT, load_schema
from streams.core import RawRecord as KafkaRecord
from streams.core import StreamCore, never_seen
from streams.mapping import loads_exact
from tests.badinput.catalogue import Case, cases, dumps, record
from tests.badinput.support import (
    SOURCE,
    canonical_view,
    expected_canonical,
    param,
    pipeline,
)

PIPELINE = pipeline()
TOPIC = PIPELINE.raw_topic(SOURCE)


@pytest.mark.parametrize("case", [param(c) for c in cases("stream")])
def test_stream_core(case: Case) -> None:
    good = record(id="the-good-one")
    bad = case.value()
    core = StreamCore.from_pipeline(PIPELINE)
    batch = [KafkaRecord(TOPIC, 0, 0, bad), KafkaRecord(TOPIC, 0, 1, dumps(good))]
    result = core.process_batch(batch, never_seen, time.time_ns() // 1000)

    counts = result.counts[SOURCE]
    assert counts.received == 2 and counts.balanced
    out_ids = [o.event["event_id"] for o in result.outputs]
    assert "the-good-one" in out_ids, "the good record sent alongside was lost"
    kind, *rest = case.expect.split()
    if kind == "dlq":
        stage, error_class = rest
        assert len(result.dead_letters) == 1 and len(result.outputs) == 1
        letter = result.dead_letters[0]
        assert (letter.stage, letter.error_class) == (stage, error_class), letter.message
        assert letter.message and len(letter.message) < 2500
        headers = dict(letter.headers())
        assert headers["hosepipe.original.offset"] == b"0"
        assert headers["hosepipe.error.class"] == error_class.encode()
    else:
        assert kind == "canonical"
        assert not result.dead_letters, result.dead_letters[0].message
        assert len(result.outputs) == 2, "a distinct good record was dropped"
        event = result.outputs[0].event
        assert canonical_view(event) == expected_canonical(json.loads(bad))
        assert_avro_roundtrip(event)


def assert_avro_roundtrip(event: dict[str, object]) -> None:
    schema = load_schema(CANONICAL_EVENT)
    encoder = AvroEncoder(schema, single_object_header(schema), "single-object")
    decoder = make_decoder(Settings(_env_file=None))  # type: ignore[call-arg]
    assert decoder.decode(encoder.encode(event)) == event


def test_two_ids_beyond_64_bits_stay_distinct() -> None:
    """The data-loss side of ``id_beyond_64bit``: two ids, one digit apart."""
    values = [
        dumps(record())[:-1] + b',"id":123456789012345678901234567890}',
        dumps(record())[:-1] + b',"id":123456789012345678901234567891}',
    ]
    core = StreamCore.from_pipeline(PIPELINE)
    batch = [KafkaRecord(TOPIC, 0, i, v) for i, v in enumerate(values)]
    result = core.process_batch(batch, never_seen, time.time_ns() // 1000)
    assert not result.duplicates
    assert [o.event["event_id"] for o in result.outputs] == [
        "123456789012345678901234567890",
        "123456789012345678901234567891",
    ]


@pytest.mark.parametrize("case", [param(c) for c in cases("ingest")])
def test_ingest_splitter(case: Case) -> None:
    """The pure part of ingest: how the body splits; handler-level limits are integration."""
    status, code = case.expect.split()
    content_type = case.option("content_type", "application/x-ndjson")
    if status in {"404", "413"} and code != "RecordTooLarge":
        pytest.skip("decided by the HTTP handler (see test_badinput_servers)")
    if status == "400":
        with pytest.raises(BodyError):
            split_body(case.value(), content_type, key_at("$.id"))
        return
    good = dumps(record(id="the-good-one"))
    array = content_type == "application/json"
    body = b"[" + case.value() + b"," + good + b"]" if array else case.value() + b"\n" + good
    items = apply_record_limit(split_body(body, content_type, key_at("$.id")), 1_024_000)
    assert len(items) == 2
    assert items[1] == RawRecord(good, b"the-good-one")
    if code == "accepted":
        assert isinstance(items[0], RawRecord)
        # written back unchanged (an array's records are re-encoded): every digit kept
        assert loads_exact(items[0].value) == loads_exact(case.value())
    else:
        assert isinstance(items[0], Rejected) and items[0].code == code, items[0]
        assert items[0].reason
