"""The sink's pure core: which file a record goes to, and when a batch is flushed.

A *batch* holds every record consumed since the last commit, for every assigned Kafka
partition. Its records are grouped into *open files*, one per (topic, Kafka partition, lake
directory); a file's name is the offset of its first record (:func:`hosepipe.lake.data_file_key`).
Because every batch of a Kafka partition starts at that partition's committed offset, a
replay after a crash produces the same first offsets, hence the same names, and overwrites
instead of duplicating.

All rotation rules live in one method, :meth:`SinkBatch.flush_reason` (Firehose buffering
hints): rows, bytes (the Avro-encoded size of the values, like Firehose's buffer size), age
of the oldest record, and the number of open files. The whole batch is flushed at once, then
its offsets are committed: :meth:`SinkBatch.drain` hands over a :class:`FlushPlan` and starts
an empty batch.

Late events: a record is *late* when its event hour is older than the newest event hour seen
so far on its Kafka partition (since the partition was assigned). It still lands in its own
hour; it is only counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hosepipe.config import SinkConfig
from hosepipe.lake import check_partition_keys, data_file_key, hour_of, partition_path

TopicPartition = tuple[str, int]
Event = dict[str, Any]


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
    events: list[Event] = field(default_factory=list)

    @property
    def key(self) -> str:
        return data_file_key(self.directory, self.topic, self.partition, self.first_offset)


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
        self._files: dict[tuple[str, int, str], OpenFile] = {}
        self._next_offsets: dict[TopicPartition, int] = {}
        self._newest_hour: dict[TopicPartition, int] = {}
        self.rows = 0
        self.bytes = 0
        self.opened_at: float | None = None
        self.late = 0
        """Late records added since this object was created (a running total)."""

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
        tp = (topic, partition)
        expected = self._next_offsets.get(tp)
        if expected is not None and offset < expected:
            raise ValueError(
                f"{topic}[{partition}]: offset {offset} after {expected - 1} in one batch; "
                "a batch must be a contiguous range from the committed offset"
            )
        hour = hour_of(event["occurred_at"])
        newest = self._newest_hour.get(tp)
        late = newest is not None and hour < newest
        if newest is None or hour > newest:
            self._newest_hour[tp] = hour
        if late:
            self.late += 1
        directory = partition_path(event, self.partition_keys)
        slot = (topic, partition, directory)
        open_file = self._files.get(slot)
        if open_file is None:
            open_file = self._files[slot] = OpenFile(topic, partition, directory, offset)
        open_file.events.append(event)
        self._next_offsets[tp] = offset + 1
        self.rows += 1
        self.bytes += size
        if self.opened_at is None:
            self.opened_at = now
        return late

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
