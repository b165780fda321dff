"""The Firehose JSON 1.1 protocol: request parsing, responses and error shapes.

Pure functions; :mod:`connectors.http.app` does the I/O. Delivery stream name = source name.
Shapes follow the Firehose API reference so that botocore's parser (and any Firehose SDK) reads
them: errors are ``{"__type": ..., "message": ...}`` with HTTP 400 (403 for authentication).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

TARGET_PREFIX = "Firehose_20150804."
CONTENT_TYPE = "application/x-amz-json-1.1"
OPERATIONS = frozenset(
    {"PutRecord", "PutRecordBatch", "ListDeliveryStreams", "DescribeDeliveryStream"}
)
ACCOUNT = "000000000000"


class FirehoseError(Exception):
    """An error answered in Firehose's shape."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> bytes:
        return orjson.dumps({"__type": self.code, "message": self.message})


@dataclass(frozen=True, slots=True)
class PutRequest:
    """A decoded PutRecord / PutRecordBatch request."""

    stream: str
    records: list[bytes]


def operation_of(target: str | None) -> str:
    """``Firehose_20150804.PutRecordBatch`` → ``PutRecordBatch``; errors for anything else."""
    if not target:
        raise FirehoseError("UnknownOperationException", "the X-Amz-Target header is missing")
    if not target.startswith(TARGET_PREFIX) or target[len(TARGET_PREFIX) :] not in OPERATIONS:
        raise FirehoseError("UnknownOperationException", f"operation {target!r} is not supported")
    return target[len(TARGET_PREFIX) :]


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise FirehoseError("SerializationException", f"the body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise FirehoseError("SerializationException", "the body must be a JSON object")
    return document


def _stream_name(document: dict[str, Any]) -> str:
    name = document.get("DeliveryStreamName")
    if not isinstance(name, str) or not name:
        raise FirehoseError("ValidationException", "DeliveryStreamName is required")
    return name


def _decode(item: Any, where: str, max_record_bytes: int) -> bytes:
    if not isinstance(item, dict) or not isinstance(item.get("Data"), str):
        raise FirehoseError("ValidationException", f"{where}: Data (base64) is required")
    try:
        data = binascii.a2b_base64(item["Data"], strict_mode=True)
    except binascii.Error as exc:
        raise FirehoseError("SerializationException", f"{where}: Data is not base64") from exc
    if len(data) > max_record_bytes:
        raise FirehoseError(
            "InvalidArgumentException",
            f"{where}: record size {len(data)} bytes exceeds the limit of {max_record_bytes} bytes",
        )
    return data


def parse_put(
    operation: str,
    document: dict[str, Any],
    *,
    max_records: int,
    max_record_bytes: int,
    max_request_bytes: int,
) -> PutRequest:
    """Validate and decode a put request against the configured Firehose-like limits."""
    stream = _stream_name(document)
    if operation == "PutRecord":
        return PutRequest(stream, [_decode(document.get("Record"), "Record", max_record_bytes)])
    items = document.get("Records")
    if not isinstance(items, list) or not items:
        raise FirehoseError("ValidationException", "Records must be a non-empty list")
    if len(items) > max_records:
        raise FirehoseError(
            "ValidationException",
            f"1 validation error detected: Value at 'records' failed to satisfy constraint: "
            f"Member must have length less than or equal to {max_records}",
        )
    records = [_decode(item, f"Records[{i}]", max_record_bytes) for i, item in enumerate(items)]
    total = sum(len(r) for r in records)
    if total > max_request_bytes:
        raise FirehoseError(
            "InvalidArgumentException",
            f"records total {total} bytes, more than the request limit of "
            f"{max_request_bytes} bytes",
        )
    return PutRequest(stream, records)


@functools.lru_cache(maxsize=1024)
def _stream_digest(stream: str) -> str:
    return hashlib.blake2s(stream.encode(), digest_size=6).hexdigest()


def record_id(partition: int, offset: int, stream: str) -> str:
    """An opaque, unique RecordId (Firehose's are long opaque strings too)."""
    return f"{_stream_digest(stream)}{partition:08x}{offset:016x}"


def describe(stream: str, region: str, created_at: float) -> dict[str, Any]:
    """DescribeDeliveryStream output for a push source."""
    return {
        "DeliveryStreamDescription": {
            "DeliveryStreamName": stream,
            "DeliveryStreamARN": f"arn:aws:firehose:{region}:{ACCOUNT}:deliverystream/{stream}",
            "DeliveryStreamStatus": "ACTIVE",
            "DeliveryStreamType": "DirectPut",
            "VersionId": "1",
            "CreateTimestamp": created_at,
            "Destinations": [],
            "HasMoreDestinations": False,
        }
    }


def list_streams(names: list[str], document: dict[str, Any]) -> dict[str, Any]:
    """ListDeliveryStreams output, honouring Limit and ExclusiveStartDeliveryStreamName."""
    ordered = sorted(names)
    start = document.get("ExclusiveStartDeliveryStreamName")
    if isinstance(start, str):
        ordered = [n for n in ordered if n > start]
    limit = document.get("Limit", 10)
    if not isinstance(limit, int) or limit < 1:
        raise FirehoseError("ValidationException", "Limit must be a positive integer")
    return {
        "DeliveryStreamNames": ordered[:limit],
        "HasMoreDeliveryStreams": len(ordered) > limit,
    }
