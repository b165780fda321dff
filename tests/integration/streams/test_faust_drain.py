"""The faust engine's batched drain on a real broker: commits, clean stops, rebalances.

The faust engine hands fetched batches of raw records to the core and marks their offsets
done only after the outputs are delivered and the ids remembered (``BatchDrainConsumer``).
These tests check the offset bookkeeping from the outside: committed offsets of the
consumer group against what the worker reports it handled, no re-reads and no duplicates
after a clean stop in the middle of a backlog, and dedupe across a rebalance that happens
while a worker is busy.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration


@pytest.fixture
def engine() -> str:
    """Only the faust engine (overrides the conftest's two-engine parametrisation)."""
    return "faust"


def produce_spread(stage: Any, records: list[tuple[bytes, bytes]]) -> dict[int, int]:
    """Produce record i to partition i % 4; returns the record count of each partition."""
    from hosepipe.kafka import make_producer

    producer = make_producer(stage.settings, **{"linger.ms": 20})
    counts: Counter[int] = Counter()
    for i, (key, value) in enumerate(records):
        partition = i % 4
        while True:
            try:
                producer.produce(stage.raw, value, key, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
        counts[partition] += 1
    assert producer.flush(60) == 0
    return dict(counts)


def committed(stage: Any) -> dict[int, int]:
    """The consumer group's committed offset of each raw partition (-1001: none)."""
    from confluent_kafka import TopicPartition

    from hosepipe.kafka import make_consumer

    consumer = make_consumer(stage.settings, stage.pipeline.streams.consumer_group)
    try:
        tps = consumer.committed([TopicPartition(stage.raw, p) for p in range(4)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps}


def set_batch_size(stage: Any, batch_size: int) -> None:
    """Rewrite the stage's config file (read by the worker process) with another batch size."""
    tree = yaml.safe_load(stage.config_file.read_text())
    tree["streams"]["batch_size"] = batch_size
    stage.config_file.write_text(yaml.safe_dump(tree), encoding="utf-8")


def output_ids(stage: Any) -> Counter[str]:
    return Counter(e["event_id"] for e in stage.canonical_events())


def test_offsets_are_committed_while_running_and_match_the_work(
    stage: Any, make_event: Any
) -> None:
    t = int(time.time() * 1000)
    total = 8000
    per_partition = produce_spread(stage, [make_event(i, t) for i in range(total)])
    runner = stage.start_runner()
    stage.wait_for(lambda: (s := stage.stats()) and s.received == total, what="all counted")
    # faust's commit loop commits the done offsets while the worker runs (not only at stop)
    stage.wait_for(lambda: committed(stage) == per_partition, timeout=30, what="offsets committed")
    stage.stop_runner(runner)

    ids = output_ids(stage)
    assert len(ids) == total and max(ids.values()) == 1
    counts = stage.stats()
    assert (counts.received, counts.out, counts.duplicates) == (total, total, 0)
    assert counts.balanced


def test_clean_stop_mid_backlog_commits_exactly_what_was_handled(
    stage: Any, make_event: Any, tmp_path: Any
) -> None:
    t = int(time.time() * 1000)
    total = 30_000
    per_partition = produce_spread(stage, [make_event(i, t) for i in range(total)])
    set_batch_size(stage, 5)  # many small batches: the stop lands in the middle
    state = tmp_path / "state"
    runner = stage.start_runner(state_dir=state)
    stage.wait_for(lambda: (s := stage.stats()) and s.received >= 4000, what="first batches")
    stage.stop_runner(runner)  # SIGTERM: the batch in flight finishes, then a final commit

    handled = stage.stats().received
    offsets = committed(stage)
    assert sum(max(o, 0) for o in offsets.values()) == handled, (offsets, handled)
    assert all(offsets[p] <= per_partition[p] for p in offsets)
    if handled == total:
        pytest.skip("the worker drained the whole backlog before the stop")

    # The restart reads on from the committed offsets: nothing twice, nothing missing.
    runner = stage.start_runner(state_dir=state)
    stage.wait_for(lambda: (s := stage.stats()) and s.received >= total, what="the rest counted")
    stage.stop_runner(runner)
    counts = stage.stats()
    assert (counts.received, counts.out, counts.duplicates) == (total, total, 0)
    ids = output_ids(stage)
    assert len(ids) == total and max(ids.values()) == 1
    assert committed(stage) == per_partition


@pytest.mark.xfail(
    strict=False,
    reason=(
        "open: in about half of the full-suite runs one raw partition is never delivered to "
        "either faust worker (nothing committed for it); see docs/streams.md, 'Open: one "
        "partition stalls'. The timeout message carries the diagnosis."
    ),
)
def test_rebalance_while_busy_loses_nothing_and_still_dedupes(stage: Any, make_event: Any) -> None:
    t = int(time.time() * 1000)
    total = 30_000
    records = [make_event(i, t) for i in range(total)]
    produce_spread(stage, records + records[:2000])  # 2000 duplicates at the end
    set_batch_size(stage, 10)  # many small batches: a is still busy when b joins
    a = stage.start_runner()
    stage.wait_for(lambda: (s := stage.stats()) and s.received >= 3000, what="a is busy")
    b = stage.start_runner()  # joins while a works through the backlog: a rebalance

    def split() -> bool:
        owned_a, owned_b = stage.partitions(a), stage.partitions(b)
        return bool(owned_a and owned_b and len(owned_a | owned_b) == 4)

    stage.wait_for(split, timeout=120, what="both workers own partitions")
    stage.wait_for(
        lambda: (s := stage.stats()) and s.received >= total + 2000 and s.out >= total,
        timeout=180,
        what="everything counted",
        explain=stage.diagnosis,
    )
    stage.stop_runner(a)
    stage.stop_runner(b)
    ids = output_ids(stage)
    assert len(ids) == total, total - len(ids)
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]
    counts = stage.stats()
    assert counts.out == total and counts.balanced
    assert counts.duplicates == counts.received - total >= 2000
