"""What ``hosepipe stats`` shows: the worker group's totals and consumer lag."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hosepipe.config import PipelineConfig
    from hosepipe.settings import Settings
    from streams.core import SourceCounts


def read_totals(settings: Settings, group: str) -> dict[str, SourceCounts]:
    """Per-source totals of every worker instance of ``group`` that ever ran, from its
    stats topic read to the end ({} when the topic does not exist yet)."""
    from streams.dlq import TopicMissingError, read_topic
    from streams.metrics import merge_snapshots, stats_topic

    try:
        snapshots = [entry.value or b"" for entry in read_topic(settings, stats_topic(group))]
    except TopicMissingError:  # no worker of the group has run yet
        return {}
    return merge_snapshots(snapshots)


log = logging.getLogger(__name__)


def ensure_stats_topic(settings: Settings, group: str, replication: int) -> None:
    """Create ``group``'s stats topic compacted, or make an existing one compacted.

    A stats topic created before 2026-12-05 kept every snapshot (``retention.ms=-1``);
    ``cleanup.policy=compact`` lets Kafka keep about one per worker instance. A broker that
    refuses the change (no ``AlterConfigs`` right) only gets a warning: the counts are right
    either way, the topic just grows.
    """
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    from hosepipe.kafka import ensure_single_partition_topic, make_admin
    from streams.metrics import STATS_TOPIC_CONFIG, stats_topic

    topic = stats_topic(group)
    if ensure_single_partition_topic(settings, topic, STATS_TOPIC_CONFIG, replication):
        return
    admin = make_admin(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        (future,) = admin.describe_configs([resource]).values()
        entry = future.result(timeout=15).get("cleanup.policy")
        if entry is not None and entry.value == "compact":
            return
        compact = ConfigResource(
            ConfigResource.Type.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(
                    "cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET
                )
            ],
        )
        (future,) = admin.incremental_alter_configs([compact]).values()
        future.result(timeout=15)
        log.info("stats topic %s is compacted from now on", topic, extra={"topic": topic})
    except Exception as exc:
        log.warning(
            "stats topic %s keeps its cleanup policy (%s); it grows until it is compacted "
            "(kafka-configs --alter --add-config cleanup.policy=compact)",
            topic,
            exc,
            extra={"topic": topic},
        )


def consumer_lag(settings: Settings, pipeline: PipelineConfig) -> dict[str, int | None]:
    """Raw topic → messages not yet committed by ``streams.consumer_group`` (None if unknown).

    On Tansu the high-water mark from ListOffsets can be low (LOCAL_SERVICES.md); the figure
    is then a lower bound.
    """
    from confluent_kafka import Consumer, TopicPartition

    from hosepipe.kafka import consumer_config

    group = pipeline.streams.consumer_group
    client = Consumer(consumer_config(settings, group))
    result: dict[str, int | None] = {}
    try:
        for source in pipeline.sources:
            topic = pipeline.raw_topic(source)
            metadata = client.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None:
                result[topic] = None
                continue
            partitions = [TopicPartition(topic, p) for p in metadata.partitions]
            committed = client.committed(partitions, timeout=10)
            total = 0
            for tp in committed:
                low, high = client.get_watermark_offsets(tp, timeout=10)
                position = tp.offset if tp.offset >= 0 else low
                total += max(high - position, 0)
            result[topic] = total
    finally:
        client.close()
    return result
