"""The sink's pure core: which file a record goes to, and when a batch is flushed.

A *batch* holds every record consumed since the last commit, for every assigned Kafka
partition. Its records are grouped into *open files*, one per (topic, Kafka partition, lake
directory); a file's name is the offset of its first record (:func:`hosepipe.lake.data_file_key`).
Because every batch of a Kafka partition starts at that partition's committed offset, a
replay after a crash produces the same first offsets, hence the same names, and overwrites
instead of duplicating.

All rotation rules live in one method, :meth:`SinkBatch.flush_reason` (Firehose buffering
hints): rows, bytes (the Avro-encoded size of the values, like Firehose's buffer size), age
of the oldest record, and the number of open files (:meth:`SinkBatch.add_table` repeats the
three size comparisons inline, because it checks them after every record). The whole batch
is flushed at once, then its offsets are committed: :meth:`SinkBatch.drain` hands over a
:class:`FlushPlan` and starts an empty batch.

Records are buffered as Arrow tables (slices of each decoded poll, per open file), not as
event dicts: compact in memory, and the flush only concatenates and encodes.
:meth:`SinkBatch.add_table` takes a decoded poll at once and stops at the record after which
a size rule fires, so the rules hold exactly, per record.

Late events: a record is *late* when its event hour is older than the newest event hour seen
so far on its Kafka partition (since the partition was assigned). It still lands in its own
hour; it is only counted. Events whose ``occurred_at`` lies outside years 1..9999 land under
``dt=invalid/hour=00`` (:data:`hosepipe.lake.INVALID_TIME_PARTITION`) and are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pyarrow as pa

from hosepipe.config import SinkConfig
from hosepipe.lake import (
    MICROS_PER_HOUR,
    check_partition_keys,
    data_file_key,
    events_to_table,
    key_segment,
    time_partition,
    valid_hour,
)

TopicPartition = tuple[str, int]
Event = dict[str, Any]
INVALID_HOUR = -(2**62)
"""Slot hour of every event outside years 1..9999 (``time_partition`` maps it to dt=invalid)."""


class FlushReason(StrEnum):
    """Why a batch was flushed (the ``reason`` label of the flush metrics)."""

    ROWS = "rows"
    BYTES = "bytes"
    AGE = "age"
    PARTITIONS = "partitions"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class BufferingHints:
    """When to flush: the first limit reached wins."""

    max_rows: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    max_age_seconds: float = 60.0
    max_open_partitions: int = 500

    @classmethod
    def from_config(cls, config: SinkConfig) -> BufferingHints:
        return cls(
            max_rows=config.max_rows,
            max_bytes=config.max_bytes,
            max_age_seconds=config.max_age.total_seconds(),
            max_open_partitions=config.max_open_partitions,
        )


@dataclass
class OpenFile:
    """Records of one (topic, Kafka partition, lake directory) in the current batch."""

    topic: str
    partition: int
    directory: str
    first_offset: int
    chunks: list[pa.Table] = field(default_factory=list)
    """Pieces of the file in offset order, each in the canonical Arrow schema."""
    rows: int = 0

    @property
    def key(self) -> str:
        return data_file_key(self.directory, self.topic, self.partition, self.first_offset)

    def table(self) -> pa.Table:
        """The file's rows as one table (chunks are concatenated, not copied)."""
        return pa.concat_tables(self.chunks)


@dataclass(frozen=True)
class FlushPlan:
    """A drained batch: files to make durable, then offsets to commit (next offset to read)."""

    reason: FlushReason
    files: list[OpenFile]
    offsets: dict[TopicPartition, int]
    rows: int
    bytes: int
    opened_at: float
    """Clock value when the batch's first record was added (consume time of the oldest)."""


