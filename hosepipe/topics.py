"""The pipeline's Kafka topics: which exist (a pure plan) and creating the missing ones.

``raw.<source>`` per source, the canonical topic and the DLQ, all with the partitions,
replication factor and configs of ``topics:`` in ``hosepipe.yaml``. Creating is safe to
repeat: topics that exist are left alone (their settings are not changed) and reported.

``retention.ms`` and ``retention.bytes`` are always set explicitly at creation (Kafka's
defaults, 7 days and unbounded, unless configured): Tansu's DescribeConfigs returns only the
configs given at creation and some clients (quixstreams) need these two.
``max.message.bytes`` is 8 MiB (Kafka's default is 1 MiB): the stream worker sizes its
producer batches from it (:func:`hosepipe.kafka.batch_bytes_for`), and on the embedded broker
every batch is an S3 object, so bigger batches mean fewer S3 requests; a canonical event made
from a record at the default ``max_record_bytes`` also fits without tuning the broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from hosepipe.config import PipelineConfig
    from hosepipe.settings import Settings

log = logging.getLogger(__name__)

TOPIC_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
EXPLICIT_CONFIG_DEFAULTS = {
    "retention.ms": "604800000",
    "retention.bytes": "-1",
    "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES),
}


class TopicError(Exception):
    """A topic could not be created; the message names the topic and the broker's reason."""


@dataclass(frozen=True)
class TopicPlan:
    """Every topic the pipeline needs and how to create it."""

    raw: dict[str, str]  # source name -> raw topic
    canonical: str
    dlq: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        """All topic names: raw topics in source order, then canonical, then DLQ."""
        return [*self.raw.values(), self.canonical, self.dlq]


@dataclass(frozen=True)
class EnsureResult:
    """What :func:`create_topics` did."""

    created: list[str]
    existing: list[str]


def topic_names(pipeline: PipelineConfig) -> TopicPlan:
    """The topic plan of a pipeline (pure)."""
    topics = pipeline.topics
    plan = TopicPlan(
        raw={source: topics.raw_topic(source) for source in pipeline.sources},
        canonical=topics.canonical,
        dlq=topics.dlq,
        partitions=topics.partitions,
        replication_factor=topics.replication_factor,
        configs={**EXPLICIT_CONFIG_DEFAULTS, **topics.configs},
    )
    names = plan.names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TopicError(f"topics: names used twice: {', '.join(duplicates)}")
    return plan


def create_topics(admin: AdminClient, plan: TopicPlan, timeout: float = 30.0) -> EnsureResult:
    """Create the plan's missing topics; existing ones are reported, not touched."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    present = set(admin.list_topics(timeout=timeout).topics)
    existing = [name for name in plan.names() if name in present]
    missing = [name for name in plan.names() if name not in present]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=plan.partitions,
                    replication_factor=plan.replication_factor,
                    config=dict(plan.configs),
                )
                for name in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                error = exc.args[0]
                if (
                    isinstance(error, KafkaError)
                    and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
                ):
                    existing.append(name)  # created concurrently by someone else
                    continue
                raise TopicError(f"creating topic {name!r}: {error}") from exc
    order = {name: index for index, name in enumerate(plan.names())}
    return EnsureResult(
        created=sorted(created, key=order.__getitem__),
        existing=sorted(existing, key=order.__getitem__),
    )


def ensure_topics(settings: Settings, pipeline: PipelineConfig) -> list[str]:
    """Create the pipeline's missing topics on ``settings.kafka_bootstrap``; return the created."""
    from hosepipe.kafka import make_admin

    plan = topic_names(pipeline)
    result = create_topics(make_admin(settings), plan)
    for name in result.created:
        log.info("created topic %s", name, extra={"topic": name, "partitions": plan.partitions})
    if result.existing:
        log.info(
            "topics already exist, left unchanged: %s",
            ", ".join(result.existing),
            extra={"topics": result.existing},
        )
    return result.created
