"""Topic plan and Kafka client configs (pure; the broker side is in tests/integration)."""

from __future__ import annotations

import pytest

from hosepipe.config import parse_pipeline
from hosepipe.kafka import consumer_config, producer_config
from hosepipe.settings import Settings
from hosepipe.topics import TopicError, topic_names

PIPELINE = """
topics:
  raw_prefix: "in."
  canonical: canon
  partitions: 3
  configs: {"retention.ms": "3600000"}
sources:
  web:
    kind: push
    mapping: {event_id: $.id, occurred_at: $.ts, event_type: click}
  orders:
    kind: push
    mapping: {event_id: $.id, occurred_at: $.ts, event_type: order}
"""


def test_plan_has_raw_canonical_and_dlq_with_explicit_retention() -> None:
    plan = topic_names(parse_pipeline(PIPELINE))
    assert plan.names() == ["in.web", "in.orders", "canon", "events.dlq"]
    assert plan.raw == {"web": "in.web", "orders": "in.orders"}
    assert plan.partitions == 3 and plan.replication_factor == 1
    assert plan.configs == {"retention.ms": "3600000", "retention.bytes": "-1"}


def test_plan_rejects_colliding_names() -> None:
    clash = PIPELINE.replace("canonical: canon", "canonical: in.web")
    with pytest.raises(TopicError, match=r"in\.web"):
        topic_names(parse_pipeline(clash))


def test_client_config_precedence() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap="127.0.0.1:1",
        kafka_options={"security.protocol": "SASL_SSL", "linger.ms": "50"},
    )
    producer = producer_config(settings, **{"compression.type": "zstd"})
    assert producer["bootstrap.servers"] == "127.0.0.1:1"
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    assert producer["linger.ms"] == "50"  # settings.kafka_options beat defaults
    assert producer["compression.type"] == "zstd"  # overrides beat everything
    consumer = consumer_config(settings, "g1")
    assert consumer["group.id"] == "g1" and consumer["enable.auto.commit"] is False
    assert consumer["session.timeout.ms"] == 6000 and consumer["security.protocol"] == "SASL_SSL"
