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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn

import pyarrow as pa
import pyarrow.compute as pc

from hosepipe.config import SinkConfig
from hosepipe.lake import (
    END_VALID_HOUR,
    FIRST_VALID_HOUR,
    MICROS_PER_HOUR,
    check_partition_keys,
    data_file_key,
    events_to_table,
    key_segment,
    time_partition,
)

if TYPE_CHECKING:
    from sink.lanes import StoredCursors

TopicPartition = tuple[str, int]
Event = dict[str, Any]
INVALID_HOUR = -(2**62)
"""Slot hour of every event outside years 1..9999 (``time_partition`` maps it to dt=invalid)."""
_INVALID_SPAN = END_VALID_HOUR - FIRST_VALID_HOUR
"""Hour of invalid rows counted from ``FIRST_VALID_HOUR`` (one past the last valid hour)."""
_SLOT_STRIDE = 1 << 27
"""Partition multiplier of a (partition, hour) slot code; above every hour span."""
_FIRST_MICROS = FIRST_VALID_HOUR * MICROS_PER_HOUR
_END_MICROS = END_VALID_HOUR * MICROS_PER_HOUR
_MAX_RUNS = 64
"""Rows of a call in at most this many runs (or 1/16 of the rows) become zero-copy slices."""


class FlushReason(StrEnum):
    """Why a batch was flushed (the ``reason`` label of the flush metrics)."""

    ROWS = "rows"
    BYTES = "bytes"
    AGE = "age"
    PARTITIONS = "partitions"
    SHUTDOWN = "shutdown"
    IDLE = "idle"
    """The late lane, when a poll found nothing new and the on-time lane is empty."""


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
    lane: int = 0
    """Which lane's batch this is (:mod:`sink.lanes`): 0 on time, 1 late."""
    cursors: dict[int, StoredCursors] = field(default_factory=dict)
    """Per Kafka partition, both lanes' cursors once this plan is durable; empty with one
    lane (``offsets`` says it all)."""


