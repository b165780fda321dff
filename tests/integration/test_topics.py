"""`ensure_topics` against the real broker: creates what is missing, safe to re-run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hosepipe.config import parse_pipeline
from hosepipe.kafka import make_admin
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
