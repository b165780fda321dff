"""``select --follow`` reads the lake's file log (:mod:`hosepipe.file_log`) instead of listing.

:class:`FileLogReader` reads the records after a stored position to the end of each
partition (partition EOF, i.e. the high-water mark of the fetch responses) and returns the
files they name. ``None`` means the position cannot be used and the caller must list the
lake once: no position stored yet, the topic is missing, or the position lies past the
log's end (the topic was recreated).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from hosepipe.file_log import FileLogError, decode_landed
from hosepipe.kafka import make_consumer
from selector.plan import LakeFile

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from hosepipe.settings import Settings

log = logging.getLogger(__name__)

Positions = dict[int, int]
"""File-log partition → next offset to read."""


_OUTSIDE_THE_LOG = frozenset({KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE})
"""Errors of a position before the log's start (retention removed the records)."""


class FileLogUnavailable(Exception):
    """The log cannot be read right now (broker down, topic metadata failed)."""


@dataclass(frozen=True)
class LogRead:
    """What a read found: the announced files (in log order) and where the log ends now."""

    files: list[LakeFile]
    positions: Positions
    records: int


class FileLogReader:
    """A group-less reader of the file-log topic (positions live in PostgreSQL)."""

    def __init__(self, settings: Settings, topic: str, timeout: float = 10.0) -> None:
        self.topic = topic
        self.timeout = timeout
        # The group id is required by the client; nothing is ever committed to it.
        self._consumer: Consumer = make_consumer(
            settings,
            "hosepipe-selector-file-log",
            # an offset outside the log must not silently restart at the beginning
            **{"enable.partition.eof": True, "fetch.wait.max.ms": 50, "auto.offset.reset": "error"},
        )

    def close(self) -> None:
        self._consumer.close()

    def partitions(self) -> list[int] | None:
        """The log's partitions; None when the topic does not exist (no sink ran yet)."""
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=self.timeout)
        except Exception as exc:
            raise FileLogUnavailable(f"file log {self.topic!r}: metadata: {exc}") from exc
        described = metadata.topics.get(self.topic)
        if described is None or described.error is not None or not described.partitions:
            return None
        return sorted(described.partitions)

    def end_positions(self) -> Positions | None:
        """Where each partition ends now (its high-water mark); None without the topic.

        Taken before a full listing: a file announced after it is read from the log, one
        announced before it is durable, hence in the listing. The end comes from a fetch
        response (one fetch from the start of each partition, records discarded): Tansu's
        ListOffsets answers wrong on S3 storage.
        """
        partitions = self.partitions()
        if partitions is None:
            return None
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        try:
            ends: Positions = {}
            deadline = time.monotonic() + self.timeout
            while len(ends) < len(partitions):
                if time.monotonic() > deadline:
                    raise FileLogUnavailable(
                        f"file log {self.topic!r}: no fetch answer in {self.timeout:.0f} s"
                    )
                self._consumer.consume(1000, 0.05)
                for partition in partitions:
                    high = self._high_water_mark(partition)
                    if high is not None:
                        ends[partition] = high
            return ends
        finally:
            self._consumer.unassign()

    def read(self, positions: Positions) -> LogRead | None:
        """The files announced from ``positions`` to the end; None if they are unusable."""
        partitions = self.partitions()
        if partitions is None or set(positions) != set(partitions):
            return None
        reached = dict(positions)
        todo = set(partitions)
        files: list[LakeFile] = []
        records = 0
        self._consumer.assign([TopicPartition(self.topic, p, positions[p]) for p in partitions])
        deadline = time.monotonic() + self.timeout
        try:
            while todo:
                if time.monotonic() > deadline:
                    raise FileLogUnavailable(
                        f"file log {self.topic!r}: end not reached in {self.timeout:.0f} s"
                    )
                for message in self._consumer.consume(1000, 0.05):
                    partition = message.partition()
                    if partition not in todo:
                        continue  # fetched past the end seen at EOF; read next pass
                    error = message.error()
                    if error is not None:
                        if error.code() in _OUTSIDE_THE_LOG:
                            log.info(
                                "file-log position outside the log; listing the lake once",
                                extra={
                                    "topic": self.topic,
                                    "partition": partition,
                                    "position": reached[partition],
                                    "error": str(error),
                                },
                            )
                            return None
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise FileLogUnavailable(f"file log {self.topic!r}: {error}")
                        if message.offset() >= reached[partition]:
                            reached[partition] = message.offset()
                            todo.discard(partition)
                        continue
                    if message.offset() < reached[partition]:
                        continue  # read already
                    if message.offset() > reached[partition]:
                        # The sink's producer is neither transactional nor compacted, so
                        # a gap means records were removed before they were read: the
                        # embedded broker's trim, which fetches past removed records
                        # instead of answering "out of range". Their files are unknown.
                        log.info(
                            "file-log records before this one were removed unread; "
                            "listing the lake once",
                            extra={
                                "topic": self.topic,
                                "partition": partition,
                                "position": reached[partition],
                                "first_offset": message.offset(),
                            },
                        )
                        return None
                    where = f"file log {self.topic!r} partition {partition} offset "
                    where += str(message.offset())
                    try:
                        landed = decode_landed(message.value(), where)
                    except FileLogError as exc:
                        log.warning("skipping an unreadable file-log record: %s", exc)
                        landed = []
                    files.extend(LakeFile(f.path, f.bytes) for f in landed)
                    records += 1
                    reached[partition] = message.offset() + 1
                for partition in list(todo):
                    high = self._high_water_mark(partition)
                    if high is not None and reached[partition] > high:
                        log.info(
                            "file-log position past the log's end; listing the lake once",
                            extra={
                                "topic": self.topic,
                                "partition": partition,
                                "position": reached[partition],
                                "end": high,
                            },
                        )
                        return None
        finally:
            self._consumer.unassign()
        return LogRead(files, reached, records)

    def _high_water_mark(self, partition: int) -> int | None:
        """The partition's end as the last fetch response gave it (None before any fetch)."""
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), cached=True
        )
        return high if high is not None and high >= 0 else None
