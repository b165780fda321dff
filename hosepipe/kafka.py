"""confluent-kafka producer, consumer and admin clients built from :class:`Settings`.

Defaults are chosen for hosepipe's guarantees and for both Apache Kafka and Tansu (the
embedded broker):

- producer: idempotent, ``acks=all`` (nothing acknowledged is lost), lz4 compression
  (throughput; see docs/schemas.md for the codec measurements on Tansu) and
  ``linger.ms=100``: on the embedded broker every produce request becomes S3 writes (one
  object per partition batch), and a producer trickling events with ``linger.ms=5`` kept
  SeaweedFS busy for 62 % of a core at 2,000 events/s against 26 % with 100 ms (see
  docs/benchmarks.md, "Broker on S3"). Paths that wait on each delivery (HTTP ingest) set
  their own. For the same reason the stream worker's ``batch.size`` grows with the topics'
  ``max.message.bytes`` (:func:`batch_bytes_for`) and it lingers 50 ms: with librdkafka's
  1,000,000-byte default and 5 ms each worker batch left as about three S3 objects per
  partition (the linger split it first);
- consumer: ``enable.auto.commit=false`` (components commit after their output is durable),
  ``auto.offset.reset=earliest``, ``session.timeout.ms=6000`` and
  ``heartbeat.interval.ms=1000`` (Tansu lets a member join only after about half the session
  timeout; small values are also fine on Apache Kafka).

Precedence, lowest first: these defaults, ``settings.kafka_options`` (SASL/SSL etc., passed to
every client), then the call's ``overrides``. Overrides use librdkafka names; since dots are
not valid in keyword names, pass them as ``**{"linger.ms": 20}``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    from hosepipe.settings import Settings

log = logging.getLogger(__name__)

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 100,
    "compression.type": "lz4",
    # The Java client's partitioner (murmur2 of the key): a raw record keyed by event id lands
    # where a Java producer (or any client set to murmur2) puts the same key, so the copies
    # of an event share the raw partition whose dedupe state knows it. librdkafka's own
    # default (CRC32) would scatter them.
    "partitioner": "murmur2_random",
}
# librdkafka's own ``batch.size``: under the 1,048,588-byte topic limit of a Kafka broker's
# defaults whatever the compression.
LIBRDKAFKA_BATCH_BYTES = 1_000_000
# The largest ``batch.size`` hosepipe asks for: a message set per partition of a worker batch
# of 10,000 typical events (~3 MB before lz4).
MAX_BATCH_BYTES = 8 * 1024 * 1024
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
}


def _base(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The librdkafka configuration :func:`make_producer` uses."""
    return {**_base(settings), **PRODUCER_DEFAULTS, **settings.kafka_options, **overrides}


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """The librdkafka configuration :func:`make_consumer` uses."""
    return {
        **_base(settings),
        "group.id": group_id,
        **CONSUMER_DEFAULTS,
        **settings.kafka_options,
        **overrides,
    }


def admin_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The librdkafka configuration :func:`make_admin` uses."""
    return {**_base(settings), **settings.kafka_options, **overrides}


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent ``acks=all`` producer (call ``flush()`` before exiting)."""
    from confluent_kafka import Producer

    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A consumer in ``group_id`` with manual commits (``close()`` it to leave the group)."""
    from confluent_kafka import Consumer

    return Consumer(consumer_config(settings, group_id, **overrides))


def make_admin(settings: Settings, **overrides: Any) -> AdminClient:
    """An admin client (topics, configs, consumer-group offsets)."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(admin_config(settings, **overrides))


def fitting_bytes(limit: int) -> int:
    """The most bytes before compression that a ``max.message.bytes`` of ``limit`` accepts:
    1/32 below it leaves room for lz4's worst case on incompressible data (+0.4 %) and the
    batch framing."""
    return max(1, limit - limit // 32)


def batch_bytes_for(topic_limits: Iterable[int | None]) -> int:
    """The producer ``batch.size`` whose batches every one of ``topic_limits`` accepts (pure).

    ``topic_limits`` are the topics' ``max.message.bytes`` (``None``: not known). A broker
    refuses a batch above that limit, measured after compression, while ``batch.size`` counts
    bytes before it (:func:`fitting_bytes`). Capped at :data:`MAX_BATCH_BYTES`, and at
    librdkafka's default when a limit is not known.
    """
    limits = list(topic_limits)
    known = [fitting_bytes(limit) for limit in limits if limit is not None]
    cap = MAX_BATCH_BYTES if known and len(known) == len(limits) else LIBRDKAFKA_BATCH_BYTES
    return min([cap, *known])


def message_bytes_for(topic_limits: Iterable[int | None], wanted: int) -> int:
    """``wanted`` as a per-message limit, lowered to what every known limit accepts (pure):
    a message the broker would refuse is better refused by the producer, where the worker
    dead-letters it, than by the broker, which would fail the whole batch every retry."""
    known = [fitting_bytes(limit) for limit in topic_limits if limit is not None]
    return min([wanted, *known])


def topic_max_message_bytes(
    admin: AdminClient, topics: Iterable[str], timeout: float = 15.0
) -> dict[str, int | None]:
    """Each topic's ``max.message.bytes`` as the broker reports it.

    ``None`` where the broker reports none (Tansu returns only the configs given at
    creation) or cannot be asked: callers then keep librdkafka's defaults.
    """
    from confluent_kafka.admin import ConfigResource

    limits: dict[str, int | None] = {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics]
    for resource, future in admin.describe_configs(resources).items():
        try:
            entry = future.result(timeout=timeout).get("max.message.bytes")
            limits[resource.name] = int(entry.value) if entry and entry.value else None
        except Exception as exc:  # a broker without DescribeConfigs: the safe default
            log.warning(
                "cannot read max.message.bytes of topic %s: %s",
                resource.name,
                exc,
                extra={"topic": resource.name},
            )
            limits[resource.name] = None
    return limits


def ensure_single_partition_topic(
    settings: Settings, topic: str, config: dict[str, str], replication_factor: int = 1
) -> bool:
    """Create the one-partition ``topic`` with ``config`` unless it exists; True if created.

    For hosepipe's own bookkeeping topics (connector cursors, the lake's file log), which
    their writers create on first use. Raises ``KafkaException`` with the broker's reason.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    admin = make_admin(settings)
    if topic in admin.list_topics(timeout=15).topics:
        return False
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=replication_factor, config=config)],
        operation_timeout=30,
    )
    try:
        futures[topic].result()
    except KafkaException as exc:
        error = exc.args[0]
        if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False  # created concurrently by another writer
        raise
    return True
