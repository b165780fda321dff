"""Reading and replaying the dead-letter topic (``hosepipe dlq inspect|replay``).

Pure helpers (:func:`describe`, :func:`replay_target`) decide what a DLQ message says and
where it goes back to; :func:`read_topic` is the thin Kafka part (read a topic from the start
to its end as it is now).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from streams.core import HEADER_PREFIX, TRUNCATED_HEADER

if TYPE_CHECKING:
    from hosepipe.settings import Settings


@dataclass(frozen=True)
class DlqEntry:
    """One DLQ message, decoded for people."""

    offset: int
    partition: int
    key: bytes | None
    value: bytes | None
    reasons: dict[str, str]
    original_headers: list[tuple[str, bytes]]

    @property
    def source(self) -> str:
        return self.reasons.get("hosepipe.source", "")

    @property
    def failed_at(self) -> datetime | None:
        text = self.reasons.get("hosepipe.failed_at")
        if not text:
            return None
        return datetime.fromisoformat(text.replace("Z", "+00:00"))


def split_headers(headers: list[tuple[str, bytes]] | None) -> tuple[dict[str, str], list[Any]]:
    """Reason headers (``hosepipe.*``) as text, and the original record's own headers."""
    reasons: dict[str, str] = {}
    original: list[tuple[str, bytes]] = []
    for name, value in headers or []:
        if name.startswith(HEADER_PREFIX):
            reasons[name] = (value or b"").decode("utf-8", "replace")
        else:
            original.append((name, value))
    return reasons, original


def describe(entry: DlqEntry, preview: int = 200) -> dict[str, Any]:
    """A readable summary of a DLQ entry (value shown as text, cut at ``preview`` chars)."""
    value = entry.value or b""
    text = value.decode("utf-8", "replace")
    return {
        "dlq": f"{entry.partition}:{entry.offset}",
        "source": entry.source,
        "stage": entry.reasons.get("hosepipe.error.stage", ""),
        "error": entry.reasons.get("hosepipe.error.class", ""),
        "message": entry.reasons.get("hosepipe.error.message", ""),
        "original": "{}[{}]@{}".format(
            entry.reasons.get("hosepipe.original.topic", "?"),
            entry.reasons.get("hosepipe.original.partition", "?"),
            entry.reasons.get("hosepipe.original.offset", "?"),
        ),
        "failed_at": entry.reasons.get("hosepipe.failed_at", ""),
        "bytes": int(entry.reasons.get("hosepipe.original.bytes") or len(value)),
        "value": text if len(text) <= preview else text[:preview] + "…",
    }


def matches(entry: DlqEntry, source: str | None, since: datetime | None) -> bool:
    if source is not None and entry.source != source:
        return False
    if since is not None:
        failed_at = entry.failed_at
        if failed_at is None or failed_at < since:
            return False
    return True


def replay_target(entry: DlqEntry) -> str | None:
    """The raw topic the entry came from (None when the headers do not say, or when the value
    was truncated to fit the DLQ: replaying a cut record would only dead-letter it again)."""
    if entry.reasons.get(TRUNCATED_HEADER) == "true":
        return None
    return entry.reasons.get("hosepipe.original.topic") or None


class TopicMissingError(RuntimeError):
    """The topic to read does not exist (yet)."""


def read_topic(settings: Settings, topic: str, timeout_s: float = 10.0) -> Iterator[DlqEntry]:
    """Every message of ``topic`` from the beginning to its current end.

    The end is where partition-EOF is reported (from fetch responses, exact on Tansu too),
    which a reader faster than the topic's writers reaches also while they write (the stats
    topic gets a snapshot per worker every 2 s at most). Not the high-water mark from
    ListOffsets: Tansu with S3 storage answered 1 for a partition of 5 records, and ~1,870
    for one of 2,000 written one batch each (2026-12-05), which stopped such reads early.
    """
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from hosepipe.kafka import consumer_config

    reader = Consumer(
        consumer_config(
            settings,
            f"hosepipe-dlq-reader-{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True},
        )
    )
    try:
        metadata = reader.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise TopicMissingError(f"topic {topic!r} does not exist")
        # OFFSET_BEGINNING, not 0: on the embedded broker the oldest records may have been
        # trimmed, and Tansu 0.6 answers a fetch below the log start by repeating the kept
        # batches (a listing each) instead of "out of range"; librdkafka drops the
        # repeats, the offset check below any that get through (broker_trim.py).
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        pending = {p.partition for p in partitions}
        reader.assign(partitions)
        next_offset: dict[int, int] = {}
        idle = 0
        while pending:
            messages = reader.consume(1000, 1.0)
            if not messages:
                idle += 1
                if idle * 1.0 >= timeout_s:
                    raise RuntimeError(f"reading {topic!r} timed out")
                continue
            idle = 0
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition() or 0)
                        continue
                    raise RuntimeError(f"reading {topic!r}: {error}")
                partition = message.partition() or 0
                if partition not in pending:
                    continue
                offset = message.offset() or 0
                if offset < next_offset.get(partition, 0):
                    continue  # a batch the broker sent again
                next_offset[partition] = offset + 1
                reasons, original = split_headers(message.headers())  # type: ignore[arg-type]
                yield DlqEntry(
                    message.offset() or 0,
                    message.partition() or 0,
                    message.key(),
                    message.value(),
                    reasons,
                    original,
                )
    finally:
        reader.close()