class SinkBatch:
    """State machine of the records buffered since the last commit, for all partitions."""

    def __init__(self, hints: BufferingHints, partition_keys: tuple[str, ...] = ()) -> None:
        check_partition_keys(partition_keys)
        self.hints = hints
        self.partition_keys = partition_keys
        self._files: dict[tuple[Any, ...], OpenFile] = {}
        self._next_offsets: dict[TopicPartition, int] = {}
        self._first_offsets: dict[TopicPartition, int] = {}
        self._newest_hour: dict[TopicPartition, int] = {}
        self.rows = 0
        self.bytes = 0
        self.opened_at: float | None = None
        self.late = 0
        """Late records added since this object was created (a running total)."""
        self.invalid_time = 0
        """Records with ``occurred_at`` outside years 1..9999 (a running total)."""
        self.total_rows = 0
        """Records added since this object was created (a running total)."""

    # ------------------------------------------------------------------ state

    @property
    def open_partitions(self) -> int:
        """Open files = distinct (Kafka partition, lake directory) pairs in the batch."""
        return len(self._files)

    @property
    def empty(self) -> bool:
        return self.rows == 0

    def held_offsets(self) -> dict[int, int]:
        """Per Kafka partition in the batch, the offset of its first buffered record."""
        return {partition: offset for (_, partition), offset in self._first_offsets.items()}

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
        partitions: Sequence[int] | pa.Array,
        offsets: Sequence[int] | pa.Array,
        table: pa.Table,
        sizes: Sequence[int] | pa.Array,
        now: float,
        *,
        stop_on_rule: bool = True,
    ) -> int:
        """Buffer the rows of ``table`` (canonical schema) in order; returns how many.

        ``partitions``/``offsets``/``sizes`` give each row's Kafka coordinates and encoded
        size (lists or int64 Arrow arrays). With ``stop_on_rule`` it stops right after the
        row that makes a size rule of :meth:`flush_reason` fire; the caller flushes, then
        adds the rest.

        Column-wise: the rows are grouped into open files by one hash over (Kafka partition,
        event hour[, keys]) (:func:`group_rows`), the row at which a size rule fires is found
        from cumulative sums, late records from a running maximum per Kafka partition; Python
        only visits the few files and Kafka partitions of a call.
        """
        count = table.num_rows
        if count == 0:
            return 0
        parts, offs, lengths = _int64s(partitions), _int64s(offsets), _int64s(sizes)
        if not len(parts) == len(offs) == len(lengths) == count:
            raise ValueError("partitions, offsets, sizes and the table differ in length")
        groups = group_rows(table, parts, self.partition_keys)
        if stop_on_rule:
            last = self._last_row_before_rule(groups, lengths)
            if last + 1 < count:
                count = last + 1
                table, parts, offs = (
                    table.slice(0, count),
                    parts.slice(0, count),
                    offs.slice(0, count),
                )
                lengths = lengths.slice(0, count)
                groups = group_rows(table, parts, self.partition_keys)
        self._check_offsets_and_count_late(topic, parts, offs, groups)
        files = self._files
        first_offsets = offs.take(pa.array(groups.first_rows, pa.int64())).to_pylist()
        for slot, first_offset in zip(groups.slots, first_offsets, strict=True):
            if slot not in files:
                directory = time_partition(slot[1])
                if self.partition_keys:
                    segments = [
                        key_segment(k, v)
                        for k, v in zip(self.partition_keys, slot[2:], strict=True)
                    ]
                    directory = "/".join([*segments, directory])
                files[slot] = OpenFile(topic, slot[0], directory, first_offset)
        for index, piece in groups.pieces(table):
            open_file = files[groups.slots[index]]
            open_file.chunks.append(piece)
            open_file.rows += piece.num_rows
        self.invalid_time += groups.invalid
        self.rows += count
        self.total_rows += count
        self.bytes += pc.sum(lengths).as_py()
        if self.opened_at is None:
            self.opened_at = now
        return count

    def _last_row_before_rule(self, groups: RowGroups, lengths: pa.Int64Array) -> int:
        """Index of the first row after which a size rule fires (the last row if none does):
        the size rules of :meth:`flush_reason`, as if checked after every row."""
        hints = self.hints
        last = len(lengths) - 1
        cut = min(last, max(0, hints.max_rows - self.rows - 1))
        room = hints.max_bytes - self.bytes
        totals = pc.cumulative_sum(lengths)
        if totals[last].as_py() >= room:
            cut = min(cut, pc.index(pc.greater_equal(totals, room), True).as_py())
        files = self._files
        open_files = len(files)
        if open_files >= hints.max_open_partitions:
            return 0
        for slot, first_row in zip(groups.slots, groups.first_rows, strict=True):
            if first_row > cut:
                break
            if slot not in files:
                open_files += 1
                if open_files >= hints.max_open_partitions:
                    return first_row
        return cut

    def _check_offsets_and_count_late(
        self, topic: str, parts: pa.Int64Array, offs: pa.Int64Array, groups: RowGroups
    ) -> None:
        """Per Kafka partition: offsets increase (from the batch's next offset), late rows
        counted (event hour below the newest seen on the partition), newest hour kept."""
        distinct = pc.unique(parts).to_pylist()
        for partition in distinct:
            tp = (topic, partition)
            if len(distinct) == 1:
                mine, hours, valid = offs, groups.hours, groups.valid
            else:
                mask = pc.equal(parts, partition)
                mine, hours = offs.filter(mask), groups.hours.filter(mask)
                valid = None if groups.valid is None else groups.valid.filter(mask)
            first = mine[0].as_py()
            expected = self._next_offsets.get(tp)
            if expected is not None and first < expected:
                _offset_error(topic, partition, first, expected - 1)
            if len(mine) > 1:
                steps = pc.pairwise_diff(mine)  # steps[i] = mine[i] - mine[i - 1]; null first
                if pc.min(steps).as_py() <= 0:
                    at = pc.index(pc.less_equal(steps, 0), True).as_py()
                    _offset_error(topic, partition, mine[at].as_py(), mine[at - 1].as_py())
            self._next_offsets[tp] = mine[-1].as_py() + 1
            self._first_offsets.setdefault(tp, first)
            if valid is not None:
                hours = hours.filter(valid)
            if len(hours) == 0:
                continue
            newest = self._newest_hour.get(tp)
            floor = -1 if newest is None else newest - FIRST_VALID_HOUR
            running = pc.cumulative_max(hours)
            before = pc.max_element_wise(
                pa.concat_arrays([pa.array([floor], pa.int64()), running.slice(0, len(hours) - 1)]),
                floor,
            )
            self.late += pc.sum(pc.less(hours, before)).as_py()
            self._newest_hour[tp] = max(floor, running[-1].as_py()) + FIRST_VALID_HOUR

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
        self._first_offsets = {}
        self.rows = 0
        self.bytes = 0
        self.opened_at = None


# --------------------------------------------------------------------------- grouping


