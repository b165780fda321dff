"""Durable cursors of pull connectors and bulk loads, kept in a compacted Kafka topic.

Like Kafka Connect's source offsets: each cursor is a record keyed by ``<kind>/<source>[/<item>]``
with a JSON value; the newest value per key wins (compaction keeps only it). A poller writes
a cursor only after every record it covers was acknowledged, so a restart resumes with no
loss; the crash window between the two can only repeat records, which the stream stage
removes by event_id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from connectors.delivery import Delivered, DeliveryProducer
from connectors.records import RawRecord
from hosepipe import kafka
from hosepipe.settings import Settings

log = logging.getLogger(__name__)


class CursorError(Exception):
    """The cursor topic cannot be created, read or written; the message says which."""


def ensure_cursor_topic(settings: Settings, topic: str, replication_factor: int = 1) -> None:
    """Create the single-partition compacted cursor topic unless it exists."""
    config = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
    try:
        kafka.ensure_single_partition_topic(settings, topic, config, replication_factor)
    except KafkaException as exc:
        raise CursorError(f"creating cursor topic {topic!r}: {exc.args[0]}") from exc


def read_cursors(settings: Settings, topic: str, timeout: float = 30.0) -> dict[str, Any]:
    """Every live cursor in ``topic`` (latest value per key; an empty value deletes).

    Reads to the end signalled by partition EOF, which uses the fetch response's high-water
    mark (reliable on every broker, unlike ListOffsets on some).
    """
    consumer: Consumer = kafka.make_consumer(
        settings,
        f"hosepipe-cursor-reader-{time.time_ns()}",
        **{"enable.partition.eof": True},
    )
    cursors: dict[str, Any] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=15)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise CursorError(
                f"cursor topic {topic!r} is not readable: {described and described.error}"
            )
        partitions = list(described.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise CursorError(f"reading cursor topic {topic!r} did not finish in {timeout} s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise CursorError(f"reading cursor topic {topic!r}: {msg.error()}")
            at_end.discard(msg.partition())
            key = (msg.key() or b"").decode()
            value = msg.value()
            if value:
                cursors[key] = orjson.loads(value)
            else:
                cursors.pop(key, None)
    finally:
        consumer.close()
    return cursors


class CursorStore:
    """Cursors of one process: loaded once at start, each save awaited until durable."""

    def __init__(self, producer: DeliveryProducer, topic: str, cursors: dict[str, Any]) -> None:
        self._producer = producer
        self._topic = topic
        self._cursors = cursors

    @classmethod
    def open(cls, settings: Settings, producer: DeliveryProducer, topic: str) -> CursorStore:
        ensure_cursor_topic(settings, topic)
        return cls(producer, topic, read_cursors(settings, topic))

    def get(self, key: str) -> Any:
        return self._cursors.get(key)

    def with_prefix(self, prefix: str) -> dict[str, Any]:
        return {k: v for k, v in self._cursors.items() if k.startswith(prefix)}

    async def save(self, key: str, value: Any) -> None:
        """Write ``value`` for ``key`` and wait for the broker's acknowledgement."""
        (result,) = await self._producer.send(
            self._topic, [RawRecord(orjson.dumps(value), key.encode())]
        )
        if not isinstance(result, Delivered):
            raise CursorError(f"saving cursor {key!r} to {self._topic!r}: {result}")
        self._cursors[key] = value
