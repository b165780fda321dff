"""Firehose protocol parsing and shapes (pure)."""

from __future__ import annotations

import base64

import pytest

from connectors.http import firehose

LIMITS = {"max_records": 3, "max_record_bytes": 10, "max_request_bytes": 25}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_operation() -> None:
    assert firehose.operation_of("Firehose_20150804.PutRecordBatch") == "PutRecordBatch"
    for bad in (None, "", "Firehose_20150804.CreateDeliveryStream", "Kinesis.PutRecord"):
        with pytest.raises(firehose.FirehoseError):
            firehose.operation_of(bad)


def test_put_batch_limits() -> None:
    ok = firehose.parse_put(
        "PutRecordBatch",
        {"DeliveryStreamName": "s", "Records": [{"Data": b64(b"abc")}, {"Data": b64(b"")}]},
        **LIMITS,
    )
    assert ok.records == [b"abc", b""]
    cases = [
        ({"Records": [{"Data": b64(b"a")}]}, "ValidationException"),
        ({"DeliveryStreamName": "s", "Records": [{"Data": b64(b"a")}] * 4}, "ValidationException"),
        (
            {"DeliveryStreamName": "s", "Records": [{"Data": b64(b"a" * 11)}]},
            "InvalidArgumentException",
        ),
        (
            {"DeliveryStreamName": "s", "Records": [{"Data": b64(b"a" * 9)}] * 3},
            "InvalidArgumentException",
        ),
        ({"DeliveryStreamName": "s", "Records": [{"Data": "%%%"}]}, "SerializationException"),
    ]
    for document, code in cases:
        with pytest.raises(firehose.FirehoseError) as error:
            firehose.parse_put("PutRecordBatch", document, **LIMITS)
        assert error.value.code == code, document


def test_record_ids_are_unique_per_coordinates() -> None:
    ids = {firehose.record_id(p, o, "s") for p in range(3) for o in range(100)}
    assert len(ids) == 300


def test_list_paging() -> None:
    page = firehose.list_streams(["c", "a", "b"], {"Limit": 2})
    assert page == {"DeliveryStreamNames": ["a", "b"], "HasMoreDeliveryStreams": True}
    rest = firehose.list_streams(["c", "a", "b"], {"ExclusiveStartDeliveryStreamName": "b"})
    assert rest == {"DeliveryStreamNames": ["c"], "HasMoreDeliveryStreams": False}
