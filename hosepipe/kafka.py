"""confluent-kafka producer, consumer and admin clients built from :class:`Settings`.

Defaults are chosen for hosepipe's guarantees and for both Apache Kafka and Tansu (the
embedded broker):

- producer: idempotent, ``acks=all`` (nothing acknowledged is lost), lz4 compression
  (throughput; see docs/schemas.md for the codec measurements on Tansu) and
  ``linger.ms=100``: on the embedded broker every produce request becomes S3 writes (one
  object per partition batch), and a producer trickling events with ``linger.ms=5`` kept
  SeaweedFS busy for 62 % of a core at 2,000 events/s against 26 % with 100 ms (see
  docs/benchmarks.md, "Broker on S3"). Paths that wait on each delivery (HTTP ingest) or
  flush explicitly (the stream worker) set their own;
- consumer: ``enable.auto.commit=false`` (components commit after their output is durable),
  ``auto.offset.reset=earliest``, ``session.timeout.ms=6000`` and
  ``heartbeat.interval.ms=1000`` (Tansu lets a member join only after about half the session
  timeout; small values are also fine on Apache Kafka).

Precedence, lowest first: these defaults, ``settings.kafka_options`` (SASL/SSL etc., passed to
every client), then the call's ``overrides``. Overrides use librdkafka names; since dots are
not valid in keyword names, pass them as ``**{"linger.ms": 20}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    from hosepipe.settings import Settings

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 100,
    "compression.type": "lz4",
}
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
