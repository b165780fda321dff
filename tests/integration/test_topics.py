"""`ensure_topics` against the real broker: creates what is missing, safe to re-run."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from hosepipe.config import parse_pipeline
from hosepipe.kafka import (
    LIBRDKAFKA_BATCH_BYTES,
    batch_bytes_for,
    make_admin,
    topic_max_message_bytes,
)
from hosepipe.settings import Settings
from hosepipe.topics import ensure_topics, topic_names

pytestmark = pytest.mark.integration


def test_ensure_topics_creates_then_leaves_alone(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    from confluent_kafka.admin import ConfigResource

    prefix = unique_name("p")
    pipeline = parse_pipeline(
        f"""
topics:
  raw_prefix: "{prefix}.raw."
  canonical: "{prefix}.canonical"
  dlq: "{prefix}.dlq"
  partitions: 3
  configs: {{"retention.ms": "7200000"}}
sources:
  web:
    kind: push
    mapping: {{event_id: $.id, occurred_at: $.ts, event_type: click}}
  orders:
    kind: push
    mapping: {{event_id: $.id, occurred_at: $.ts, event_type: order}}
"""
    )
    settings = Settings(_env_file=None, kafka_bootstrap=kafka_bootstrap)  # type: ignore[call-arg]
    expected = topic_names(pipeline).names()

    assert ensure_topics(settings, pipeline) == expected
    assert ensure_topics(settings, pipeline) == []  # second run: nothing new, no error

    admin = make_admin(settings)
    metadata = admin.list_topics(timeout=10).topics
    for name in expected:
        assert len(metadata[name].partitions) == 3, name
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"{prefix}.canonical")
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "7200000"
    assert configs["retention.bytes"].value == "-1"
    # the limit the stream worker sizes its batches by, as the broker reports it back
    assert topic_max_message_bytes(admin, expected) == dict.fromkeys(expected, 8 * 1024 * 1024)


def test_a_topic_created_elsewhere_keeps_the_default_batch_size(
    kafka_bootstrap: str, unique_name: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    from confluent_kafka.admin import NewTopic

    topic = unique_name("plain")
    admin = make_admin(Settings(_env_file=None, kafka_bootstrap=kafka_bootstrap))  # type: ignore[call-arg]
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    with caplog.at_level(logging.WARNING, logger="hosepipe.kafka"):
        limits = topic_max_message_bytes(admin, [topic])
    assert not caplog.records  # the broker answered; None is its answer, not an error
    # Tansu reports no limit it was not given; Apache Kafka reports its default (1,048,588)
    assert limits[topic] in (None, 1_048_588)
    assert batch_bytes_for(limits.values()) <= LIBRDKAFKA_BATCH_BYTES + 16 * 1024