class SinkBatch:
    """State machine of the records buffered since the last commit, for all partitions."""

    def __init__(self, hints: BufferingHints, partition_keys: tuple[str, ...] = ()) -> None:
        check_partition_keys(partition_keys)
        self.hints = hints
        self.partition_keys = partition_keys
        self._files: dict[tuple[Any, ...], OpenFile] = {}
        self._next_offsets: dict[TopicPartition, int] = {}
        self._newest_hour: dict[TopicPartition, int] = {}
        self.rows = 0
        self.bytes = 0
        self.opened_at: float | None = None
        self.late = 0
        """Late records added since this object was created (a running total)."""
        self.invalid_time = 0
        """Records with ``occurred_at`` outside years 1..9999 (a running total)."""

    # ------------------------------------------------------------------ state

    @property
    def open_partitions(self) -> int:
        """Open files = distinct (Kafka partition, lake directory) pairs in the batch."""
        return len(self._files)

    @property
    def empty(self) -> bool:
        return self.rows == 0

    def add(
        self, topic: str, partition: int, offset: int, event: Event, size: int, now: float
    ) -> bool:
        """Buffer one record; returns whether it is late. ``now`` is the consume time."""
        late = self.late
        self.add_many(topic, [partition], [offset], [event], [size], now, stop_on_rule=False)
        return self.late > late

    def add_many(
        self,
        topic: str,
        partitions: Sequence[int],
        offsets: Sequence[int],
        events: Sequence[Event],
        sizes: Sequence[int],
        now: float,
        *,
        stop_on_rule: bool = True,
    ) -> int:
        """Buffer event dicts in order; see :meth:`add_table`."""
        table = events_to_table(events)
        return self.add_table(
            topic, partitions, offsets, table, sizes, now, stop_on_rule=stop_on_rule
        )

    def add_table(
        self,
        topic: str,
        partitions: Sequence[int],
        offsets: Sequence[int],
        table: pa.Table,
        sizes: Sequence[int],
        now: float,
        *,
        stop_on_rule: bool = True,
    ) -> int:
        """Buffer the rows of ``table`` (canonical schema) in order; returns how many.

        ``partitions``/``offsets``/``sizes`` give each row's Kafka coordinates and encoded
        size. With ``stop_on_rule`` it stops right after the row that makes a size rule of
        :meth:`flush_reason` fire; the caller flushes, then adds the rest.
        """
        files = self._files
        next_offsets = self._next_offsets
        newest_hours = self._newest_hour
        keys = self.partition_keys
        hints = self.hints
        max_rows, max_bytes = hints.max_rows, hints.max_bytes
        max_files = hints.max_open_partitions
        hours = table.column("occurred_at").cast(pa.int64()).to_pylist()
        key_values = [table.column(k).to_pylist() for k in keys]
        rows_of: dict[tuple[Any, ...], list[int]] = {}
        added = 0
        for row, (partition, offset, size, occurred_at) in enumerate(
            zip(partitions, offsets, sizes, hours, strict=True)
        ):
            tp = (topic, partition)
            expected = next_offsets.get(tp)
            if expected is not None and offset < expected:
                raise ValueError(
                    f"{topic}[{partition}]: offset {offset} after {expected - 1} in one batch; "
                    "a batch must be a contiguous range from the committed offset"
                )
            hour = occurred_at // MICROS_PER_HOUR
            if not valid_hour(hour):
                self.invalid_time += 1
                hour = INVALID_HOUR
            else:
                newest = newest_hours.get(tp)
                if newest is None or hour > newest:
                    newest_hours[tp] = hour
                elif hour < newest:
                    self.late += 1
            slot = (
                (partition, hour, *(values[row] or None for values in key_values))
                if keys
                else (partition, hour)
            )
            rows = rows_of.get(slot)
            if rows is None:
                rows = rows_of[slot] = []
                if slot not in files:
                    directory = time_partition(hour)
                    if keys:
                        segments = [
                            key_segment(k, v[row]) for k, v in zip(keys, key_values, strict=True)
                        ]
                        directory = "/".join([*segments, directory])
                    files[slot] = OpenFile(topic, partition, directory, offset)
            rows.append(row)
            next_offsets[tp] = offset + 1
            self.rows += 1
            self.bytes += size
            added += 1
            if self.opened_at is None:
                self.opened_at = now
            # the size rules of flush_reason(), inlined: this runs once per record
            if stop_on_rule and (
                self.rows >= max_rows or self.bytes >= max_bytes or len(files) >= max_files
            ):
                break
        for slot, rows in rows_of.items():
            open_file = files[slot]
            if len(rows) == rows[-1] - rows[0] + 1:  # contiguous: a zero-copy slice
                piece = table.slice(rows[0], len(rows))
            else:
                piece = table.take(pa.array(rows, pa.int64()))
            open_file.chunks.append(piece)
            open_file.rows += len(rows)
        return added

    def flush_reason(self, now: float | None = None) -> FlushReason | None:
        """The one rotation rule: why the batch must be flushed now, or None.

        Size rules are checked after every record (``now`` omitted); the age rule only when
        a clock value is given, which the runner does after each poll, so ``max_age: 0``
        flushes once per poll instead of once per record.
        """
        if self.rows == 0:
            return None
        hints = self.hints
        if self.rows >= hints.max_rows:
            return FlushReason.ROWS
        if self.bytes >= hints.max_bytes:
            return FlushReason.BYTES
        if len(self._files) >= hints.max_open_partitions:
            return FlushReason.PARTITIONS
        if (
            now is not None
            and self.opened_at is not None
            and now - self.opened_at >= hints.max_age_seconds
        ):
            return FlushReason.AGE
        return None

    def drain(self, reason: FlushReason) -> FlushPlan:
        """Hand over the batch as a plan and start an empty one (lateness state is kept)."""
        plan = FlushPlan(
            reason=reason,
            files=sorted(self._files.values(), key=lambda f: (f.topic, f.partition, f.directory)),
            offsets=dict(self._next_offsets),
            rows=self.rows,
            bytes=self.bytes,
            opened_at=self.opened_at if self.opened_at is not None else 0.0,
        )
        self._reset()
        return plan

    def drop(self) -> int:
        """Forget the buffered records and every partition's history (on revoke); rows lost."""
        dropped = self.rows
        self._reset()
        self._newest_hour.clear()
        return dropped

    def _reset(self) -> None:
        self._files = {}
        self._next_offsets = {}
        self.rows = 0
        self.bytes = 0
        self.opened_at = None
