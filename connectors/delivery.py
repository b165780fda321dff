"""Produce to Kafka and await the broker's acknowledgement from asyncio.

confluent-kafka reports delivery through callbacks run inside ``poll()``. A background thread
polls; each batch of records carries one counter and one asyncio future, so the event loop is
woken once per batch rather than once per record. Records are answered to clients only after
their future resolves, i.e. after acks=all from the idempotent producer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.records import RawRecord
from hosepipe import kafka
from hosepipe.settings import Settings

# On top of hosepipe.kafka's durable defaults (idempotent, acks=all): a short linger, since
# every HTTP response waits for its records' delivery; a deep local queue for bursts, and
# room for a 1,000 KiB record plus headers (Firehose's per-record limit).
DELIVERY_TUNING: dict[str, Any] = {
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 200_000,
    "queue.buffering.max.kbytes": 262_144,
    "message.timeout.ms": 60_000,
    "message.max.bytes": 1_100_000,
}


def producer_config(settings: Settings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """librdkafka configuration of a durable producer from the settings."""
    return kafka.producer_config(
        settings, **{"client.id": client_id, **DELIVERY_TUNING, **overrides}
    )


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where a record landed."""

    partition: int
    offset: int


class Throttled(Exception):
    """The producer's local queue is full: the caller should answer 429/503 with Retry-After."""


DeliveryResult: TypeAlias = Delivered | KafkaError | Throttled


class _Batch:
    """Results of one ``send`` call, filled in by delivery callbacks on the poll thread."""

    __slots__ = ("future", "lock", "loop", "pending", "results")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.results: list[DeliveryResult | None] = [None] * size
        # One extra count held while records are being queued, so the poll thread cannot
        # resolve the batch before the last record is even produced.
        self.pending = size + 1
        self.lock = threading.Lock()

    def _release(self, count: int) -> None:
        with self.lock:
            self.pending -= count
            done = self.pending == 0
        if done:
            self.loop.call_soon_threadsafe(_resolve, self.future)

    def settle(self, index: int, result: DeliveryResult) -> None:
        """Record one delivery report (called on the poll thread)."""
        self.results[index] = result
        self._release(1)

    def refuse_from(self, index: int, reason: str) -> None:
        """Mark records ``index..`` as not queued (local queue full)."""
        for rest in range(index, len(self.results)):
            self.results[rest] = Throttled(reason)
        self._release(len(self.results) - index)

    def queued_all(self) -> None:
        """Every record is queued or refused: drop the setup count."""
        self._release(1)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class DeliveryProducer:
    """An idempotent, acks=all producer whose sends are awaited until the broker confirms."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._running = True
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-delivery", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings, client_id: str) -> DeliveryProducer:
        return cls(producer_config(settings, client_id))

    def _poll_loop(self) -> None:
        while self._running:
            self._producer.poll(0.05)

    def queued(self) -> int:
        """Records waiting in the local queue (not yet acknowledged)."""
        return len(self._producer)

    async def send(
        self,
        topic: str,
        records: Sequence[RawRecord],
        headers: list[tuple[str, bytes]] | None = None,
    ) -> list[DeliveryResult]:
        """Produce ``records`` and wait until each is acknowledged or has failed.

        A record that does not fit the local queue is answered :class:`Throttled` at once;
        the records before it are still delivered and awaited.
        """
        if not records:
            return []
        batch = _Batch(asyncio.get_running_loop(), len(records))
        produce = self._producer.produce
        for index, record in enumerate(records):

            def on_delivery(
                err: KafkaError | None, msg: Message, index: int = index, batch: _Batch = batch
            ) -> None:
                if err is not None:
                    batch.settle(index, err)
                else:
                    batch.settle(index, Delivered(msg.partition() or 0, msg.offset() or 0))

            try:
                produce(topic, record.value, record.key, on_delivery=on_delivery, headers=headers)
            except BufferError:
                batch.refuse_from(index, "the producer queue is full")
                break
            except KafkaException as exc:  # e.g. larger than message.max.bytes
                batch.settle(index, exc.args[0])
        batch.queued_all()
        await batch.future
        return [r if r is not None else KafkaError(KafkaError._FAIL) for r in batch.results]

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for everything queued; returns how many records are still undelivered."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued, then stop the poll thread."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        self._running = False
        self._thread.join(max(0.1, deadline - time.monotonic()))
