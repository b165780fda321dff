"""The worker's stats topic is compacted: created so, or turned so when it was created
before that (``retention.ms=-1``, every snapshot kept for ever)."""

from __future__ import annotations

import uuid

import pytest

from hosepipe.settings import Settings
from streams.metrics import stats_topic
from streams.stats import ensure_stats_topic

pytestmark = pytest.mark.integration


def settings(bootstrap: str) -> Settings:
    return Settings(_env_file=None, kafka_bootstrap=bootstrap)  # type: ignore[call-arg]


def topic_configs(admin: object, topic: str) -> dict[str, str]:
    from confluent_kafka.admin import ConfigResource

    (future,) = admin.describe_configs(  # type: ignore[attr-defined]
        [ConfigResource(ConfigResource.Type.TOPIC, topic)]
    ).values()
    return {name: entry.value for name, entry in future.result(timeout=15).items()}


def test_a_missing_stats_topic_is_created_compacted(kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    group = f"g{uuid.uuid4().hex[:8]}"
    ensure_stats_topic(settings(kafka_bootstrap), group, 1)
    assert topic_configs(admin, stats_topic(group))["cleanup.policy"] == "compact"


def test_an_old_stats_topic_is_turned_compacted(kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    group = f"g{uuid.uuid4().hex[:8]}"
    topic = stats_topic(group)
    old = NewTopic(topic, num_partitions=1, replication_factor=1, config={"retention.ms": "-1"})
    for future in admin.create_topics([old]).values():
        future.result(15)
    assert topic_configs(admin, topic).get("cleanup.policy") != "compact"

    ensure_stats_topic(settings(kafka_bootstrap), group, 1)
    assert topic_configs(admin, topic)["cleanup.policy"] == "compact"
    ensure_stats_topic(settings(kafka_bootstrap), group, 1)  # already: no change
    assert topic_configs(admin, topic)["cleanup.policy"] == "compact"
