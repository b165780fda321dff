"""Topic plan and Kafka client configs (pure; the broker side is in tests/integration)."""

from __future__ import annotations

import pytest

from hosepipe.config import parse_pipeline
from hosepipe.kafka import (
    LIBRDKAFKA_BATCH_BYTES,
    MAX_BATCH_BYTES,
    batch_bytes_for,
    consumer_config,
    message_bytes_for,
    producer_config,
)
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
    assert plan.configs == {
        "retention.ms": "3600000",
        "retention.bytes": "-1",
        "max.message.bytes": "8388608",
    }


def test_plan_configs_override_the_message_limit() -> None:
    plan = topic_names(
        parse_pipeline(PIPELINE.replace('"3600000"', '"1", "max.message.bytes": "2000000"'))
    )
    assert plan.configs["max.message.bytes"] == "2000000"


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ([8_388_608, 8_388_608], 8_126_464),  # hosepipe's topics: 1/32 below the limit
        ([1_048_588], 1_015_820),  # a Kafka broker's default limit
        ([8_388_608, 1_048_588], 1_015_820),  # the smallest limit counts
        ([100_000_000], MAX_BATCH_BYTES),  # capped
        ([8_388_608, None], LIBRDKAFKA_BATCH_BYTES),  # one limit unknown: the safe default
        ([500_000, None], 484_375),  # ... unless a known limit is smaller still
        ([], LIBRDKAFKA_BATCH_BYTES),
        ([10], 10),
    ],
)
def test_batch_bytes_fit_every_topic_limit(limits: list[int | None], expected: int) -> None:
    assert batch_bytes_for(limits) == expected
    known = [limit for limit in limits if limit is not None]
    if known and len(known) == len(limits) and min(known) >= 4096:
        # lz4's worst case (+0.4 % and a frame header) on incompressible data still fits.
        assert batch_bytes_for(limits) * 1.004 + 64 <= min(known)


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


def test_the_per_message_limit_fits_the_topics_too() -> None:
    wanted = 3_096_576  # twice the default max_record_bytes plus 1 MiB
    assert message_bytes_for([8_388_608, 8_388_608], wanted) == wanted
    assert message_bytes_for([1_048_588, 8_388_608], wanted) == 1_015_820  # Kafka's default
    assert message_bytes_for([None, None], wanted) == wanted  # unknown: as configured
