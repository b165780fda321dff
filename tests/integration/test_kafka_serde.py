"""Canonical events through the real broker in both wire formats, decoded back equal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from hosepipe.avro import make_decoder, make_encoder, subject_for
from hosepipe.kafka import make_admin, make_consumer, make_producer
from hosepipe.settings import Settings

pytestmark = pytest.mark.integration

COUNT = 500


def events(count: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"evt-{i}",
            "source": "clickstream",
            "event_type": "page_view" if i % 3 else "purchase",
            "occurred_at": 1_763_790_000_000_000 + i,
            "ingested_at": 1_763_790_100_000_000 + i,
            "subject": None if i % 5 == 0 else f"user-{i % 17}",
            "payload": f'{{"n": {i}, "url": "/p/{i}"}}',
            "attributes": {"i": str(i)} if i % 2 else {},
        }
        for i in range(count)
    ]


def create_topic(settings: Settings, topic: str) -> None:
    from confluent_kafka.admin import NewTopic

    admin = make_admin(settings)  # keep a reference until the futures resolve
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=2,
                replication_factor=1,
                config={"retention.ms": "3600000", "retention.bytes": "-1"},
            )
        ]
    )
    futures[topic].result(timeout=30)


def produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = make_producer(settings)
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for index, value in enumerate(values):
        producer.produce(topic, value=value, key=str(index).encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failures == []


def consume(settings: Settings, topic: str, count: int, group: str) -> list[bytes]:
    consumer = make_consumer(settings, group)
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=1.0):
                assert message.error() is None, message.error()
                values.append(message.value())
    finally:
        consumer.close()
    return values


def round_trip(settings: Settings, topic: str, group: str) -> tuple[list[bytes], list[dict]]:
    create_topic(settings, topic)
    sent = events(COUNT)
    encoder = make_encoder(settings, topic)
    produce(settings, topic, encoder.encode_many(sent))
    values = consume(settings, topic, COUNT, group)
    assert len(values) == COUNT
    decoded = make_decoder(settings).decode_many(values)
    assert sorted(decoded, key=lambda e: e["event_id"]) == sorted(sent, key=lambda e: e["event_id"])
    return values, decoded


def test_single_object_encoding_through_the_broker(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    settings = Settings(_env_file=None, kafka_bootstrap=kafka_bootstrap)  # type: ignore[call-arg]
    values, _ = round_trip(settings, unique_name("serde_so"), unique_name("g"))
    assert all(v[:2] == b"\xc3\x01" for v in values)


def test_confluent_wire_format_through_the_broker(
    kafka_bootstrap: str, schema_registry_url: str, unique_name: Callable[..., str]
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, kafka_bootstrap=kafka_bootstrap, schema_registry_url=schema_registry_url
    )
    topic = unique_name("serde_cf")
    values, _ = round_trip(settings, topic, unique_name("g"))
    assert all(v[0] == 0 for v in values)
    registered = httpx.get(f"{schema_registry_url}/subjects/{subject_for(topic)}/versions/latest")
    assert registered.status_code == 200
    schema_id = registered.json()["id"]
    assert {int.from_bytes(v[1:5], "big") for v in values} == {schema_id}


def test_a_registry_reader_also_reads_single_object_data(
    kafka_bootstrap: str, schema_registry_url: str, unique_name: Callable[..., str]
) -> None:
    """Switching a deployment to a registry keeps the older single-object data readable."""
    plain = Settings(_env_file=None, kafka_bootstrap=kafka_bootstrap)  # type: ignore[call-arg]
    with_registry = Settings(  # type: ignore[call-arg]
        _env_file=None, kafka_bootstrap=kafka_bootstrap, schema_registry_url=schema_registry_url
    )
    topic = unique_name("serde_mixed")
    create_topic(plain, topic)
    sent = events(20)
    produce(plain, topic, make_encoder(plain, topic).encode_many(sent[:10]))
    produce(with_registry, topic, make_encoder(with_registry, topic).encode_many(sent[10:]))
    values = consume(plain, topic, 20, unique_name("g"))
    decoded = make_decoder(with_registry).decode_many(values)
    assert sorted(decoded, key=lambda e: e["event_id"]) == sorted(sent, key=lambda e: e["event_id"])