@dataclass(frozen=True)
class RowGroups:
    """The rows of one call grouped into open files (slots), in order of first appearance."""

    slots: list[tuple[Any, ...]]
    """Per slot: ``(Kafka partition, event hour or INVALID_HOUR, *partition key values)``."""
    first_rows: list[int]
    """Per slot, the row where it first appears (ascending)."""
    hours: pa.Int64Array
    """Per row, the event hour counted from ``FIRST_VALID_HOUR`` (invalid rows: past the end)."""
    valid: pa.BooleanArray | None
    """Per row, whether ``occurred_at`` lies in years 1..9999; None when all do."""
    invalid: int
    runs: list[tuple[int, int, int]] | None
    """``(start, length, slot)`` of each run of rows in one slot, when they are few."""
    order: pa.Int64Array | None
    """Otherwise the rows sorted by slot (stable), with ``counts`` rows per slot."""
    counts: list[int]

    def pieces(self, table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
        """``(slot, rows)`` in row order per slot: zero-copy slices of runs, or one ``take``."""
        if self.runs is not None:
            for start, length, slot in self.runs:
                yield slot, table.slice(start, length)
            return
        assert self.order is not None
        ordered = table.take(self.order)
        start = 0
        for slot, length in enumerate(self.counts):
            yield slot, ordered.slice(start, length)
            start += length


def group_rows(table: pa.Table, partitions: pa.Int64Array, keys: Sequence[str]) -> RowGroups:
    """Assign every row to its slot (Kafka partition, event hour, key values), vectorized.

    The event hour is ``occurred_at`` floor-divided by an hour, counted from year 1 so that
    it is never negative; rows outside years 1..9999 get one hour past the end. Partition and
    hour make one int64 code; each partition key's dictionary index is folded in by
    re-encoding. ``dictionary_encode`` numbers the slots in order of first appearance.
    """
    count = table.num_rows
    occurred = _column(table, "occurred_at").view(pa.int64())
    bounds = pc.min_max(occurred)
    valid: pa.BooleanArray | None = None
    invalid = 0
    if bounds["min"].as_py() >= _FIRST_MICROS and bounds["max"].as_py() < _END_MICROS:
        hours = pc.divide(pc.subtract(occurred, _FIRST_MICROS), MICROS_PER_HOUR)
    else:
        valid = pc.and_(pc.greater_equal(occurred, _FIRST_MICROS), pc.less(occurred, _END_MICROS))
        clamped = pc.if_else(valid, occurred, _FIRST_MICROS)
        hours = pc.if_else(
            valid,
            pc.divide(pc.subtract(clamped, _FIRST_MICROS), MICROS_PER_HOUR),
            _INVALID_SPAN,
        )
        invalid = count - pc.sum(valid).as_py()
    encoded = pc.dictionary_encode(pc.add(pc.multiply(partitions, _SLOT_STRIDE), hours))
    key_columns = []
    for key in keys:
        column = pc.fill_null(_column(table, key), "")  # "" and null share HIVE_NULL
        key_columns.append(column)
        by_key = pc.dictionary_encode(column)
        encoded = pc.dictionary_encode(
            pc.add(
                pc.multiply(encoded.indices.cast(pa.int64()), len(by_key.dictionary)),
                by_key.indices.cast(pa.int64()),
            )
        )
    slot_of_row = encoded.indices
    slot_count = len(encoded.dictionary)
    runs: list[tuple[int, int, int]] | None = None
    order: pa.Int64Array | None = None
    counts: list[int] = []
    if count > 1:
        changes = pc.indices_nonzero(
            pc.not_equal(slot_of_row.slice(1), slot_of_row.slice(0, count - 1))
        )
    else:
        changes = pa.array([], pa.uint64())
    if _MAX_RUNS and len(changes) < max(_MAX_RUNS, count // 16):
        starts = [0, *(pc.add(changes, 1).to_pylist())]
        run_slots = slot_of_row.take(pa.array(starts, pa.int64())).to_pylist()
        ends = [*starts[1:], count]
        runs = [
            (start, end - start, slot)
            for start, end, slot in zip(starts, ends, run_slots, strict=True)
        ]
        first_rows = [-1] * slot_count
        for start, _, slot in runs:
            if first_rows[slot] < 0:
                first_rows[slot] = start
    else:
        order = pc.sort_indices(slot_of_row)  # stable: row order within a slot
        tally = pc.value_counts(slot_of_row)
        counts = [0] * slot_count
        for slot, rows in zip(
            tally.field("values").to_pylist(), tally.field("counts").to_pylist(), strict=True
        ):
            counts[slot] = rows
        offsets = [0] * slot_count
        for slot in range(1, slot_count):
            offsets[slot] = offsets[slot - 1] + counts[slot - 1]
        first_rows = order.take(pa.array(offsets, pa.int64())).to_pylist()
    at = pa.array(first_rows, pa.int64())
    slot_parts = partitions.take(at).to_pylist()
    slot_hours = [
        INVALID_HOUR if hour == _INVALID_SPAN else hour + FIRST_VALID_HOUR
        for hour in hours.take(at).to_pylist()
    ]
    slot_keys = [[value or None for value in column.take(at).to_pylist()] for column in key_columns]
    slots = [
        (partition, hour, *(values[slot] for values in slot_keys))
        for slot, (partition, hour) in enumerate(zip(slot_parts, slot_hours, strict=True))
    ]
    return RowGroups(slots, first_rows, hours, valid, invalid, runs, order, counts)


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _int64s(values: Sequence[int] | pa.Array) -> pa.Int64Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == pa.int64() else values.cast(pa.int64())
    return pa.array(values, pa.int64())


def _offset_error(topic: str, partition: int, offset: int, previous: int) -> NoReturn:
    raise ValueError(
        f"{topic}[{partition}]: offset {offset} after {previous} in one batch; "
        "a batch must be a contiguous range from the committed offset"
    )
