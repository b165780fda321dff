"""The confluent-kafka engine: a consumer-group member running the batch core.

Each batch goes through these steps, in the order that makes "never lose, at worst a
duplicate" hold (ARCHITECTURE.md, Guarantees):

1. ``consume(batch_size)`` from the raw topics of every configured source;
2. :meth:`StreamCore.process_batch` (decode, transform, map, validate, dedupe check);
3. produce canonical events (key = event_id, Avro) and dead letters (original key, value and
   headers plus reason headers), then ``flush()``: every delivery must succeed, otherwise
   the worker stops without committing (the batch is redone after restart);
4. remember the delivered ids: RocksDB store of the input partition + one changelog message
   per input partition;
5. commit the input offsets.

Batches are pipelined one deep: while batch N's messages travel to the broker (3), the
worker already consumes and processes batch N+1 (1-2); then it awaits N's deliveries and
does 4-5 for N, and only then produces N+1. Ids produced by N but not yet remembered count
as seen for N+1 (an in-memory set), so dedupe is as exact as without the overlap. Before
partitions are revoked, and at a clean stop, the in-flight batch is completed first.

A crash between 3 and 4 lets the batch's events through again on restart (duplicates, never
loss); a crash between 4 and 5 re-reads the batch and drops it as duplicates.

State is owned per input partition: opened and brought up to date from the changelog when
the partition is assigned, closed when it is revoked or lost. Dedupe is exact as long as all
records with one event_id land in one raw partition (our ingest and pollers key raw records
by id); see docs/streams.md.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hosepipe.config import PipelineConfig
from hosepipe.runtime import settle_garbage_collector
from hosepipe.settings import Settings
from streams.canonical_avro import fast_writer_for
from streams.core import (
    BatchResult,
    CanonicalOutput,
    EngineBase,
    RawRecord,
    StreamCore,
    encode_one_by_one,
    fit_dead_letter,
    now_micros,
)
from streams.dedupe import (
    PartitionStore,
    changelog_topic,
    decode_changelog,
    encode_changelog,
)
from streams.metrics import StageCounters, stats_topic
from streams.output import (
    dead_letter_message,
    dead_letter_too_large,
    max_message_bytes,
    set_aside_too_large,
    size_output,
)
from streams.stats import ensure_stats_topic

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message, Producer, TopicPartition

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 60.0
STATS_EVERY_S = 2.0
FLUSH_TIMEOUT_S = 60.0
INFLIGHT_POLL_TIMEOUT_S = 0.02


CHANGELOG_MESSAGE_BYTES = 512 * 1024


def _chunks(ids: list[str], max_bytes: int) -> list[list[str]]:
    """``ids`` split so that each changelog message stays far below any message size limit."""
    if sum(map(len, ids)) + 8 * len(ids) <= max_bytes:  # the usual case: one message
        return [ids]
    chunks: list[list[str]] = [[]]
    size = 0
    for event_id in ids:
        cost = len(event_id) + 8  # quotes, comma, and room for JSON escapes of short ids
        if size + cost > max_bytes and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(event_id)
        size += cost
    return chunks


class DeliveryFailed(RuntimeError):
    """A produced message was not acknowledged; the batch is not committed."""


@dataclass
class InFlight:
    """A batch whose messages are produced and not yet confirmed, remembered or committed."""

    result: BatchResult
    records: list[RawRecord]
    now: int
    ids: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    """The delivered ids by input partition, in batch order (what :meth:`_remember` stores)."""


@dataclass
class RunnerOptions:
    """Knobs of one runner (defaults from the pipeline's ``streams`` section)."""

    batch_size: int
    group: str
    state_dir: Path
    poll_timeout_s: float = 0.5
    stats_every_s: float = STATS_EVERY_S
    consumer_overrides: dict[str, Any] = field(default_factory=dict)


def default_state_dir(settings: Settings, group: str) -> Path:
    return settings.data_dir / "streams" / group


class KafkaRunner(EngineBase[RunnerOptions]):
    """Runs the stream stage as a consumer-group member until :meth:`stop` is called."""

    def __init__(
        self,
        settings: Settings,
        pipeline: PipelineConfig,
        *,
        core: StreamCore | None = None,
        options: RunnerOptions | None = None,
        counters: StageCounters | None = None,
    ) -> None:
        super().__init__(
            settings,
            pipeline,
            core=core,
            options=options,
            counters=counters,
            make_options=RunnerOptions,
            state_root=default_state_dir,
        )
        self.stores: dict[tuple[str, int], PartitionStore] = {}
        self._stop = threading.Event()
        self._delivery_errors: list[str] = []
        self._changelog_offsets: dict[tuple[str, int], int] = {}
        self._last_expire = time.monotonic()
        self._last_stats = 0.0
        self._inflight: InFlight | None = None
        self._pending: dict[tuple[str, int], set[str]] = {}
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._state_producer: Producer | None = None
        self.max_message_bytes = max_message_bytes(pipeline)
        self.batch_bytes = 0  # the output producer's batch.size, read from the topics in run()
        self.ready = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())

    def run(self) -> None:
        """Consume, process, produce, remember, commit — until stopped."""
        from hosepipe.avro import make_encoder
        from hosepipe.kafka import make_consumer, make_producer

        settle_garbage_collector(100_000, 50, 100)  # batches of many short-lived dicts
        self._ensure_internal_topics()
        self.encoder = make_encoder(self.settings, self.pipeline.topics.canonical)
        self._write_events = fast_writer_for(self.encoder)
        size = size_output(self.settings, self.pipeline, self.max_message_bytes)
        self.batch_bytes, self.max_message_bytes = size.batch_bytes, size.max_message_bytes
        self._producer = make_producer(
            self.settings, on_delivery=self._on_delivery, **size.producer_options()
        )
        # Changelog and stats: few messages, full reports (changelog offsets come from them).
        self._state_producer = make_producer(
            self.settings,
            on_delivery=self._on_delivery,
            **{"linger.ms": 5, "message.max.bytes": self.max_message_bytes},
        )
        consumer = make_consumer(
            self.settings,
            self.options.group,
            **{"enable.partition.eof": False},
            **self.options.consumer_overrides,
        )
        self._consumer = consumer
        consumer.subscribe(
            self.core.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "worker started",
            extra={"engine": "kafka", "topics": self.core.topics, "worker": self.worker_id},
        )
        try:
            while not self._stop.is_set():
                # With a batch in flight, wait only briefly for more: when the input pauses,
                # the in-flight batch is completed (and committed) at once.
                timeout = (
                    INFLIGHT_POLL_TIMEOUT_S
                    if self._inflight is not None
                    else self.options.poll_timeout_s
                )
                messages = consumer.consume(self.options.batch_size, timeout)
                if messages:
                    self._handle(messages)
                else:
                    self._complete()
                self._housekeeping()
            self._complete()
        finally:
            # After a failure the in-flight batch is neither remembered nor committed: the
            # next run redoes it (duplicates at worst, never loss).
            self._inflight = None
            self._pending = {}
            self._publish_stats(force=True)
            try:
                consumer.close()
            finally:
                self._close_stores(list(self.stores))
                self._producer.flush(10)
                self._state_producer.flush(10)
            log.info("worker stopped", extra={"worker": self.worker_id})

    # ------------------------------------------------------------------ one batch

    def _handle(self, messages: Sequence[Message]) -> None:
        records: list[RawRecord] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise RuntimeError(f"consumer failed: {error}")
                log.warning("consumer error: %s", error)
                continue
            timestamp_type, timestamp = message.timestamp()
            records.append(
                RawRecord(
                    message.topic(),  # type: ignore[arg-type]
                    message.partition(),  # type: ignore[arg-type]
                    message.offset(),  # type: ignore[arg-type]
                    message.value(),
                    message.key(),
                    timestamp if timestamp_type else None,
                    message.headers(),  # type: ignore[arg-type]
                )
            )
        if not records:
            return
        now = now_micros()
        result = self.core.process_batch(records, lambda t, p, ids: self._seen(t, p, ids, now), now)
        self._complete()  # the previous batch: await delivery, remember, commit
        self._emit(result, now)
        ids_by_partition: dict[tuple[str, int], list[str]] = {}
        for output in result.outputs:
            record = output.record
            key = (record.topic, record.partition)
            ids = ids_by_partition.get(key)
            if ids is None:
                ids = ids_by_partition[key] = []
            ids.append(output.event["event_id"])
        self._pending = {key: set(ids) for key, ids in ids_by_partition.items()}
        self._inflight = InFlight(result, records, now, ids_by_partition)
        self._producer.poll(0)  # type: ignore[union-attr]

    def _complete(self, *, commit_sync: bool = False, lost: bool = False) -> None:
        """Finish the in-flight batch: await every delivery, remember its ids, commit."""
        batch = self._inflight
        if batch is None:
            return
        self._flush()
        self._remember(batch.ids, batch.now)
        self._inflight = None
        self._pending = {}
        if not lost:
            self._commit(batch.records, asynchronous=not commit_sync)
        self.counters.add(batch.result.counts)
        self._update_lag(batch.records)
        self._publish_stats()

    def _seen(self, topic: str, partition: int, ids: Sequence[str], now: int) -> list[bool]:
        store = self.stores.get((topic, partition))
        if store is None:  # assigned without a store: cannot happen after _on_assign
            raise RuntimeError(f"no dedupe state open for {topic}[{partition}]")
        answers = store.seen(ids, now)
        pending = self._pending.get((topic, partition))
        if pending:  # produced by the in-flight batch, not yet in the store
            return [
                seen or event_id in pending for seen, event_id in zip(answers, ids, strict=True)
            ]
        return answers

    def _emit(self, result: BatchResult, now: int) -> None:
        """Produce the batch's canonical events and dead letters (delivery awaited later)."""
        from confluent_kafka import KafkaError, KafkaException

        producer = self._producer
        assert producer is not None
        values: list[bytes]
        try:
            values = self._write_events([o.event for o in result.outputs])
        except ValueError:
            values = encode_one_by_one(result, self.encoder.encode, now)
        limit = self.max_message_bytes
        values = set_aside_too_large(result, values, limit, now)
        canonical = self.pipeline.topics.canonical
        produce = producer.produce
        refused: list[tuple[CanonicalOutput, int]] = []
        for output, value in zip(result.outputs, values, strict=True):
            key = output.event["event_id"].encode()
            while True:
                try:
                    produce(canonical, value, key)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.05)
                except KafkaException as exc:  # librdkafka counted more than we did
                    if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                        raise
                    refused.append((output, len(value)))
                    break
        if refused:
            dead_letter_too_large(result, refused, limit, now)
        dlq = self.pipeline.topics.dlq
        for letter in result.dead_letters:
            key = letter.record.key
            letter_value, headers = dead_letter_message(letter, limit)
            try:
                self._produce(produce, dlq, key, letter_value, headers)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                letter_value, headers = fit_dead_letter(
                    key, letter.record.value, letter.headers(), limit
                )
                self._produce(produce, dlq, key, letter_value, headers)

    def _produce(
        self,
        produce: Any,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        partition: int = -1,
    ) -> None:
        while True:
            try:
                produce(topic, value, key, partition=partition, headers=headers)
                return
            except BufferError:  # local queue full: let deliveries drain
                assert self._producer is not None and self._state_producer is not None
                self._producer.poll(0.05)
                self._state_producer.poll(0)

    def _flush(self) -> None:
        assert self._producer is not None and self._state_producer is not None
        for producer in (self._producer, self._state_producer):
            remaining = producer.flush(FLUSH_TIMEOUT_S)
            if remaining:
                raise DeliveryFailed(
                    f"{remaining} message(s) not delivered within {FLUSH_TIMEOUT_S} s"
                )
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise DeliveryFailed(f"{len(errors)} message(s) not delivered, first: {errors[0]}")

    def _on_delivery(self, error: Any, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(f"{message.topic()}: {error}")
            return
        topic = message.topic() or ""
        if topic.startswith(self._changelog_prefix):
            key = (topic, message.partition() or 0)
            offset = message.offset() or 0
            if offset > self._changelog_offsets.get(key, -1):
                self._changelog_offsets[key] = offset

    @property
    def _changelog_prefix(self) -> str:
        return changelog_topic(self.options.group, "")

    def _remember(self, by_partition: dict[tuple[str, int], list[str]], now: int) -> None:
        producer = self._state_producer
        assert producer is not None
        for (topic, partition), ids in by_partition.items():
            store = self.stores[(topic, partition)]
            changelog = changelog_topic(self.options.group, topic)
            known = self._changelog_offsets.get((changelog, partition))
            store.remember_ids(ids, now, known)
            for chunk in _chunks(ids, CHANGELOG_MESSAGE_BYTES):
                self._produce(
                    producer.produce,
                    changelog,
                    str(partition).encode(),
                    encode_changelog(chunk, now),
                    None,
                    partition,  # the changelog partition mirrors the input partition
                )
        # Changelog messages are delivered with the next batch's flush (or at shutdown): a
        # crash before that can only cost dedupe memory (a later duplicate), never an event.
        producer.poll(0)

    def _commit(self, records: Sequence[RawRecord], *, asynchronous: bool = True) -> None:
        """Commit the offsets after ``records``; asynchronous in the loop (a lost commit only
        re-reads a batch that the dedupe state then drops), synchronous before a revoke."""
        from confluent_kafka import TopicPartition

        last: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            if record.offset >= last.get(key, -1):
                last[key] = record.offset
        assert self._consumer is not None
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()],
            asynchronous=asynchronous,
        )

    def _update_lag(self, records: Sequence[RawRecord]) -> None:
        from confluent_kafka import TopicPartition

        assert self._consumer is not None
        last: dict[tuple[str, int], int] = {}
        for record in records:
            last[(record.topic, record.partition)] = record.offset
        for (topic, partition), offset in last.items():
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except Exception:
                continue
            if high is not None and high >= 0:
                self.counters.set_lag(topic, partition, max(high - offset - 1, 0))

    def _housekeeping(self) -> None:
        if time.monotonic() - self._last_expire >= EXPIRE_EVERY_S:
            self._last_expire = time.monotonic()
            now = now_micros()
            for store in self.stores.values():
                store.expire(now)
        self._publish_stats()

    def _publish_stats(self, force: bool = False) -> None:
        producer = self._state_producer
        if producer is None:
            return
        if not force and time.monotonic() - self._last_stats < self.options.stats_every_s:
            return
        self._last_stats = time.monotonic()
        snapshot = self.counters.snapshot_if_changed(self.worker_id)
        if snapshot is None:
            return
        self._produce(
            producer.produce,
            stats_topic(self.options.group),
            self.worker_id.encode(),
            snapshot,
            None,
        )
        producer.poll(0)

    # ------------------------------------------------------------------ partitions

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        keys = [(tp.topic, tp.partition) for tp in partitions]
        for topic, partition in keys:
            path = self.options.state_dir / topic / str(partition)
            self.stores[(topic, partition)] = PartitionStore(path, self.window_us)
        restored = self._restore(keys)
        log.info(
            "partitions assigned",
            extra={
                "partitions": [f"{t}[{p}]" for t, p in keys],
                "restored_ids": restored,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._complete(commit_sync=True)  # while the partitions are still ours
        if self._state_producer is not None:  # the new owner restores from the changelog
            self._state_producer.flush(FLUSH_TIMEOUT_S)
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._close_stores(keys)
        log.info("partitions revoked", extra={"partitions": [f"{t}[{p}]" for t, p in keys]})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost partitions can no longer be committed: their in-flight batch is confirmed and
        # remembered, then redone by the new owner (which drops it as duplicates).
        self._complete(lost=True)
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._close_stores(keys)
        log.info("partitions lost", extra={"partitions": [f"{t}[{p}]" for t, p in keys]})

    def _close_stores(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            store = self.stores.pop(key, None)
            if store is not None:
                store.close()

    def _restore(self, keys: list[tuple[str, int]]) -> int:
        """Replay each store's changelog partition from its recorded offset to the end."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        from hosepipe.kafka import consumer_config

        if not keys:
            return 0
        assignments = []
        pending: dict[tuple[str, int], tuple[str, int]] = {}
        for topic, partition in keys:
            changelog = changelog_topic(self.options.group, topic)
            start = self.stores[(topic, partition)].changelog_offset + 1
            assignments.append(TopicPartition(changelog, partition, start))
            pending[(changelog, partition)] = (topic, partition)
        config = consumer_config(
            self.settings,
            f"{self.options.group}.restore",
            **{"enable.partition.eof": True, "auto.offset.reset": "earliest"},
        )
        reader = Consumer(config)
        total = 0
        now = now_micros()
        try:
            reader.assign(assignments)
            deadline = time.monotonic() + 600
            while pending and time.monotonic() < deadline:
                batch: dict[tuple[str, int], list[tuple[list[str], int, int]]] = {}
                for message in reader.consume(10_000, 1.0):
                    key = (message.topic() or "", message.partition() or 0)
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.pop(key, None)
                            continue
                        raise RuntimeError(f"restoring {key[0]}[{key[1]}]: {error}")
                    try:
                        ids, first_seen = decode_changelog(message.value() or b"")
                    except ValueError:
                        continue
                    batch.setdefault(key, []).append((ids, first_seen, message.offset() or 0))
                for key, entries in batch.items():
                    total += self.stores[pending.get(key) or self._owner(key)].restore(entries, now)
            if pending:
                raise RuntimeError(f"changelog restore did not reach the end of {list(pending)}")
        finally:
            reader.close()
        return total

    def _owner(self, changelog_key: tuple[str, int]) -> tuple[str, int]:
        topic, partition = changelog_key
        prefix = self._changelog_prefix
        return (topic[len(prefix) :], partition)

    # ------------------------------------------------------------------ topics

    def _ensure_internal_topics(self) -> None:
        """Create changelog topics (same partitions as their raw topic) and the stats topic."""
        from confluent_kafka.admin import NewTopic

        from hosepipe.kafka import make_admin

        admin = make_admin(self.settings)
        metadata = admin.list_topics(timeout=30)
        window_ms = int(self.pipeline.streams.dedupe_window.total_seconds() * 1000)
        wanted: list[NewTopic] = []
        replication = self.pipeline.topics.replication_factor
        for raw in self.core.topics:
            info = metadata.topics.get(raw)
            if info is None or info.error is not None:
                raise RuntimeError(
                    f"raw topic {raw!r} does not exist; run `hosepipe topics create` first"
                )
            name = changelog_topic(self.options.group, raw)
            if name not in metadata.topics:
                wanted.append(
                    NewTopic(
                        name,
                        num_partitions=len(info.partitions),
                        replication_factor=replication,
                        config={
                            "cleanup.policy": "delete",
                            "retention.ms": str(2 * window_ms),
                            "retention.bytes": "-1",
                        },
                    )
                )
        ensure_stats_topic(self.settings, self.options.group, replication)
        if not wanted:
            return
        for name, future in admin.create_topics(wanted, operation_timeout=30).items():
            try:
                future.result()
            except Exception as exc:
                if "already exists" not in str(exc).lower() and "TOPIC_ALREADY_EXISTS" not in str(
                    exc
                ):
                    raise RuntimeError(f"creating topic {name!r}: {exc}") from exc
