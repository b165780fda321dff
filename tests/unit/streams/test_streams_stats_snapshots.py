"""The worker's counter snapshots: published only when they change, the highest sequence
number of an instance wins wherever it sits in the topic (no servers)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from streams.core import SourceCounts
from streams.metrics import (
    STATS_HEARTBEAT_S,
    StageCounters,
    latest_snapshots,
    merge_snapshots,
)


def counters() -> StageCounters:
    return StageCounters(CollectorRegistry())


def test_a_snapshot_is_published_when_totals_or_lag_changed_or_as_a_heartbeat() -> None:
    stage = counters()
    first = stage.snapshot_if_changed("w1", now=1000.0)
    assert first is not None and orjson.loads(first)["seq"] == 1
    assert stage.snapshot_if_changed("w1", now=1002.0) is None  # idle: nothing new to say
    stage.add({"orders": SourceCounts(received=3, out=3)})
    second = stage.snapshot_if_changed("w1", now=1004.0)
    assert second is not None
    data = orjson.loads(second)
    assert data["seq"] == 2 and data["sources"]["orders"]["out"] == 3
    assert stage.snapshot_if_changed("w1", now=1006.0) is None
    stage.set_lag("raw.orders", 0, 7)
    lagged = stage.snapshot_if_changed("w1", now=1008.0)
    assert lagged is not None and orjson.loads(lagged)["lag"] == {"raw.orders:0": 7}
    # unchanged, but a lost snapshot must not stay lost: the same counts again, a new seq
    assert stage.snapshot_if_changed("w1", now=1008.0 + STATS_HEARTBEAT_S - 1) is None
    heartbeat = stage.snapshot_if_changed("w1", now=1008.0 + STATS_HEARTBEAT_S)
    assert heartbeat is not None and orjson.loads(heartbeat)["seq"] == 4
    assert orjson.loads(heartbeat)["sources"] == data["sources"]


def snapshot(worker: str, seq: int | None, out: int) -> bytes:
    data: dict[str, object] = {"worker": worker, "sources": {"orders": {"out": out}}}
    if seq is not None:
        data["seq"] = seq
    return orjson.dumps(data)


def test_a_copy_of_an_old_snapshot_appended_later_hides_nothing() -> None:
    # The embedded broker's compaction appends old winners again; the newer one still wins.
    topic = [snapshot("w1", 1, 10), snapshot("w1", 2, 20), snapshot("w1", 1, 10)]
    assert merge_snapshots(topic)["orders"].out == 20
    assert latest_snapshots(enumerate(topic))["w1"].offset == 1


def test_snapshots_without_a_sequence_number_keep_the_last_one() -> None:
    topic = [snapshot("w1", None, 10), snapshot("w1", None, 20), b"not json", snapshot("w2", 4, 1)]
    assert merge_snapshots(topic)["orders"].out == 21


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 50)), max_size=40))
def test_the_winner_does_not_depend_on_where_copies_land(published: list[tuple[str, int]]) -> None:
    # Any interleaving of an instance's snapshots and copies of them gives the same totals
    # as the highest sequence number of each instance.
    values = [snapshot(worker, seq, seq * 10) for worker, seq in published]
    expected = {worker: max(s for w, s in published if w == worker) * 10 for worker, _ in published}
    merged = merge_snapshots(values + list(reversed(values)))
    assert (merged["orders"].out if merged else 0) == sum(expected.values())
