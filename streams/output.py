"""The output producer both engines share: its size limits and what to do with a message
over them.

A record the source accepts (``max_record_bytes``) can become a canonical event or a dead
letter bigger than librdkafka's default ``message.max.bytes`` (1,000,000). The worker's
per-message limit is therefore sized from the pipeline and lowered to what the canonical and
DLQ topics hold; a canonical event over it becomes a dead letter (``EventTooLarge``) and a
dead letter over it is cut (:func:`streams.core.fit_dead_letter`). Never a crash: a worker
that raised on such a record would meet it again after its restart, for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings
from streams.core import BatchResult, CanonicalOutput, DeadLetter, fit_dead_letter, message_bytes
from streams.errors import EventTooLarge

log = logging.getLogger(__name__)

MESSAGE_HEADROOM_BYTES = 1024 * 1024


def max_message_bytes(pipeline: PipelineConfig) -> int:
    """The worker producers' ``message.max.bytes`` before the topics' limits are known.

    A record of ``max_record_bytes`` can become a larger canonical event (payload JSON, id,
    attributes, Avro framing) and its dead letter carries reason headers, so librdkafka's
    default (1,000,000) would refuse what the sources accept: twice the largest
    ``max_record_bytes`` plus 1 MiB. Anything still larger is dead-lettered (events) or
    truncated with its size in a header (dead letters), never a crash.
    """
    biggest = max((s.max_record_bytes for s in pipeline.sources.values()), default=1_000_000)
    return min(max(1_000_000, 2 * biggest + MESSAGE_HEADROOM_BYTES), 1_000_000_000)


@dataclass(frozen=True, slots=True)
class OutputSize:
    """The output producer's ``batch.size`` and the per-message limit."""

    batch_bytes: int
    max_message_bytes: int

    def producer_options(self) -> dict[str, Any]:
        """librdkafka options of the canonical/DLQ producer.

        Delivery reports only for failures (a Python callback per delivered message measured
        ~7 % of the per-event cost): flush() returning 0 with no failure reported means every
        message was acknowledged. A batch's produce calls take ~20 ms per 10,000 events, so
        with ``linger.ms=50`` and a ``batch.size`` from the topics' limits it leaves as one
        message set per partition (one S3 object on the embedded broker: a third of the
        objects of ``linger.ms=5``, a quarter less S3 server CPU); flush() sends at once
        whatever the linger, so an idle input waits for nothing. librdkafka also caps a
        message set at ``message.max.bytes``; the per-message limit is checked before
        producing (:func:`set_aside_too_large`).
        """
        return {
            "linger.ms": 50,
            "batch.size": self.batch_bytes,
            "delivery.report.only.error": True,
            "message.max.bytes": max(self.max_message_bytes, self.batch_bytes),
        }


def size_output(settings: Settings, pipeline: PipelineConfig, wanted: int) -> OutputSize:
    """The output sizes from the canonical and DLQ topics' ``max.message.bytes`` on the
    broker, the per-message limit at most ``wanted``."""
    from hosepipe.kafka import (
        batch_bytes_for,
        make_admin,
        message_bytes_for,
        topic_max_message_bytes,
    )

    topics = [pipeline.topics.canonical, pipeline.topics.dlq]
    limits = topic_max_message_bytes(make_admin(settings), topics)
    size = OutputSize(batch_bytes_for(limits.values()), message_bytes_for(limits.values(), wanted))
    log.info(
        "output producer: batch.size %d, messages up to %d bytes (max.message.bytes of %s)",
        size.batch_bytes,
        size.max_message_bytes,
        ", ".join(f"{t}: {'unknown' if v is None else v}" for t, v in limits.items()),
        extra={"batch_bytes": size.batch_bytes, "max_message_bytes": size.max_message_bytes},
    )
    return size


def set_aside_too_large(
    result: BatchResult, values: Sequence[bytes], limit: int, now: int
) -> list[bytes]:
    """The encoded values of ``result.outputs`` that fit ``limit`` (as :func:`message_bytes`
    counts, framing included); the events that do not are moved from ``result.outputs`` to
    its dead letters (pure, ``result`` changed)."""
    # Per event, on the stream's hot path: two len() calls. A UTF-8 id is at most 4 bytes
    # a character, so only an event near the limit has its key encoded and counted exactly
    # (with the record framing: the producer's message.max.bytes equals the limit when the
    # topics report one, and librdkafka refuses a message ~40 bytes under it).
    room = limit - message_bytes(None, None, ())
    too_large = [
        (output, len(value))
        for output, value in zip(result.outputs, values, strict=True)
        if len(value) + 4 * len(output.event["event_id"]) > room
        and message_bytes(output.event["event_id"].encode(), value, ()) > limit
    ]
    if not too_large:
        return list(values)
    refused = {id(output) for output, _ in too_large}
    kept = [v for o, v in zip(result.outputs, values, strict=True) if id(o) not in refused]
    dead_letter_too_large(result, too_large, limit, now)
    return kept


def dead_letter_too_large(
    result: BatchResult, too_large: list[tuple[CanonicalOutput, int]], limit: int, now: int
) -> None:
    """Events refused for their size (``(output, encoded bytes)``): dead letters instead,
    the batch's counts moved with them (``result`` changed)."""
    refused = {id(output) for output, _ in too_large}
    result.outputs = [o for o in result.outputs if id(o) not in refused]
    for output, size in too_large:
        source = output.event["source"]
        result.dead_letters.append(
            DeadLetter(
                output.record,
                source,
                "encode",
                EventTooLarge.__name__,
                f"canonical event {output.event['event_id']!r} is {size} bytes, over the "
                f"worker's per-message limit {limit} (from the source's max_record_bytes and "
                "the canonical and DLQ topics' max.message.bytes; raise those carefully or "
                "shrink the payload)",
                now,
            )
        )
        counts = result.counts[source]
        counts.out -= 1
        counts.dead_lettered += 1


def dead_letter_message(
    letter: DeadLetter, limit: int
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The value and headers to produce for ``letter``: cut to fit ``limit`` if needed."""
    key, value, headers = letter.record.key, letter.record.value, letter.headers()
    if message_bytes(key, value, headers) > limit:
        return fit_dead_letter(key, value, headers, limit)
    return value, headers
