"""The faust-streaming engine: faust's consumer, tables and rebalancing around the batch core.

Per configured source, ``raw.<source>`` is read with raw (bytes) serializers and handled a
batch at a time, in the order that makes "never lose, at worst a duplicate" hold
(ARCHITECTURE.md, Guarantees):

1. :meth:`StreamCore.process_batch` (decode, transform, map, validate, dedupe check against
   the source's faust Table);
2. produce canonical events (key = event_id, Avro) and dead letters through a confluent-kafka
   producer and await every delivery (failed deliveries are produced again until they
   succeed: the batch is never left undelivered);
3. remember the delivered ids in the Table (RocksDB store + faust changelog);
4. only then mark the batch's offsets done; faust commits them (after flushing its producer,
   i.e. the changelog) with its commit loop, before a rebalance and at shutdown.

Batched drain (default): faust's per-message path (a ``Message``, the conductor, a channel
queue, a ``Stream`` iteration, an ``Event`` and an ack per record) cost ~100 µs of CPU per
record, several times the core's own cost. :class:`BatchDrainConsumer` replaces faust's
consumer drain loop: the records of the raw topics from each fetch go to the engine in
batches of up to ``batch_size`` (as aiokafka records, no faust objects), and a batch's
offsets are marked done in one step once the batch is handled. Table changelogs (recovery,
standbys) keep faust's per-message path; flow control, ``wait_empty`` before rebalances and
at shutdown, commits and recovery work as in faust (see the class). One agent per source
still subscribes the raw topic (and co-partitions it with its table); its stream stays idle.
With ``FaustOptions.batched_drain=False`` that agent does the work instead, through faust's
stream (``stream.take_events(batch_size, within=…)``; a batch's events are acked when the
agent leaves it).

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
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import faust
from faust.sensors import Monitor
from faust.stores.rocksdb import Store as RocksDBStore
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from mode.utils.futures import notify

from hosepipe.config import PipelineConfig
from hosepipe.runtime import settle_garbage_collector
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
from streams.output import (
    dead_letter_message,
    max_message_bytes,
    set_aside_too_large,
    size_output,
)
from streams.stats import ensure_stats_topic

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
    batched_drain: bool = True
    """Drain raw topics in fetched batches (:class:`BatchDrainConsumer`); False: faust's
    per-message agent path (``take_events``)."""
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


BatchHandler = Callable[[list[Any]], Awaitable[None]]
"""Processes one batch of aiokafka ``ConsumerRecord`` objects of one raw topic."""

_FETCHING = "FETCHING"  # faust's Consumer.diag flag while draining


class _InFlight:
    """Stands for a batch being processed in faust's set of unacked messages.

    ``Consumer.wait_empty`` (before a rebalance completes and at shutdown) waits until every
    message in that set is acked, then commits: one marker per batch makes it wait for the
    batch's deliveries and changelog writes instead of a per-message reference.
    """

    __slots__ = ("__weakref__", "acked", "refcount")

    def __init__(self) -> None:
        self.acked = False
        self.refcount = 1


class BatchDrainConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """faust's aiokafka consumer, draining raw topics a fetched batch at a time.

    faust's drain hands every fetched record to the conductor one by one (a ``Message``, a
    channel decode, a queue put, a ``Stream`` iteration, an ``Event``, an ack: ~100 µs of
    CPU per record). Here the records of the topics in ``app.batch_handlers`` skip all of
    that: each ``getmany`` result is cut into batches of at most ``app.batch_max`` records
    and handed to the topic's handler; when the handler returns (outputs delivered, ids
    remembered) the batch's offsets are marked done in one step, and faust's commit loop
    commits them like acked offsets. Other topics (table changelogs during recovery and
    standby) keep faust's per-message path.

    What stays as in faust: flow control around rebalances (no batch starts while the flow
    is stopped; fetched records of a stopped flow are dropped and the consumer seeks back to
    the committed offsets), ``wait_empty`` before a rebalance and at shutdown (it waits for
    the batch in flight, see :class:`_InFlight`), commits (``force_commit`` flushes faust's
    producer, i.e. the table changelogs, before committing), recovery pausing the raw
    partitions until the tables are restored. A batch runs in its own task, shielded from
    the fetcher's cancellation at shutdown, so a started batch always finishes and is
    committed by the final commit.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._done_offsets: dict[Any, int] = {}  # TP -> offset to commit (last done + 1)
        self._batch_tasks: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------------ commits

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[Any]:
        tps = set(super()._filter_tps_with_pending_acks(topics))
        for tp in self._done_offsets:
            if topics is None or tp in topics or tp.topic in topics:
                tps.add(tp)
        return iter(tps)

    def _new_offset(self, tp: Any) -> int | None:
        done = self._done_offsets.get(tp)
        if done is not None:
            return done
        offset: int | None = super()._new_offset(tp)
        return offset

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # faust's handler waits for the batch in flight and commits (done offsets included)
        await super().on_partitions_revoked(revoked)
        for tp in revoked:
            self._done_offsets.pop(tp, None)
            self._read_offset.pop(tp, None)

    # ------------------------------------------------------------------ draining

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(_FETCHING)
                if not self.flow_active:
                    await self.wait(self.can_resume_flow)  # type: ignore[arg-type]
                rebalances = self.app.rebalancing_count
                records, active = await self._wait_next_records(1.0)
                # faust sleeps here too: getmany can return at once for a long time
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if records and not await self._deliver(records, active, handlers, rebalances):
                    # Records fetched before a rebalance were dropped: the fetch positions
                    # are past them, so go back to the committed offsets (as faust). The
                    # rebalance seeks too, but it may have finished before the fetch returned.
                    self.log.dev("records fetched across a rebalance: seek to committed")
                    try:
                        await self.perform_seek()
                    except Exception as exc:
                        self.log.warning(f"exception performing seek after a rebalance {exc}")
                unset_flag(_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(_FETCHING)

    async def _deliver(
        self, records: Any, active: Any, handlers: dict[str, BatchHandler], rebalances: int
    ) -> bool:
        """Hand one fetch on; False: dropped (part of) it because a rebalance began."""
        generation_id = self.app.consumer_generation_id
        buffered = self._buffered_partitions
        batched: dict[str, list[tuple[Any, list[Any]]]] = {}
        for tp, tp_records in records.items():
            if not tp_records:
                continue
            if active is not None and tp not in active and tp not in buffered:
                continue
            if tp.topic in handlers:
                batched.setdefault(tp.topic, []).append((tp, tp_records))
            elif not await self._deliver_each(tp, tp_records, generation_id):
                return False
        if not batched:
            return True
        batch_max: int = getattr(self.app, "batch_max", 10_000)
        read_offset = self._read_offset
        monitor = self.app.monitor
        for topic, parts in batched.items():
            chunk: list[Any] = []
            for tp, tp_records in parts:
                # faust's read offset: the last record handed on, or after a seek the next
                # one to read; records below it were handled already (as faust: ``>=``)
                r_offset = read_offset.get(tp)
                if r_offset is not None and tp_records[0].offset < r_offset:
                    tp_records = [r for r in tp_records if r.offset >= r_offset]
                    if not tp_records:
                        continue
                if monitor is not None:
                    monitor.track_tp_end_offset(tp, self.highwater(tp))
                for start in range(0, len(tp_records), batch_max):
                    piece = tp_records[start : start + batch_max]
                    if len(chunk) + len(piece) > batch_max and chunk:
                        if not await self._run_batch(handlers[topic], chunk, rebalances):
                            return False
                        chunk = []
                    chunk.extend(piece)
            if chunk and not await self._run_batch(handlers[topic], chunk, rebalances):
                return False
        return True

    async def _deliver_each(self, tp: Any, tp_records: list[Any], generation_id: int) -> bool:
        """faust's per-message path (conductor callback), for topics without a batch handler."""
        callback = self.callback
        to_message = self._to_message
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        for n, record in enumerate(tp_records):
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                return False
            if n and not n % 100:
                await asyncio.sleep(0)
            message = to_message(tp, record)
            offset = message.offset
            r_offset = read_offset[tp]
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await self.wait_first(callback(message), self.suspend_flow.wait())
                read_offset[tp] = offset
        return True

    async def _run_batch(self, handler: BatchHandler, chunk: list[Any], rebalances: int) -> bool:
        """Process one batch to the end (even if the drain is cancelled); False: dropped."""
        if not self.flow_active or self.app.rebalancing_count != rebalances:
            return False  # a rebalance began since the fetch: its records may be stale
        marker = _InFlight()
        self._unacked_messages.add(cast(Any, marker))
        task = asyncio.ensure_future(self._process(handler, chunk, marker))
        self._batch_tasks.add(task)
        task.add_done_callback(self._batch_tasks.discard)
        await asyncio.shield(task)
        commit_every = self._commit_every
        if commit_every is not None and self._n_acked >= commit_every:
            self._n_acked = 0
            await self.commit()
        return True

    async def _process(self, handler: BatchHandler, chunk: list[Any], marker: _InFlight) -> None:
        try:
            await handler(chunk)
            last: dict[Any, int] = {}
            for record in chunk:
                last[(record.topic, record.partition)] = record.offset
            for (topic, partition), offset in last.items():
                tp = self._new_topicpartition(topic, partition)
                self._done_offsets[tp] = offset + 1
                self._read_offset[tp] = offset
                self.app.monitor.stream_inbound_time[tp] = time.monotonic()
            self._n_acked += len(chunk)
        finally:
            marker.acked = True
            self._unacked_messages.discard(cast(Any, marker))
            notify(self._waiting_for_ack)


class BatchDrainTransport(AIOKafkaTransport):  # type: ignore[misc]
    """faust's aiokafka transport with :class:`BatchDrainConsumer`."""

    Consumer = BatchDrainConsumer


class BatchDrainApp(faust.App):  # type: ignore[misc]
    """A faust App whose consumer drains ``batch_handlers`` topics in batches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers: dict[str, BatchHandler] = {}
        self.batch_max = 10_000

    def _new_transport(self) -> Any:
        return BatchDrainTransport(self.conf.broker_consumer, self)


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
        # Lowered to what the canonical and DLQ topics hold when the producer opens.
        self.max_message_bytes = max_message_bytes(pipeline)
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
        app_class = BatchDrainApp if self.options.batched_drain else faust.App
        app = app_class(
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
            # The agent subscribes the topic (and co-partitions it with its table); with the
            # batched drain its stream stays idle: the consumer hands batches to the handler.
            app.agent(topic, name=f"normalize-{name}")(self._make_agent(raw))
            if isinstance(app, BatchDrainApp):
                app.batch_handlers[raw] = self._make_batch_handler(table)
        if isinstance(app, BatchDrainApp):
            app.batch_max = self.options.batch_size

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

    def _make_batch_handler(self, table: Any) -> BatchHandler:
        async def handle(batch: list[Any]) -> None:
            # aiokafka ConsumerRecords: timestamps in ms already, headers as (key, value) pairs
            records = [
                RawRecord(
                    r.topic,
                    r.partition,
                    r.offset,
                    r.value,
                    r.key,
                    r.timestamp if r.timestamp and r.timestamp > 0 else None,
                    list(r.headers) if r.headers else None,
                )
                for r in batch
            ]
            await self._process(table, records)

        return handle

    def _raw_partitions(self) -> dict[str, int]:
        """Partition counts of the raw topics; creates the stats topic. Fails if one is missing."""
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
        ensure_stats_topic(
            self.settings, self.options.group, self.pipeline.topics.replication_factor
        )
        return counts

    def _open_producer(self) -> None:
        from hosepipe.avro import make_encoder
        from hosepipe.kafka import make_producer

        if self._producer is None:
            self.encoder = make_encoder(self.settings, self.pipeline.topics.canonical)
            self._write_events = fast_writer_for(self.encoder)
            size = size_output(self.settings, self.pipeline, self.max_message_bytes)
            self.max_message_bytes = size.max_message_bytes
            self._producer = make_producer(self.settings, **size.producer_options())

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
        await self._process(table, records)

    async def _process(self, table: Any, records: list[RawRecord]) -> None:
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
        events = [o.event for o in result.outputs]
        values: list[bytes]
        try:
            values = self._write_events(events)
        except ValueError:
            values = encode_one_by_one(result, self.encoder.encode, now)
        # Over the per-message limit: a dead letter (cut if need be), never a crash loop.
        limit = self.max_message_bytes
        values = set_aside_too_large(result, values, limit, now)
        canonical = self.pipeline.topics.canonical
        messages: list[tuple[str, bytes | None, bytes | None, Any]] = [
            (canonical, o.event["event_id"].encode(), v, None)
            for o, v in zip(result.outputs, values, strict=True)
        ]
        dlq = self.pipeline.topics.dlq
        for letter in result.dead_letters:
            value, headers = dead_letter_message(letter, limit)
            messages.append((dlq, letter.record.key, value, headers))
        # Never leave the batch undelivered: its offsets would be committed.
        while messages:
            deliveries = _Deliveries()
            produce = producer.produce
            for topic, key, value, headers in messages:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=deliveries)
                except BufferError:  # local queue full: let deliveries drain
                    self._produce(producer, topic, key, value, headers, deliveries)
            remaining = await asyncio.to_thread(producer.flush, FLUSH_TIMEOUT_S)
            while remaining:
                # Still queued: every message ends delivered or failed (reported) by
                # librdkafka's message.timeout.ms, so flush until the queue is empty.
                log.warning("deliveries still pending", extra={"queued": remaining})
                remaining = await asyncio.to_thread(producer.flush, FLUSH_TIMEOUT_S)
            messages = [(t, k, v, h) for t, k, v, h, _ in deliveries.failed]
            if messages:
                log.error(
                    "deliveries failed; producing them again",
                    extra={"failed": len(messages), "first": deliveries.errors[:1]},
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
        snapshot = self.counters.snapshot_if_changed(self.worker_id)
        if snapshot is None:
            return
        topic = stats_topic(self.options.group)
        while True:
            try:
                producer.produce(topic, snapshot, self.worker_id.encode())
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
        settle_garbage_collector(100_000, 50, 100)  # batches of many short-lived dicts
        # faust's loggers are kept at WARNING (hosepipe.logs), except table recovery: its few
        # lines per rebalance ("Resuming flow...", "Worker ready", "Still fetching changelog
        # topics ...") are how an operator sees a worker come back, or not, after one.
        logging.getLogger("faust.tables.recovery").setLevel(logging.getLogger().level)
        # At loglevel warn/error faust turns the root logger to DEBUG (a spinner): use info.
        worker = faust.Worker(
            self.app, loglevel="info", quiet=True, override_logging=False, redirect_stdouts=False
        )
        worker.execute_from_commandline()


def run_faust_worker(settings: Settings, pipeline: PipelineConfig) -> None:
    """``hosepipe worker --engine faust``: state under ``$HOSEPIPE_DATA_DIR/streams/faust``."""
    FaustEngine(settings, pipeline).run()
