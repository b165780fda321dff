"""The faust-streaming engine: one agent per source running the same pure batch core.

Per configured source, an agent reads ``raw.<source>`` with raw (bytes) serializers in
batches (``stream.take_events(batch_size, within=…)``) and, per batch, in the order that
makes "never lose, at worst a duplicate" hold (ARCHITECTURE.md, Guarantees):

1. :meth:`StreamCore.process_batch` (decode, transform, map, validate, dedupe check against
   the source's faust Table);
2. produce canonical events (key = event_id, Avro) and dead letters through a confluent-kafka
   producer and await every delivery (failed deliveries are produced again until they
   succeed: the batch is never left undelivered);
3. remember the delivered ids in the Table (RocksDB store + faust changelog);
4. leave the batch: only then does ``take_events`` ack its events, and faust commits acked
   offsets.

Why a confluent-kafka producer for the outputs and not faust topics: aiokafka's idempotent
producer cannot start on Tansu (``InitProducerIdRequest: UnknownError``), librdkafka's can
(``acks=all``, no reordering or duplicates on retries); its C batching is several times
cheaper per message than aiokafka's pure-Python send path; and it shares the encoding and
DLQ header code path with the kafka engine. faust's own producer still writes the table
changelogs.

Dedupe state: one faust Table per source, ``dedupe-<source>``, co-partitioned with its raw
topic, whose store (:class:`DedupeStore`, faust's RocksDB store) holds one key per event_id
(value: first-emission time, 8-byte big-endian µs) in the database of the raw partition the
id came from. A batch's ids are written with one RocksDB write batch per partition and **one**
changelog message per partition (``streams.dedupe.encode_changelog``: the ids and the time),
not one faust ``table[key] = value`` per event: faust's per-key path (an Event context, a
send future and a changelog record per key) cost more than the whole rest of the stage.
faust recovery replays those messages into the store (:meth:`DedupeStore.apply_changelog_batch`
explodes them into id keys). Expiry by window: reads ignore entries older than the window,
and the RocksDB stores are opened with a TTL of the window (faust's ``ttl`` store option,
RocksDB's TTL compaction), so a store holds about one window of ids; the changelog topic is
time-retained (``cleanup.policy=delete``, ``retention.ms`` = 2 x window).

Tansu quirk: faust recovers a table up to the changelog's "latest" offset from ListOffsets,
which Tansu answers with the base offset + 1 of the last *batch* instead of the high-water
mark. faust's changelog producer is therefore limited to one record per producer batch
(``producer_max_batch_size=1``; it only carries the changelog, one small message per
partition and batch, so this costs little), which keeps ListOffsets right and recovery
complete on Tansu too. faust's consistency check is off because the same bug can report an
end below the offset a store already holds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
from faust.sensors import Monitor
from faust.stores.rocksdb import Store as RocksDBStore

from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings
from streams.canonical_avro import fast_writer_for
from streams.core import (
    BatchResult,
    EngineBase,
    RawRecord,
    StreamCore,
    encode_one_by_one,
    now_micros,
)
from streams.dedupe import decode_changelog, decode_time, encode_changelog, encode_time
from streams.faust_credentials import faust_broker_credentials
from streams.metrics import StageCounters, stats_topic

if TYPE_CHECKING:
    from confluent_kafka import Producer

log = logging.getLogger(__name__)

STATS_EVERY_S = 2.0
FLUSH_TIMEOUT_S = 60.0
RETRY_BACKOFF_S = 1.0
TAKE_WITHIN_S = 0.5
CHANGELOG_CHUNK = 10_000
"""Ids per changelog message (keeps each message far below the 1 MB request limit)."""


def default_state_dir(settings: Settings, group: str) -> Path:
    return settings.data_dir / "streams" / "faust" / group


def table_name(source: str) -> str:
    return f"dedupe-{source}"


@dataclass
class FaustOptions:
    """Knobs of the faust engine (defaults from the pipeline's ``streams`` section)."""

    batch_size: int
    group: str
    state_dir: Path
    take_within_s: float = TAKE_WITHIN_S
    stats_every_s: float = STATS_EVERY_S
    extra_app_config: dict[str, Any] = field(default_factory=dict)


class QuietMonitor(Monitor):  # type: ignore[misc]
    """faust's Monitor sensor without its per-message bookkeeping.

    The default Monitor runs four hooks per message (message in/out, stream event in/out:
    counters, dict updates, clock reads, stream and task name lookups). This worker reports
    its own per-source counters (``StageCounters``), so those per-message statistics are
    dropped; commits, sends, table and rebalance statistics stay.
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


class DedupeStore(RocksDBStore):
    """faust's RocksDB store, written a batch at a time, restored from batch changelogs."""

    def partition_db(self, partition: int) -> Any:
        """The rocksdict database of one partition (opened on first use)."""
        return self._db_for_partition(partition)

    def remember(self, partition: int, event_ids: Sequence[str], first_seen_us: int) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        stamp = encode_time(first_seen_us)
        for event_id in event_ids:
            batch.put(event_id.encode(), stamp)
        self._db_for_partition(partition).write(batch)

    def apply_changelog_batch(
        self,
        batch: Iterable[Any],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        """Recovery: write the ids of each changelog message into its partition's DB."""
        from rocksdict import WriteBatch

        batches: dict[int, Any] = defaultdict(lambda: WriteBatch(raw_mode=True))
        offsets: dict[Any, int] = {}
        cutoff = now_micros() - self.table.window_us  # type: ignore[attr-defined]
        for event in batch:
            message = event.message
            offsets[message.tp] = max(message.offset, offsets.get(message.tp, -1))
            if message.value is None:
                continue
            try:
                event_ids, first_seen = decode_changelog(message.value)
            except ValueError:
                continue
            if first_seen <= cutoff:
                continue
            stamp = encode_time(first_seen)
            writes = batches[message.partition]
            for event_id in event_ids:
                writes.put(event_id.encode(), stamp)
        for partition, writes in batches.items():
            self._db_for_partition(partition).write(writes)
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)


class DedupeTable(faust.Table):  # type: ignore[misc]
    """A faust Table whose store is a :class:`DedupeStore` (ids written per batch)."""

    def __init__(self, app: faust.App, *, window_us: int = 0, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.window_us = window_us

    def _new_store_by_url(self, url: Any) -> DedupeStore:
        return DedupeStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )


@dataclass
class _Deliveries:
    """Delivery reports of one batch's messages (confluent callback target)."""

    failed: list[tuple[str, bytes | None, bytes | None, Any, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __call__(self, error: Any, message: Any) -> None:
        if error is None:
            return
        self.errors.append(f"{message.topic()}: {error}")
        self.failed.append((message.topic(), message.key(), message.value(), message.headers(), -1))


class FaustEngine(EngineBase[FaustOptions]):
    """Builds the faust app (agents, tables) around the core; :meth:`run` runs a worker."""

    def __init__(
        self,
        settings: Settings,
        pipeline: PipelineConfig,
        *,
        core: StreamCore | None = None,
        options: FaustOptions | None = None,
        counters: StageCounters | None = None,
    ) -> None:
        super().__init__(
            settings,
            pipeline,
            core=core,
            options=options,
            counters=counters,
            make_options=FaustOptions,
            state_root=default_state_dir,
        )
        self.assigned: set[tuple[str, int]] = set()
        self._producer: Producer | None = None
        self._last_stats = 0.0
        self.tables: dict[str, Any] = {}
        self.app = self._build_app()

    # ------------------------------------------------------------------ app

    def _build_app(self) -> faust.App:
        partitions = self._raw_partitions()
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        window_s = max(int(self.window_us // 1_000_000), 1)
        credentials, ignored = faust_broker_credentials(self.settings.kafka_options)
        if ignored:
            log.info(
                "kafka_options not passed to faust's clients (librdkafka tuning)",
                extra={"options": ignored},
            )
        security: dict[str, Any] = {}
        if credentials is not None:
            security["broker_credentials"] = credentials
        app = faust.App(
            self.options.group,
            broker=f"kafka://{self.settings.kafka_bootstrap}",
            store="rocksdb://",
            datadir=str(self.options.state_dir),
            autodiscover=False,
            # Tansu lets a member join after about half the session timeout (LOCAL_SERVICES.md).
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=6.0,
            # aiokafka's idempotent producer fails on Tansu: at-least-once, dedupe does the rest.
            processing_guarantee="at_least_once",
            producer_acks=-1,
            consumer_auto_offset_reset="earliest",
            # Tansu's ListOffsets(latest) can be below the offset a store already holds;
            # faust would then refuse to start (ConsistencyError) although the store is whole.
            recovery_consistency_check=False,
            # one record per producer batch: see the module docstring (Tansu ListOffsets bug)
            producer_max_batch_size=1,
            Monitor=QuietMonitor,
            web_enabled=False,
            web_bind=self.settings.bind_host,
            **security,
            **self.options.extra_app_config,
        )
        for name in self.pipeline.sources:
            raw = self.pipeline.raw_topic(name)
            topic = app.topic(
                raw,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=partitions[raw],
            )
            table = app.tables.add(
                DedupeTable(
                    app,
                    name=table_name(name),
                    window_us=self.window_us,
                    key_type=bytes,  # bytes types make faust use the raw codec
                    value_type=bytes,
                    partitions=partitions[raw],
                    options={"driver": "rocksdict", "ttl": window_s},
                    extra_topic_configs={
                        "cleanup.policy": "delete",
                        "retention.ms": str(2 * window_s * 1000),
                        "retention.bytes": "-1",
                    },
                )
            )
            self.tables[raw] = table
            app.agent(topic, name=f"normalize-{name}")(self._make_agent(raw))

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]
        async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            wanted = set(self.core.topics)
            self.assigned = {(tp.topic, tp.partition) for tp in assigned if tp.topic in wanted}
            log.info(
                "partitions assigned",
                extra={
                    "engine": "faust",
                    "worker": self.worker_id,
                    "partitions": sorted(f"{t}[{p}]" for t, p in self.assigned),
                },
            )

        @app.timer(self.options.stats_every_s)
        async def publish_stats() -> None:
            self._publish_stats()

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def on_shutdown(sender: Any, **kwargs: Any) -> None:
            self._publish_stats(force=True)
            if self._producer is not None:
                self._producer.flush(10)
            log.info("worker stopped", extra={"worker": self.worker_id})

        return app

    def _make_agent(self, raw_topic: str) -> Any:
        table = self.tables[raw_topic]

        async def normalize(stream: Any) -> None:
            async for events in stream.take_events(
                self.options.batch_size, within=self.options.take_within_s
            ):
                await self._handle(table, events)

        normalize.__name__ = f"normalize_{raw_topic.replace('.', '_')}"
        return normalize

    def _raw_partitions(self) -> dict[str, int]:
        """Partition counts of the raw topics; creates the stats topic. Fails if one is missing."""
        from confluent_kafka.admin import NewTopic

        from hosepipe.kafka import make_admin

        admin = make_admin(self.settings)
        metadata = admin.list_topics(timeout=30)
        counts: dict[str, int] = {}
        for raw in self.core.topics:
            info = metadata.topics.get(raw)
            if info is None or info.error is not None:
                raise ValueError(
                    f"raw topic {raw!r} does not exist; run `hosepipe topics create` first"
                )
            counts[raw] = len(info.partitions)
        stats = stats_topic(self.options.group)
        if stats not in metadata.topics:
            new = NewTopic(
                stats,
                num_partitions=1,
                replication_factor=self.pipeline.topics.replication_factor,
                config={"retention.ms": "-1", "retention.bytes": "-1"},
            )
            for name, future in admin.create_topics([new], operation_timeout=30).items():
                try:
                    future.result()
                except Exception as exc:
                    if "already exists" not in str(exc).lower() and "EXISTS" not in str(exc):
                        raise RuntimeError(f"creating topic {name!r}: {exc}") from exc
        return counts

    def _open_producer(self) -> None:
        from hosepipe.avro import make_encoder
        from hosepipe.kafka import make_producer

        if self._producer is None:
            self.encoder = make_encoder(self.settings, self.pipeline.topics.canonical)
            self._write_events = fast_writer_for(self.encoder)
            self._producer = make_producer(self.settings, **{"linger.ms": 5})

    # ------------------------------------------------------------------ one batch

    async def _handle(self, table: Any, events: Sequence[Any]) -> None:
        records: list[RawRecord] = []
        for event in events:
            message = event.message
            timestamp = message.timestamp
            records.append(
                RawRecord(
                    message.topic,
                    message.partition,
                    message.offset,
                    message.value,
                    message.key,
                    int(timestamp * 1000) if timestamp else None,
                    list(message.headers) if message.headers else None,
                )
            )
        if not records:
            return
        now = now_micros()
        store: DedupeStore = table.data
        result = self.core.process_batch(
            records, lambda t, p, ids: self._seen(store.partition_db(p), ids, now), now
        )
        await self._emit(result, now)
        self._remember(table, result, now)
        self.counters.add(result.counts)

    def _seen(self, db: Any, ids: Sequence[str], now: int) -> list[bool]:
        cutoff = now - self.window_us
        values: list[bytes | None] = db.get([i.encode() for i in ids])  # one multi-get
        return [v is not None and decode_time(v) > cutoff for v in values]

    async def _emit(self, result: BatchResult, now: int) -> None:
        producer = self._producer
        assert producer is not None
        deliveries = _Deliveries()
        events = [o.event for o in result.outputs]
        values: list[bytes]
        try:
            values = self._write_events(events)
        except ValueError:
            values = encode_one_by_one(result, self.encoder.encode, now)
        canonical = self.pipeline.topics.canonical
        messages: list[tuple[str, bytes | None, bytes | None, Any]] = [
            (canonical, o.event["event_id"].encode(), v, None)
            for o, v in zip(result.outputs, values, strict=True)
        ]
        dlq = self.pipeline.topics.dlq
        messages += [(dlq, d.record.key, d.record.value, d.headers()) for d in result.dead_letters]
        while messages:
            deliveries = _Deliveries()
            for topic, key, value, headers in messages:
                self._produce(producer, topic, key, value, headers, deliveries)
            remaining = await asyncio.to_thread(producer.flush, FLUSH_TIMEOUT_S)
            if remaining:  # still queued: flush again, they may yet be delivered
                remaining = await asyncio.to_thread(producer.flush, FLUSH_TIMEOUT_S)
            messages = [(t, k, v, h) for t, k, v, h, _ in deliveries.failed]
            if remaining or messages:
                # Never leave the batch undelivered: its events would be acked (committed).
                log.error(
                    "deliveries failed; producing them again",
                    extra={
                        "failed": len(messages),
                        "queued": remaining,
                        "first": deliveries.errors[:1],
                    },
                )
                await asyncio.sleep(RETRY_BACKOFF_S)

    @staticmethod
    def _produce(
        producer: Any,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        deliveries: _Deliveries,
    ) -> None:
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=deliveries)
                return
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.05)

    def _remember(self, table: Any, result: BatchResult, now: int) -> None:
        """Store the delivered ids under their raw partition; one changelog message each."""
        ids: dict[int, list[str]] = {}
        for output in result.outputs:
            ids.setdefault(output.record.partition, []).append(output.event["event_id"])
        store: DedupeStore = table.data
        for partition, event_ids in ids.items():
            store.remember(partition, event_ids, now)
            for start in range(0, len(event_ids), CHANGELOG_CHUNK):
                chunk = event_ids[start : start + CHANGELOG_CHUNK]
                table.send_changelog(
                    partition,
                    f"{partition}:{chunk[0]}".encode(),
                    encode_changelog(chunk, now),
                    key_serializer="raw",
                    value_serializer="raw",
                )

    def _publish_stats(self, force: bool = False) -> None:
        producer = self._producer
        if producer is None:
            return
        if not force and time.monotonic() - self._last_stats < self.options.stats_every_s / 2:
            return
        self._last_stats = time.monotonic()
        topic = stats_topic(self.options.group)
        while True:
            try:
                producer.produce(
                    topic, self.counters.snapshot(self.worker_id), self.worker_id.encode()
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Run a faust worker in this thread until SIGTERM/SIGINT (web server off)."""
        self._open_producer()
        log.info(
            "worker starting",
            extra={"engine": "faust", "topics": self.core.topics, "worker": self.worker_id},
        )
        gc.freeze()  # see kafka_runner: many short-lived dicts per batch
        gc.set_threshold(100_000, 50, 100)
        # At loglevel warn/error faust turns the root logger to DEBUG (a spinner): use info.
        worker = faust.Worker(
            self.app, loglevel="info", quiet=True, override_logging=False, redirect_stdouts=False
        )
        worker.execute_from_commandline()


def run_faust_worker(settings: Settings, pipeline: PipelineConfig) -> None:
    """``hosepipe worker --engine faust``: state under ``$HOSEPIPE_DATA_DIR/streams/faust``."""
    FaustEngine(settings, pipeline).run()
