"""hosepipe's producers place a keyed record where a Java producer would (murmur2), so the
copies of an event from any client keyed by its id meet in one raw partition."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from hosepipe.kafka import make_admin, make_producer
from hosepipe.settings import Settings

pytestmark = pytest.mark.integration

PARTITIONS = 7


def java_murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (the Java client's default partitioner), as a signed int."""
    mask, m = 0xFFFFFFFF, 0x5BD1E995
    h = (0x9747B28C ^ len(data)) & mask
    for i in range(len(data) // 4):
        k = (int.from_bytes(data[4 * i : 4 * i + 4], "little") * m) & mask
        k = ((k ^ (k >> 24)) * m) & mask
        h = ((h * m) & mask) ^ k
    tail, rest = len(data) & ~3, len(data) % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h = ((h ^ data[tail]) * m) & mask
    h = ((h ^ (h >> 13)) * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    return (java_murmur2(key) & 0x7FFFFFFF) % partitions


def test_the_reference_implementation_matches_kafkas_test_vectors() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {key: java_murmur2(key) for key in vectors} == vectors


def test_keyed_records_land_where_a_java_producer_puts_them(
    settings: Settings, unique_name: Callable[..., str]
) -> None:
    topic = unique_name("partitioner")
    admin = make_admin(settings)
    for future in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        future.result(30)
    keys = [f"event-{n}".encode() for n in range(200)] + [b"21", b"foobar", b"abc"]
    producer = make_producer(settings)
    for key in keys:
        producer.produce(topic, b"{}", key)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{topic}-reader"}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    placed: dict[bytes, int] = {}
    deadline = time.monotonic() + 30
    try:
        while len(placed) < len(keys) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    placed[message.key()] = message.partition()
    finally:
        consumer.close()
    assert placed == {key: java_partition(key, PARTITIONS) for key in keys}
