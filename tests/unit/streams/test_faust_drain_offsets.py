"""Offset bookkeeping of the faust engine's batched drain (no broker: nothing is started).

A batch's offsets count as done only once its handler returned; faust's commit path
(``_filter_committable_offsets``) then picks the offset after the batch's last record of
each partition. A failing handler marks nothing, and the in-flight marker that makes
faust's ``wait_empty`` wait for the batch is always removed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition

from streams.faust_app import BatchDrainApp, BatchDrainConsumer


def record(topic: str, partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic, partition, offset, 1_700_000_000_000, 0, b"k", b"v", None, 1, 1, ()
    )


@pytest.fixture
async def consumer() -> AsyncIterator[BatchDrainConsumer]:
    app = BatchDrainApp("drain-offsets", broker="kafka://127.0.0.1:1", autodiscover=False)
    made = app.consumer
    assert isinstance(made, BatchDrainConsumer)
    yield made
    made._thread.thread_loop.close()  # the consumer thread's loop (never started)


async def test_offsets_are_done_only_after_the_handler_returned(
    consumer: BatchDrainConsumer,
) -> None:
    from streams.faust_app import _InFlight

    seen: list[int] = []
    pending: list[Any] = []

    async def handler(batch: list[Any]) -> None:
        # while the batch runs nothing is committable and faust sees a message in flight
        pending.append(set(consumer._filter_tps_with_pending_acks()))
        pending.append(len(consumer._unacked_messages))
        seen.extend(r.offset for r in batch)

    chunk = [record("raw", 0, o) for o in range(10, 15)] + [record("raw", 1, 7)]
    marker = _InFlight()
    consumer._unacked_messages.add(marker)  # type: ignore[arg-type]
    await consumer._process(handler, chunk, marker)

    assert seen == [10, 11, 12, 13, 14, 7]
    assert pending == [set(), 1]
    assert not consumer._unacked_messages and marker.acked
    tps = set(consumer._filter_tps_with_pending_acks())
    assert tps == {TopicPartition("raw", 0), TopicPartition("raw", 1)}
    offsets = consumer._filter_committable_offsets(tps)
    assert offsets == {TopicPartition("raw", 0): 15, TopicPartition("raw", 1): 8}
    assert consumer._n_acked == 6
    # only topics asked for are committed
    assert set(consumer._filter_tps_with_pending_acks({"other"})) == set()


async def test_a_failing_batch_marks_nothing_and_leaves_no_marker(
    consumer: BatchDrainConsumer,
) -> None:
    from streams.faust_app import _InFlight

    async def handler(batch: list[Any]) -> None:
        raise RuntimeError("boom")

    marker = _InFlight()
    consumer._unacked_messages.add(marker)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        await consumer._process(handler, [record("raw", 0, 3)], marker)
    assert not consumer._unacked_messages
    assert set(consumer._filter_tps_with_pending_acks()) == set()
    assert consumer._filter_committable_offsets([TopicPartition("raw", 0)]) == {}


async def test_committed_offsets_are_not_committed_again(consumer: BatchDrainConsumer) -> None:
    from streams.faust_app import _InFlight

    async def handler(batch: list[Any]) -> None:
        return None

    await consumer._process(handler, [record("raw", 2, 41)], _InFlight())
    tp = TopicPartition("raw", 2)
    assert consumer._filter_committable_offsets([tp]) == {tp: 42}
    consumer._committed_offset[tp] = 42  # what faust records after a commit
    assert consumer._filter_committable_offsets([tp]) == {}
