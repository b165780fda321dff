"""Hand records of one source to ``raw.<source>`` and wait until Kafka has them all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from connectors.delivery import Delivered, DeliveryProducer, Throttled
from connectors.metrics import BYTES, PRODUCE_SECONDS, RECORDS
from connectors.records import RawRecord, RecordKey, key_of_bytes

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """Kafka refused records for good (not a full local queue); the cursor must not move."""


class Emitter:
    """Produces a source's records, retrying the ones the local queue refused."""

    def __init__(
        self,
        producer: DeliveryProducer,
        topic: str,
        source: str,
        key: RecordKey,
        connector: str,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.source = source
        self.key = key
        self.connector = connector
        self.headers = [("hosepipe.via", connector.encode())]

    def encode(self, records: Sequence[dict[str, Any]]) -> list[RawRecord]:
        return encode_records(records, self.key)

    async def emit(self, records: Sequence[dict[str, Any]]) -> None:
        """Return once every record is acknowledged; raise :class:`DeliveryError` otherwise."""
        await self.emit_raw(self.encode(records))

    async def emit_raw(self, records: list[RawRecord]) -> None:
        pending = records
        started = time.perf_counter()
        while pending:
            results = await self.producer.send(self.topic, pending, self.headers)
            retry: list[RawRecord] = []
            delivered: list[RawRecord] = []
            for record, result in zip(pending, results, strict=True):
                if isinstance(result, Delivered):
                    delivered.append(record)
                elif isinstance(result, Throttled):
                    retry.append(record)
                else:
                    raise DeliveryError(
                        f"source {self.source}: Kafka refused a record for {self.topic}: {result}"
                    )
            RECORDS.labels(self.source, self.connector).inc(len(delivered))
            BYTES.labels(self.source, self.connector).inc(sum(len(r.value) for r in delivered))
            pending = retry
            if pending:
                await asyncio.sleep(0.05)  # the local queue is full: let it drain
        PRODUCE_SECONDS.labels(self.connector).observe(time.perf_counter() - started)


def encode_records(records: Sequence[dict[str, Any]], key: RecordKey) -> list[RawRecord]:
    """Pulled records as raw records: JSON, keyed from that JSON (the text the worker
    reads), so a SQL value in an id field (UUID, Decimal, datetime) keys the record by the
    very event id the worker computes."""
    values = [orjson.dumps(r, default=_jsonable) for r in records]
    return [RawRecord(value, key_of_bytes(value, key)) for value in values]


def _jsonable(value: Any) -> Any:
    """JSON for values SQL drivers return (Decimal, datetime, date, UUID, bytes)."""
    import base64
    import datetime
    import decimal
    import uuid

    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
