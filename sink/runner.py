"""The sink process: consume ``events.canonical``, buffer, write Parquet, then commit.

The I/O shell around :class:`sink.batch.SinkBatch`:

1. ``consume()`` up to 10,000 messages, decode them column-wise into one Arrow table
   (:mod:`hosepipe.avro_arrow`; record by record with fastavro as the fallback), add the rows
   to the batch; after each record the size rules, after each poll the age rule decide a
   flush (:meth:`SinkBatch.flush_reason`).
2. A flush drains the batch into a plan and hands it to a background thread that writes
   every file durably (:class:`sink.writer.PlanWriter`) while the next batch is consumed;
   the main thread commits the plan's offsets synchronously once it is durable. At most one
   plan is in flight: the next flush first waits for it and commits it, so every plan
   starts at the committed offsets.
3. Lake down: the write is retried with backoff (after botocore's own retries), the assigned
   partitions are paused, ``poll()`` keeps the group membership alive, nothing is committed;
   the lake is probed about once a second and the backoff ends as soon as it answers again;
   one log line when degraded, a reminder at most once a minute, one when recovered.
4. Rebalance (eager): on revoke the write in flight is awaited (and committed if it landed;
   no write may outlive our ownership), every other uncommitted record is dropped; the new
   owner (maybe us) starts at the committed offset, so the replay writes the same names.
5. A failed commit drops the batch and seeks back to the committed offsets.

Undecodable records cannot be landed in the lake's fixed schema: they go to the DLQ with
reason headers (produced and flushed before the commit), never silently skipped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Message

from hosepipe.avro import AvroDecoder, SerdeError, make_decoder
from hosepipe.avro_arrow import ArrowBatchDecoder, FastPathError, values_array
from hosepipe.file_log import LandedFile, encode_landed, ensure_file_log_topic
from hosepipe.kafka import make_consumer, make_producer
from hosepipe.lake import (
    INVALID_TIME_PARTITION,
    LakeStore,
    LocalLakeStore,
    S3Retries,
    canonical_arrow_schema,
    events_to_table,
    open_lake_store,
)
from hosepipe.runtime import settle_garbage_collector
from sink.batch import BufferingHints, FlushPlan, FlushReason, SinkBatch
from sink.health import Backoff, LakeHealth, LakeState
from sink.lanes import (
    LANE_NAMES,
    LATE,
    ON_TIME,
    LaneBook,
    cursor_key,
    decode_cursors,
    encode_cursors,
    micros,
    poll_ends,
    split_lanes,
)
from sink.metrics import SinkMetrics
from sink.writer import PlanWriter, WrittenFile

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from hosepipe.config import PipelineConfig
    from hosepipe.settings import Settings

log = logging.getLogger(__name__)

POLL_MESSAGES = 10_000
"""Messages per ``consume()`` call: large batches keep the per-call cost small (25,000 and
50,000 decode cheaper per row but cost more inside ``consume()`` and 60-90 MB of memory)."""
PROBE_INTERVAL = 1.0
"""Seconds between lake probes while a write is being retried."""


@dataclass
class InFlight:
    """The plan being made durable in the background (at most one), not yet committed."""

    plan: FlushPlan
    done: dict[str, WrittenFile]
    future: Future[list[WrittenFile]] | None
    """The background write; None once consumed (or when it must be retried in the loop)."""
    generation: int


FILES_PER_ANNOUNCEMENT = 1000
"""Files named per file-log record; a larger flush is announced in several records."""


class SinkRunner:
    """One consumer-group member landing the canonical topic in the lake."""

    def __init__(
        self,
        settings: Settings,
        pipeline: PipelineConfig,
        *,
        store: LakeStore | None = None,
        metrics: SinkMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        consumer_overrides: dict[str, Any] | None = None,
    ) -> None:
        config = pipeline.sink
        self.settings = settings
        self.pipeline = pipeline
        self.topic = pipeline.topics.canonical
        self.clock = clock
        self.metrics = metrics or SinkMetrics.create()
        self.store = store or open_lake_store(
            settings,
            S3Retries(mode=config.s3_retry_mode, max_attempts=config.s3_max_attempts),
        )
        hints = BufferingHints.from_config(config)
        self.batch = SinkBatch(hints, tuple(config.partition_keys))
        late_hints = replace(hints, max_age_seconds=config.late_max_age.total_seconds())
        self.late_batch = SinkBatch(late_hints, tuple(config.partition_keys))
        """The late lane (:mod:`sink.lanes`); stays empty unless ``sink.late_after`` is set."""
        self.lanes = (self.batch, self.late_batch)
        self.late_after_us = micros(config.late_after)
        self.book = LaneBook(self.late_after_us)
        self.writer = PlanWriter(self.store, config.compression, config.row_group_rows)
        self.health = LakeHealth(Backoff(maximum=config.retry_max_backoff.total_seconds()))
        self.decoder: AvroDecoder = make_decoder(settings)
        self.fast_decoder = ArrowBatchDecoder(self.decoder)
        self.schema = canonical_arrow_schema()
        age = config.max_age.total_seconds()
        self.poll_timeout = max(0.05, min(1.0, age / 4 if age else 0.05))
        self.consumer: Consumer = make_consumer(
            settings,
            config.consumer_group,
            **{
                "enable.auto.offset.store": False,
                "partition.assignment.strategy": "range",
                # bounds librdkafka's prefetch queue, part of the sink's memory
                "queued.max.messages.kbytes": 32 * 1024,
                # once that queue is full, librdkafka stops fetching a partition for this
                # long (default 1 s): the sink drains 10,000 messages per poll, so the fetch
                # pipeline stalled and it ran at ~125k rows/s instead of ~180k+
                # (bench/sink_stage.py)
                "fetch.queue.backoff.ms": 20,
                **(consumer_overrides or {}),
            },
        )
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-flush")
        self._inflight: InFlight | None = None
        self._producer: Producer | None = None
        self._log_producer: Producer | None = None
        self.file_log_topic = pipeline.topics.file_log
        self._stop = threading.Event()
        self._generation = 0
        self._late_reported = 0
        self._invalid_reported = 0
        self._dlq_pending = 0
        self._first_records = True
        """Log the first records after each assignment (how long start-up and join took)."""

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask :meth:`run` to finish (flush once, commit, leave the group)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def health_check(self) -> dict[str, Any]:
        return {
            "ok": self.health.state is LakeState.HEALTHY,
            "lake": self.health.state.value,
            "buffered_rows": self.batch.rows + self.late_batch.rows,
        }

    def start(self) -> None:
        """Prepare and join the group (what :meth:`run` does first)."""
        if isinstance(self.store, LocalLakeStore):
            removed = self.store.remove_stale_temp_files()
            if removed:
                log.info("removed stale temporary files from the lake", extra={"files": removed})
        ensure_file_log_topic(
            self.settings, self.file_log_topic, self.pipeline.topics.replication_factor
        )
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "sink started",
            extra={"topic": self.topic, "lake": self.store.location.url()},
        )

    def run(self) -> None:
        """Consume until :meth:`stop`; always leaves the group on the way out."""
        self.start()
        try:
            while not self.stopping:
                self._step()
            if self._complete_inflight(attempts=1):
                for lane, batch in enumerate(self.lanes):
                    if not batch.empty and not self._flush(
                        FlushReason.SHUTDOWN, attempts=1, lane=lane, between_polls=True
                    ):
                        break
                self._complete_inflight(attempts=1)
        finally:
            self._flusher.shutdown(wait=True)
            self.writer.close()
            self.consumer.close()
            for producer in (self._producer, self._log_producer):
                if producer is not None:
                    producer.flush(10)
            log.info("sink stopped", extra={"topic": self.topic})

    def _step(self) -> None:
        self._complete_inflight(block=False)
        messages = self.consumer.consume(POLL_MESSAGES, self.poll_timeout)
        # rebalance callbacks run inside consume(); what it returns is current
        generation = self._generation
        now = self.clock()
        if messages:
            self._add(messages, now, generation)
        for lane, batch in enumerate(self.lanes):
            if generation != self._generation:
                break
            reason = batch.flush_reason(self.clock())
            if reason is None and lane == LATE and not messages and self.batch.empty:
                # caught up: holding late rows longer would only delay them
                reason = FlushReason.IDLE if not batch.empty else None
            if reason is not None:
                self._flush(reason, lane=lane, between_polls=True)
        self._update_gauges()

    # ------------------------------------------------------------------ records

    def _add(self, messages: list[Message], now: float, generation: int) -> None:
        from confluent_kafka import KafkaError

        good = [m for m in messages if m.error() is None]
        if len(good) < len(messages):
            for message in messages:
                error = message.error()
                if error is None or error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise RuntimeError(f"consuming {self.topic}: {error}")
                log.warning("consumer error", extra={"topic": self.topic, "error": str(error)})
        partitions = pa.array(list(map(Message.partition, good)), pa.int64())
        offsets = pa.array(list(map(Message.offset, good)), pa.int64())
        ends = poll_ends(partitions, offsets)  # DLQ'd records too: their offsets are done
        if not self._start_partitions(ends):
            return
        values = values_array(list(map(Message.value, good)))  # one copy of the poll's bytes
        table, kept = self._decode(good, values)
        sizes = pc.fill_null(pc.binary_length(values), 0)  # Avro bytes per record
        if kept is not None:
            good = [good[i] for i in kept]
            rows = pa.array(kept, pa.int64())
            sizes, partitions, offsets = sizes.take(rows), partitions.take(rows), offsets.take(rows)
        if self._first_records and good:
            self._first_records = False
            log.info(
                "first records consumed",
                extra={"topic": self.topic, "records": len(good)},
            )
        keep = self.book.keep(table, partitions, offsets)
        if keep is not None:
            self.metrics.skipped_rows.inc(len(keep) - pc.sum(keep).as_py())
            table, partitions = table.filter(keep), partitions.filter(keep)
            offsets, sizes = offsets.filter(keep), sizes.filter(keep)
        late = self.book.late_mask(table, partitions)
        for lane, columns in split_lanes((table, partitions, offsets, sizes), late):
            if not self._add_lane(lane, *columns, now, generation):
                return  # revoked meanwhile: the rest belongs to the next owner
        self.book.polled(ends)
        self._report_counts()

    def _add_lane(
        self,
        lane: int,
        table: pa.Table,
        partitions: pa.Int64Array,
        offsets: pa.Int64Array,
        sizes: pa.Int64Array,
        now: float,
        generation: int,
    ) -> bool:
        """Add a poll's rows of one lane, flushing that lane whenever a size rule fires;
        False when a rebalance or rewind took the partitions meanwhile."""
        batch = self.lanes[lane]
        start = 0
        while start < table.num_rows:
            if generation != self._generation:
                return False
            start += batch.add_table(
                self.topic,
                partitions.slice(start),
                offsets.slice(start),
                table.slice(start),
                sizes.slice(start),
                now,
            )
            reason = batch.flush_reason()
            if reason is not None:
                self._flush(reason, lane=lane)
        return generation == self._generation

    def _start_partitions(self, ends: dict[int, tuple[int, int]]) -> bool:
        """First records of a partition since the assignment: read its cursor object.

        Rows below the committed offset are durable in both lanes; rows above it that the
        stored cursors cover are durable in their lane and skipped. If the lake cannot be
        read, rewind and try again (a row must not be written twice).
        """
        for partition, (first, _) in ends.items():
            if self.book.known(partition):
                continue
            key = cursor_key(self.topic, partition)
            try:
                data = self.store.get_optional(key)
                stored = None if data is None else decode_cursors(data, key)
            except Exception as exc:
                # A damaged object stops this partition here rather than risk duplicates:
                # deleting it replays from the committed offset (late rows may repeat).
                log.warning(
                    "reading the sink's lane cursors failed; rewinding to read again",
                    extra={
                        "topic": self.topic,
                        "partition": partition,
                        "object": key,
                        "error": str(exc),
                    },
                )
                self._wait(1.0)
                self._rewind()
                return False
            self.book.start(partition, first, stored)
        return True

    def _decode(
        self, good: list[Message], values: pa.LargeBinaryArray
    ) -> tuple[pa.Table, list[int] | None]:
        """The canonical table of a poll and, per row, the index of its message in ``good``
        (None: every message, in order).

        Column-wise first (:mod:`hosepipe.avro_arrow`); a poll holding other writer schemas
        or a bad record is decoded record by record, bad records going to the DLQ.
        """
        if self.fast_decoder.available:
            try:
                return self.fast_decoder.decode(values).cast(self.schema), None
            except FastPathError:
                pass
        try:
            events: list[dict[str, Any] | None] = list(
                self.decoder.decode_many([v or b"" for v in values.to_pylist()])
            )
        except SerdeError:
            events = [self._decode_one(m) for m in good]
        kept = [i for i, event in enumerate(events) if event is not None]
        return events_to_table([events[i] for i in kept]), kept  # type: ignore[misc]

    def _report_counts(self) -> None:
        # late: later than the newest hour seen in the on-time lane, or in the late lane
        total_late = self.batch.late + self.late_batch.total_rows
        late = total_late - self._late_reported
        if late:
            self.metrics.late_events.inc(late)
            self._late_reported = total_late
        total_invalid = self.batch.invalid_time + self.late_batch.invalid_time
        invalid = total_invalid - self._invalid_reported
        if invalid:
            self.metrics.invalid_time_events.inc(invalid)
            self._invalid_reported = total_invalid
            log.warning(
                "events with occurred_at outside years 1..9999 landed under "
                f"{INVALID_TIME_PARTITION}",
                extra={"topic": self.topic, "events": invalid},
            )

    def _decode_one(self, message: Message) -> dict[str, Any] | None:
        try:
            return self.decoder.decode(message.value() or b"")
        except SerdeError as exc:
            self._dead_letter(message, exc)
            return None

    def _dead_letter(self, message: Message, error: Exception) -> None:
        if self._producer is None:
            self._producer = make_producer(self.settings)
        headers = [
            ("hosepipe.error.stage", b"sink"),
            ("hosepipe.error.class", type(error).__name__.encode()),
            ("hosepipe.error.message", str(error)[:2000].encode()),
            ("hosepipe.original.topic", self.topic.encode()),
            ("hosepipe.original.partition", str(message.partition()).encode()),
            ("hosepipe.original.offset", str(message.offset()).encode()),
        ]
        self._producer.produce(
            self.pipeline.topics.dlq, message.value(), message.key(), headers=headers
        )
        self._dlq_pending += 1
        self.metrics.dead_letters.inc()
        log.warning(
            "undecodable record sent to the DLQ",
            extra={
                "topic": self.topic,
                "partition": message.partition(),
                "offset": message.offset(),
                "error": str(error),
            },
        )

    # ------------------------------------------------------------------ flush

    def _flush(
        self,
        reason: FlushReason,
        attempts: int | None = None,
        *,
        lane: int = ON_TIME,
        between_polls: bool = False,
    ) -> bool:
        """Hand a lane's batch to the background writer once the previous plan is committed.

        One plan at a time is in flight, so a lane's plan always starts at its durable
        cursor (what makes its file names replay-stable) while the next batch is consumed.
        """
        if not self._complete_inflight(attempts):
            self._drop_all()  # they start past an uncommitted plan
            return False
        plan = self.lanes[lane].drain(reason)
        if self.late_after_us is not None or self.book.stored or self.book.rules:
            plan = self._with_cursors(plan, lane, between_polls)
        done: dict[str, WrittenFile] = {}
        future: Future[list[WrittenFile]] | None = None
        try:
            self._flush_dlq()  # DLQ records of this batch are acknowledged before its commit
            future = self._flusher.submit(self.writer.write, plan, done)
        except Exception as exc:
            log.debug("DLQ flush failed; retrying with the batch", extra={"error": str(exc)})
        self._inflight = InFlight(plan, done, future, self._generation)
        return True

    def _complete_inflight(self, attempts: int | None = None, *, block: bool = True) -> bool:
        """Wait for the plan in flight (unless ``block`` is false and it is still running),
        retry it while the lake is down, then commit. False when it was given up."""
        inflight = self._inflight
        if inflight is None:
            return True
        if not block and inflight.future is not None and not inflight.future.done():
            return True
        self._inflight = None
        written = self._make_durable(inflight, attempts)
        if written is None:
            # given up (stopping, or revoked): the lanes' positions counted this plan in
            self._drop_all()
            return False
        return self._finish(inflight.plan, written)

    def _finish(self, plan: FlushPlan, written: list[WrittenFile], *, rewind: bool = True) -> bool:
        """A durable plan: announce its files, store the lane cursors, commit."""
        if not self._announce(plan, written, rewind=rewind):
            return False
        if not self._store_cursors(plan, rewind=rewind):
            return False
        if not self._commit(plan, rewind=rewind):
            return False
        self._record(plan, written)
        return True

    def _with_cursors(self, plan: FlushPlan, lane: int, between_polls: bool) -> FlushPlan:
        """The drained ``plan`` with both lanes' cursors and, as offsets, their minimum."""
        cursors = self.book.drained(
            lane,
            {partition: offset for (_, partition), offset in plan.offsets.items()},
            (self.batch.held_offsets(), self.late_batch.held_offsets()),
            between_polls=between_polls,
        )
        offsets = {(self.topic, p): min(c.on_time, c.late) for p, c in cursors.items()}
        return replace(plan, lane=lane, cursors=cursors, offsets=offsets)

    def _store_cursors(self, plan: FlushPlan, *, rewind: bool = True) -> bool:
        """Before the commit: a cursor object per partition whose lanes differ (a lane holds
        rows above the committed offset). Where they are level the commit says it all, and
        an older object's cursors lie at or below the commit: harmless."""
        try:
            for partition, cursors in sorted(plan.cursors.items()):
                if cursors.on_time != cursors.late:
                    self.store.put(
                        cursor_key(self.topic, partition),
                        encode_cursors(self.topic, partition, cursors),
                    )
        except Exception as exc:
            return self._step_failed("storing the lane cursors", rewind, error=str(exc))
        return True

    def _drop_all(self) -> None:
        """Forget both lanes' batches and positions (they are read again from the commit);
        a poll being added stops (new generation)."""
        self._generation += 1
        self.metrics.dropped_rows.inc(self.batch.drop() + self.late_batch.drop())
        self.book.clear()

    def _make_durable(
        self, inflight: InFlight, attempts: int | None = None
    ) -> list[WrittenFile] | None:
        """The written files of the plan in flight; retries with backoff while the lake is down."""
        plan, done = inflight.plan, inflight.done
        attempt = 0
        while True:
            attempt += 1
            try:
                if inflight.future is not None:
                    future, inflight.future = inflight.future, None
                    written = future.result()
                else:
                    self._flush_dlq()
                    written = self.writer.write(plan, done)
                break
            except Exception as exc:
                self.metrics.write_failures.inc()
                self.metrics.lake_healthy.set(0)
                delay = self.health.failed(exc, self.clock(), self.store.location.url())
                if (attempts is not None and attempt >= attempts) or self.stopping:
                    log.warning(
                        "giving up the batch; it is read again from the committed offset",
                        extra={"rows": plan.rows, "error": str(exc)},
                    )
                    return None
                self._wait(delay, probe=True)
                if inflight.generation != self._generation:
                    return None  # revoked while waiting; the plan was dropped
        self.health.succeeded(self.clock())
        self.metrics.lake_healthy.set(1)
        return written

    def _flush_dlq(self) -> None:
        if self._producer is not None and self._dlq_pending:
            remaining = self._producer.flush(30)
            if remaining:
                raise RuntimeError(f"{remaining} DLQ record(s) not acknowledged")
            self._dlq_pending = 0

    def _wait(self, seconds: float, *, probe: bool = False) -> None:
        """Wait while serving the group: partitions paused, poll() keeps membership alive.

        With ``probe`` the lake is probed (one quick write, no retries) about once a second,
        and the wait ends as soon as a probe succeeds after one failed: the lake is back, so
        the batch is retried at once instead of after the rest of the backoff.
        """
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        deadline = self.clock() + seconds
        generation = self._generation
        seen_down = False
        next_probe = self.clock()
        try:
            while self.clock() < deadline and not self.stopping:
                if probe and self.clock() >= next_probe:
                    try:
                        self.store.probe()
                    except Exception:
                        seen_down = True
                    else:
                        if seen_down:
                            return
                    next_probe = self.clock() + PROBE_INTERVAL
                message = self.consumer.poll(min(0.2, max(0.0, deadline - self.clock())))
                if generation != self._generation:
                    return
                if message is not None and message.error() is None:
                    # fetched before the pause: put the position back so it is read again
                    from confluent_kafka import TopicPartition

                    self.consumer.seek(
                        TopicPartition(message.topic(), message.partition(), message.offset())
                    )
        finally:
            if generation == self._generation:
                assignment = self.consumer.assignment()
                if assignment:
                    self.consumer.resume(assignment)

    def _announce(
        self, plan: FlushPlan, written: list[WrittenFile], *, rewind: bool = True
    ) -> bool:
        """Name the plan's durable files in the file log (:mod:`hosepipe.file_log`), before
        its commit; on failure rewind, so the batch is written and announced again."""
        if not written:
            return True
        offsets = {partition: offset for (_, partition), offset in plan.offsets.items()}
        landed = [LandedFile(w.key, w.bytes, w.rows) for w in written]
        # ~150 B per file: records stay far below the broker's 1 MB message limit
        values = [
            encode_landed(self.topic, offsets, landed[i : i + FILES_PER_ANNOUNCEMENT])
            for i in range(0, len(landed), FILES_PER_ANNOUNCEMENT)
        ]
        errors: list[str] = []

        def delivered(error: object, _message: object) -> None:
            if error is not None:
                errors.append(str(error))

        try:
            if self._log_producer is None:
                # The commit waits for these records: lingering would only delay it.
                self._log_producer = make_producer(self.settings, **{"linger.ms": 0})
            for value in values:
                self._log_producer.produce(
                    self.file_log_topic, value, key=self.topic.encode(), on_delivery=delivered
                )
            if self._log_producer.flush(30):
                errors.append("not acknowledged within 30 s")
        except Exception as exc:  # BufferError, KafkaException
            errors.append(f"{type(exc).__name__}: {exc}")
        if not errors:
            return True
        return self._step_failed(
            "announcing the flushed files",
            rewind,
            topic=self.file_log_topic,
            files=len(written),
            error=errors[0],
        )

    def _commit(self, plan: FlushPlan, *, rewind: bool = True) -> bool:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in plan.offsets.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            return self._step_failed("the offset commit", rewind, error=str(exc))
        return True

    def _step_failed(self, what: str, rewind: bool, **extra: Any) -> bool:
        """A step after the files are durable failed: they stay (a replay overwrites them);
        rewind to the committed offsets unless the caller handles that. Returns False."""
        log.warning(
            f"{what} failed; files stay (a replay overwrites them), "
            "rewinding to the committed offsets",
            extra={"topic": self.topic, **extra},
        )
        if rewind:
            self._rewind()
        return False

    def _rewind(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self._generation += 1
        inflight, self._inflight = self._inflight, None
        if inflight is not None and inflight.future is not None:
            # Its files must be written before the replay writes the same names, and it must
            # not be committed past the rows the replay reads again: wait, then forget it.
            with contextlib.suppress(Exception):
                inflight.future.result()
        self._drop_all()
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for tp in self.consumer.committed(assignment, timeout=30):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _record(self, plan: FlushPlan, written: list[WrittenFile]) -> None:
        from confluent_kafka import TopicPartition

        m = self.metrics
        m.files.inc(len(written))
        m.rows.inc(plan.rows)
        m.bytes.inc(sum(w.bytes for w in written))
        m.flushes.labels(plan.reason.value).inc()
        m.consume_to_commit.observe(max(0.0, self.clock() - plan.opened_at))
        for (topic, partition), offset in plan.offsets.items():
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high is not None and high >= 0:
                m.consumer_lag.labels(topic, str(partition)).set(max(0, high - offset))
        log.info(
            "flushed",
            extra={
                "topic": self.topic,
                "lane": LANE_NAMES[plan.lane],
                "reason": plan.reason.value,
                "files": len(written),
                "rows": plan.rows,
                "offsets": {f"{p}": o for (_, p), o in sorted(plan.offsets.items())},
            },
        )

    def _update_gauges(self) -> None:
        self.metrics.open_partitions.set(
            self.batch.open_partitions + self.late_batch.open_partitions
        )
        self.metrics.buffered_rows.set(self.batch.rows + self.late_batch.rows)

    # ------------------------------------------------------------------ rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._first_records = True
        log.info(
            "partitions assigned",
            extra={"topic": self.topic, "partitions": [p.partition for p in partitions]},
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._generation += 1
        inflight, self._inflight = self._inflight, None
        if inflight is not None and inflight.future is not None:
            # never leave a write running for partitions another member will write: wait for
            # it (bounded by botocore's retries), then commit it if it landed
            try:
                written = inflight.future.result()
            except Exception as exc:
                log.warning(
                    "write in flight failed during a rebalance; it is read again",
                    extra={"topic": self.topic, "error": str(exc)},
                )
            else:
                self._finish(inflight.plan, written, rewind=False)
        dropped = self.batch.rows + self.late_batch.rows
        self._drop_all()
        log.info(
            "partitions revoked; uncommitted rows dropped (read again from committed offsets)",
            extra={
                "topic": self.topic,
                "partitions": [p.partition for p in partitions],
                "rows": dropped,
            },
        )


def run_sink(settings: Settings, pipeline: PipelineConfig) -> None:
    """Run a sink until SIGINT/SIGTERM, with the metrics endpoint when configured."""
    import signal

    from hosepipe.observability import serve_metrics

    runner = SinkRunner(settings, pipeline)
    # Every consumed message is a GC-tracked object, 10,000 per poll: with the default
    # thresholds the collector cost 0.7 µs per message (0.05 after; bench/sink_stage.py).
    settle_garbage_collector(50_000, 20, 20)
    server = None
    if settings.metrics_port:
        server = serve_metrics(settings.bind_host, settings.metrics_port, runner.health_check)

    def request_stop(signum: int, _frame: object) -> None:
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        runner.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        runner.run()
    finally:
        if server is not None:
            server.stop()
