"""The pure rules of the embedded broker's trim (no servers)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosepipe.localstack.broker_trim import (
    SNAPSHOT_COMPACT_MIN,
    SNAPSHOT_KEEP_S,
    BatchObject,
    TrimRule,
    carried_snapshots,
    group_by_partition,
    min_committed,
    objects_to_delete,
    partition_rule,
    retention_seconds,
    snapshot_prefix,
)
from streams.metrics import Snapshot

NOW = 1_000_000.0


def batches(*offsets: int, written_at: float = NOW - 10_000) -> list[BatchObject]:
    return [BatchObject(o, f"k{o}", written_at) for o in offsets]


def test_consumed_objects_go_up_to_the_committed_offset() -> None:
    # objects [0,5) [5,9) [9,12) [12,..): committed 9 frees the first two only
    objects = batches(0, 5, 9, 12)
    doomed = objects_to_delete(objects, TrimRule(None, consumed_below=9), NOW)
    assert [o.offset for o in doomed] == [0, 5]


def test_an_object_straddling_the_committed_offset_stays() -> None:
    doomed = objects_to_delete(batches(0, 5, 9), TrimRule(None, consumed_below=8), NOW)
    assert [o.offset for o in doomed] == [0]


def test_the_last_object_always_stays() -> None:
    objects = batches(0, 5, 9)
    assert [o.offset for o in objects_to_delete(objects, TrimRule(0.0), NOW)] == [0, 5]
    assert objects_to_delete(batches(0), TrimRule(0.0, consumed_below=10**9), NOW) == []


def test_consumed_objects_stay_for_the_keep_horizon() -> None:
    old = [BatchObject(0, "a", NOW - 700), BatchObject(5, "b", NOW - 500)]
    young = [BatchObject(9, "c", NOW - 100), BatchObject(12, "d", NOW - 50)]
    rule = TrimRule(None, consumed_below=12, keep_consumed_s=600)
    assert [o.offset for o in objects_to_delete(old + young, rule, NOW)] == [0]


def test_without_a_commit_only_time_retention_applies() -> None:
    objects = [BatchObject(0, "a", NOW - 90), BatchObject(5, "b", NOW - 30), *batches(9)]
    assert [o.offset for o in objects_to_delete(objects, TrimRule(60.0), NOW)] == [0]
    assert objects_to_delete(objects, TrimRule(None), NOW) == []


def test_deletions_are_a_prefix_never_a_hole() -> None:
    # the second object is young, so the third (old) one stays too
    objects = [
        BatchObject(0, "a", NOW - 90),
        BatchObject(5, "b", NOW - 10),
        BatchObject(9, "c", NOW - 90),
        BatchObject(12, "d", NOW - 90),
    ]
    assert [o.offset for o in objects_to_delete(objects, TrimRule(60.0), NOW)] == [0]


def test_listing_order_does_not_matter() -> None:
    objects = batches(12, 0, 9, 5)
    doomed = objects_to_delete(objects, TrimRule(None, consumed_below=12), NOW)
    assert [o.offset for o in doomed] == [0, 5, 9]


@given(
    gaps=st.lists(st.integers(1, 50), min_size=1, max_size=30),
    committed=st.integers(0, 2000),
)
def test_nothing_at_or_above_the_committed_offset_is_deleted(
    gaps: list[int], committed: int
) -> None:
    offsets = [sum(gaps[:i]) for i in range(len(gaps))]
    objects = batches(*offsets)
    doomed = objects_to_delete(objects, TrimRule(None, consumed_below=committed), NOW)
    ends = dict(zip(offsets, [*offsets[1:], None], strict=True))
    for gone in doomed:
        end = ends[gone.offset]
        assert end is not None and end <= committed  # every record of it was consumed
    kept = [o for o in objects if o not in doomed]
    assert kept and all(o.offset >= (doomed[-1].offset if doomed else -1) for o in kept)


def test_retention_seconds() -> None:
    assert retention_seconds({"retention.ms": "3600000"}) == 3600.0
    assert retention_seconds({"retention.ms": "-1"}) is None
    assert retention_seconds({}) == 7 * 24 * 3600.0
    assert retention_seconds({"cleanup.policy": "compact", "retention.ms": "1000"}) is None
    assert retention_seconds({"cleanup.policy": "compact,delete"}) is None
    with pytest.raises(ValueError, match=r"retention.ms is not an integer: 'soon'"):
        retention_seconds({"retention.ms": "soon"})


def test_partition_rules_by_topic_kind() -> None:
    common = {"data_topics": frozenset({"raw.orders"}), "file_log": "lake-files", "keep_s": 600.0}
    week = {"retention.ms": "604800000"}
    # data topics: consumed records only, never by time (a backlog outlives retention.ms)
    assert partition_rule("raw.orders", week, 42, **common) == TrimRule(None, 42, 600.0)
    assert partition_rule("raw.orders", {"retention.ms": "1"}, None, **common) == TrimRule(
        None, None, 600.0
    )
    # other topics never use committed offsets (the dedupe changelog must survive them)
    assert partition_rule("changelog", week, 42, **common) == TrimRule(604800.0)
    # the file log keeps at least an hour, so a slow selector pass does not meet a gap
    assert partition_rule("lake-files", week, None, **common) == TrimRule(3600.0)
    assert partition_rule("lake-files", {"retention.ms": "-1"}, None, **common) == TrimRule(3600.0)
    long_keep = {**common, "keep_s": 7200.0}
    assert partition_rule("lake-files", week, None, **long_keep) == TrimRule(7200.0)
    assert partition_rule("stats", {"retention.ms": "-1"}, 7, **common) is None
    assert partition_rule("raw.orders", {"cleanup.policy": "compact"}, 42, **common) is None


def test_group_by_partition_parses_tansu_keys() -> None:
    prefix = "clusters/tansu_cluster/topics"
    listing = [
        (f"{prefix}/raw.orders/partitions/0000000001/records/00000000000000000042.batch", 5.0),
        (f"{prefix}/raw.orders/partitions/0000000001/records/00000000000000000007.batch", 4.0),
        (f"{prefix}/raw.orders/partitions/0000000001/watermark.json", 6.0),
        (f"{prefix}/a/b/partitions/0000000000/records/00000000000000000000.batch", 1.0),
        ("clusters/tansu_cluster/meta.json", 1.0),
    ]
    grouped = group_by_partition(listing)
    assert sorted(grouped) == [("a/b", 0), ("raw.orders", 1)]
    assert sorted(o.offset for o in grouped[("raw.orders", 1)]) == [7, 42]
    assert grouped[("a/b", 0)][0].written_at == 1.0


def test_min_committed_over_groups() -> None:
    lowest = min_committed(
        {
            "worker": {("raw.a", 0): 100, ("raw.a", 1): 7},
            "yours": {("raw.a", 0): 40, ("raw.a", 1): -1001},  # -1001: no commit there
        }
    )
    assert lowest == {("raw.a", 0): 40, ("raw.a", 1): 7}


def test_a_required_group_without_a_commit_stops_the_consumed_rule() -> None:
    offsets = {"yours": {("events.canonical", 0): 500, ("events.canonical", 1): 500}}
    offsets["hosepipe-sink"] = {("events.canonical", 1): 300}
    required = {"events.canonical": "hosepipe-sink"}
    # partition 0: the sink has not committed (a fresh sink, the lake down): keep all
    assert min_committed(offsets, required) == {("events.canonical", 1): 300}
    assert min_committed(offsets) == {("events.canonical", 0): 500, ("events.canonical", 1): 300}


def test_a_stats_partition_is_compacted_only_past_the_minimum_of_old_objects() -> None:
    old = NOW - SNAPSHOT_KEEP_S - 1
    few = batches(*range(SNAPSHOT_COMPACT_MIN), written_at=old)  # the last one always stays
    assert snapshot_prefix(few, NOW) == []
    enough = batches(*range(SNAPSHOT_COMPACT_MIN + 1), written_at=old)
    assert [o.offset for o in snapshot_prefix(enough, NOW)] == list(range(SNAPSHOT_COMPACT_MIN))
    recent = [*enough, *batches(500, 501, written_at=NOW - 5)]
    assert len(snapshot_prefix(recent, NOW)) == SNAPSHOT_COMPACT_MIN + 1  # up to the recent ones


def test_only_winners_inside_the_prefix_are_carried_forward() -> None:
    def at(offset: int) -> Snapshot:
        return Snapshot(offset, 1, {"worker": f"w{offset}"}, b"")

    winners = {"gone": at(3), "busy": at(120), "edge": at(99)}
    assert [s.offset for s in carried_snapshots(winners, keep_from=100)] == [3, 99]
    assert carried_snapshots(winners, keep_from=3) == []
