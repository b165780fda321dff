"""The sink's pure core: file grouping, deterministic names, each flush rule, lateness."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from sink.batch import BufferingHints, FlushReason, SinkBatch

HOUR = 3_600_000_000
T0 = 1_763_791_200_000_000  # 2025-11-22T06:00:00Z


def event(n: int, hour: int = 0, source: str = "web") -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "source": source,
        "event_type": "click",
        "occurred_at": T0 + hour * HOUR + n,
        "ingested_at": T0,
        "subject": None,
        "payload": "{}",
        "attributes": {},
    }


def hints(**kw: Any) -> BufferingHints:
    base: dict[str, Any] = dict(
        max_rows=1000, max_bytes=10**9, max_age_seconds=60, max_open_partitions=100
    )
    return BufferingHints(**{**base, **kw})


def test_files_grouped_by_hour_and_named_by_first_offset() -> None:
    batch = SinkBatch(hints(), ("source",))
    for offset, hour in [(10, 0), (11, 1), (12, 0), (13, 2)]:
        batch.add("events.canonical", 3, offset, event(offset, hour), 100, now=0.0)
    plan = batch.drain(FlushReason.AGE)
    assert [f.key for f in plan.files] == [
        "source=web/dt=2025-11-22/hour=06/events.canonical+3+00000000000000000010.parquet",
        "source=web/dt=2025-11-22/hour=07/events.canonical+3+00000000000000000011.parquet",
        "source=web/dt=2025-11-22/hour=08/events.canonical+3+00000000000000000013.parquet",
    ]
    assert [f.rows for f in plan.files] == [2, 1, 1]
    assert plan.offsets == {("events.canonical", 3): 14}
    assert plan.rows == 4 and plan.bytes == 400
    assert batch.empty and batch.open_partitions == 0


def test_replay_from_committed_offset_gives_same_names() -> None:
    """Whatever the batch boundary, a replay from the committed offset reuses names."""
    records = [(o, o % 3) for o in range(100, 130)]

    def names(boundaries: list[int]) -> set[str]:
        batch, found = SinkBatch(hints()), set()
        for offset, hour in records:
            batch.add("t", 0, offset, event(offset, hour), 1, now=0.0)
            if offset in boundaries:
                found |= {f.key for f in batch.drain(FlushReason.ROWS).files}
        return found | {f.key for f in batch.drain(FlushReason.ROWS).files}

    replay = names([104, 120])  # the replay from 100 cuts batches elsewhere
    first = SinkBatch(hints())
    for offset, hour in records[:11]:
        first.add("t", 0, offset, event(offset, hour), 1, now=0.0)
    orphan_names = {f.key for f in first.drain(FlushReason.ROWS).files}  # crashed batch 100..110
    assert orphan_names <= replay  # every file it may have left is overwritten by the replay


@pytest.mark.parametrize(
    ("kw", "rows", "hours", "expected"),
    [
        ({"max_rows": 5}, 5, 1, FlushReason.ROWS),
        ({"max_bytes": 300}, 3, 1, FlushReason.BYTES),
        ({"max_open_partitions": 4}, 4, 4, FlushReason.PARTITIONS),
    ],
)
def test_size_rules(kw: dict[str, Any], rows: int, hours: int, expected: FlushReason) -> None:
    batch = SinkBatch(hints(**kw))
    for n in range(rows - 1):
        batch.add("t", 0, n, event(n, n % hours), 100, now=0.0)
        assert batch.flush_reason() is None
    batch.add("t", 0, rows - 1, event(rows - 1, (rows - 1) % hours), 100, now=0.0)
    assert batch.flush_reason() is expected


def test_age_rule_only_with_a_clock() -> None:
    batch = SinkBatch(hints(max_age_seconds=5))
    assert batch.flush_reason(100.0) is None  # empty batches never flush
    batch.add("t", 0, 0, event(0), 1, now=10.0)
    assert batch.flush_reason() is None
    assert batch.flush_reason(14.9) is None
    assert batch.flush_reason(15.0) is FlushReason.AGE


def test_age_zero_flushes_per_poll_not_per_record() -> None:
    batch = SinkBatch(hints(max_age_seconds=0))
    batch.add("t", 0, 0, event(0), 1, now=10.0)
    batch.add("t", 0, 1, event(1), 1, now=10.0)
    assert batch.flush_reason() is None
    assert batch.flush_reason(10.0) is FlushReason.AGE


def test_late_events_counted_and_kept_in_their_hour() -> None:
    batch = SinkBatch(hints())
    assert batch.add("t", 0, 0, event(0, hour=5), 1, now=0.0) is False
    assert batch.add("t", 0, 1, event(1, hour=2), 1, now=0.0) is True
    assert batch.add("t", 1, 0, event(2, hour=2), 1, now=0.0) is False  # other partition
    assert batch.add("t", 0, 2, event(3, hour=5), 1, now=0.0) is False
    batch.drain(FlushReason.ROWS)
    assert batch.add("t", 0, 3, event(4, hour=4), 1, now=0.0) is True  # across batches
    assert batch.late == 2
    plan = batch.drain(FlushReason.ROWS)
    assert plan.files[0].directory.endswith("hour=10")
    batch.drop()
    assert batch.add("t", 0, 9, event(5, hour=1), 1, now=0.0) is False  # history dropped


def test_offsets_must_be_contiguous_increasing() -> None:
    batch = SinkBatch(hints())
    batch.add("t", 0, 5, event(0), 1, now=0.0)
    with pytest.raises(ValueError, match=r"t\[0\]: offset 4"):
        batch.add("t", 0, 4, event(1), 1, now=0.0)


def test_drop_forgets_everything() -> None:
    batch = SinkBatch(hints())
    for n in range(3):
        batch.add("t", n, n, event(n), 10, now=0.0)
    assert batch.drop() == 3
    assert batch.empty and batch.bytes == 0 and batch.flush_reason(1e9) is None


def test_add_many_stops_right_after_the_record_that_fires_a_rule() -> None:
    batch = SinkBatch(hints(max_rows=4))
    events = [event(n, hour=n % 2) for n in range(10)]
    added = batch.add_many("t", [0] * 10, list(range(10)), events, [1] * 10, now=0.0)
    assert added == 4 and batch.rows == 4
    assert batch.flush_reason() is FlushReason.ROWS
    plan = batch.drain(FlushReason.ROWS)
    assert plan.offsets == {("t", 0): 4}
    assert sum(f.rows for f in plan.files) == 4
    assert [f.table()["event_id"].to_pylist() for f in plan.files] == [["e0", "e2"], ["e1", "e3"]]


def test_open_partition_cap_counts_each_new_hour() -> None:
    batch = SinkBatch(hints(max_open_partitions=3))
    events = [event(n, hour=n) for n in range(10)]
    assert batch.add_many("t", [0] * 10, list(range(10)), events, [1] * 10, now=0.0) == 3
    assert batch.flush_reason() is FlushReason.PARTITIONS


def test_invalid_occurred_at_lands_in_dt_invalid_and_is_counted() -> None:
    batch = SinkBatch(hints())
    bad = [{**event(n), "occurred_at": at} for n, at in enumerate([-(2**63), 2**63 - 1])]
    batch.add_many("t", [0, 0, 0], [0, 1, 2], [*bad, event(2)], [1, 1, 1], now=0.0)
    plan = batch.drain(FlushReason.ROWS)
    assert batch.invalid_time == 2 and batch.late == 0
    assert [(f.directory, f.rows) for f in plan.files] == [
        ("dt=2025-11-22/hour=06", 1),
        ("dt=invalid/hour=00", 2),
    ]
    assert plan.files[1].key.endswith("t+0+00000000000000000000.parquet")


# ----------------------------------------------------------------------------- reference model


class RowByRow:
    """The per-record rules, one record at a time: what the vectorized batch must match."""

    def __init__(self, limits: BufferingHints, keys: tuple[str, ...]) -> None:
        self.hints, self.keys = limits, keys
        self.files: dict[tuple[Any, ...], tuple[str, int, list[str]]] = {}
        self.next: dict[int, int] = {}
        self.newest: dict[int, int] = {}
        self.rows = self.bytes = self.late = self.invalid = 0

    def add(
        self, partitions: list[int], offsets: list[int], events: list[Any], sizes: list[int]
    ) -> int:
        from hosepipe.lake import data_file_key, key_segment, time_partition, valid_hour

        added = 0
        for partition, offset, event, size in zip(partitions, offsets, events, sizes, strict=True):
            hour = event["occurred_at"] // HOUR
            if not valid_hour(hour):
                self.invalid += 1
                hour = -(2**62)
            else:
                newest = self.newest.get(partition)
                if newest is None or hour > newest:
                    self.newest[partition] = hour
                elif hour < newest:
                    self.late += 1
            values = tuple(event[k] or None for k in self.keys)
            slot = (partition, hour, *values)
            if slot not in self.files:
                directory = "/".join(
                    [
                        *(key_segment(k, v) for k, v in zip(self.keys, values, strict=True)),
                        time_partition(hour),
                    ]
                )
                key = data_file_key(directory, "t", partition, offset)
                self.files[slot] = (key, offset, [])
            self.files[slot][2].append(event["event_id"])
            self.next[partition] = offset + 1
            self.rows += 1
            self.bytes += size
            added += 1
            h = self.hints
            if (
                self.rows >= h.max_rows
                or self.bytes >= h.max_bytes
                or len(self.files) >= h.max_open_partitions
            ):
                break
        return added

    def drain(self) -> tuple[list[tuple[str, list[str]]], dict[int, int]]:
        plan = sorted((key, ids) for key, _, ids in self.files.values())
        offsets = dict(self.next)
        self.files, self.next, self.rows, self.bytes = {}, {}, 0, 0
        return plan, offsets


@st.composite
def polls(draw: st.DrawFn) -> tuple[list[list[tuple[int, dict[str, Any], int]]], dict[str, Any]]:
    limits = {
        "max_rows": draw(st.integers(1, 40)),
        "max_bytes": draw(st.integers(1, 4000)),
        "max_open_partitions": draw(st.integers(1, 12)),
    }
    hour = st.one_of(
        st.integers(-3, 6).map(lambda h: T0 + h * HOUR),
        st.integers(-(2**63), 2**63 - 1),
        st.sampled_from([-62_135_596_800_000_001, -62_135_596_800_000_000, 0, -1]),
    )
    record = st.tuples(
        st.integers(0, 3),
        hour,
        st.sampled_from(["web", "app", "", None]),
        st.integers(0, 300),
    )
    batches = draw(st.lists(st.lists(record, max_size=60), max_size=6))
    n = 0
    out = []
    for batch in batches:
        rows = []
        for partition, at, source, size in batch:
            e = {**event(n), "occurred_at": at, "source": source}
            rows.append((partition, e, size))
            n += 1
        out.append(rows)
    return out, limits


@hyp_settings(max_examples=150, deadline=None)
@given(polls(), st.sampled_from([(), ("source",), ("source", "event_type")]), st.booleans())
def test_vectorized_batch_matches_row_by_row(
    case: tuple[list[list[tuple[int, dict[str, Any], int]]], dict[str, Any]],
    keys: tuple[str, ...],
    sorted_path: bool,
) -> None:
    import sink.batch

    saved = sink.batch._MAX_RUNS
    sink.batch._MAX_RUNS = 0 if sorted_path else saved  # 0: every call takes the sorted path
    try:
        _compare_with_row_by_row(*case, keys)
    finally:
        sink.batch._MAX_RUNS = saved


def _compare_with_row_by_row(
    batches: list[list[tuple[int, dict[str, Any], int]]],
    limits: dict[str, Any],
    keys: tuple[str, ...],
) -> None:
    batch = SinkBatch(hints(**limits), keys)
    model = RowByRow(hints(**limits), keys)
    next_offset = dict.fromkeys(range(4), 0)
    for rows in batches:
        partitions = [p for p, _, _ in rows]
        offsets = []
        for p in partitions:
            offsets.append(next_offset[p])
            next_offset[p] += 1 + (next_offset[p] % 3 == 2)  # gaps are allowed
        events = [e for _, e, _ in rows]
        sizes = [s for _, _, s in rows]
        start = 0
        while start < len(rows):
            added = batch.add_many(
                "t", partitions[start:], offsets[start:], events[start:], sizes[start:], 0.0
            )
            expected = model.add(partitions[start:], offsets[start:], events[start:], sizes[start:])
            assert added == expected
            start += added
            assert (batch.rows, batch.bytes, batch.open_partitions) == (
                model.rows,
                model.bytes,
                len(model.files),
            )
            assert (batch.late, batch.invalid_time) == (model.late, model.invalid)
            if batch.flush_reason() is not None:
                plan = batch.drain(FlushReason.ROWS)
                files, offs = model.drain()
                got = sorted((f.key, f.table()["event_id"].to_pylist()) for f in plan.files)
                assert got == files
                assert plan.offsets == {("t", p): o for p, o in offs.items()}
    plan = batch.drain(FlushReason.SHUTDOWN)
    files, offs = model.drain()
    assert sorted((f.key, f.table()["event_id"].to_pylist()) for f in plan.files) == files
    assert plan.offsets == {("t", p): o for p, o in offs.items()}


def test_interleaved_rows_are_grouped_by_one_take() -> None:
    """Many short runs (partitions alternating row by row) take the sorted path."""
    batch = SinkBatch(hints(max_rows=10_000))
    n = 2000
    events = [event(i, hour=i % 3) for i in range(n)]
    partitions = [i % 2 for i in range(n)]
    offsets = [i // 2 for i in range(n)]
    assert batch.add_many("t", partitions, offsets, events, [1] * n, 0.0) == n
    plan = batch.drain(FlushReason.ROWS)
    assert len(plan.files) == 6
    for f in plan.files:
        ids = [int(x[1:]) for x in f.table()["event_id"].to_pylist()]
        assert ids == sorted(ids)
        assert all(i % 2 == f.partition for i in ids)
    assert plan.offsets == {("t", 0): 1000, ("t", 1): 1000}


def test_offsets_must_increase_within_one_call() -> None:
    batch = SinkBatch(hints())
    with pytest.raises(ValueError, match=r"t\[1\]: offset 7 after 7"):
        batch.add_many("t", [1, 0, 1], [7, 0, 7], [event(0), event(1), event(2)], [1, 1, 1], 0.0)
    assert batch.empty  # nothing of a rejected call is kept


def test_lake_health_logs_each_change_and_reminds_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sink.health import LakeHealth, LakeState

    caplog.set_level("WARNING", logger="sink.health")
    health = LakeHealth(remind_every=60.0)
    for now in [0.0, 1.0, 30.0, 61.0, 62.0, 125.0]:
        health.failed(OSError("refused"), now, "s3://b/p")
    assert health.state is LakeState.DEGRADED
    health.succeeded(130.0)
    assert [r.getMessage() for r in caplog.records] == [
        "lake unavailable, holding offsets and retrying",
        "lake still unavailable, retrying",  # at 61
        "lake still unavailable, retrying",  # at 125
        "lake recovered, catching up",
    ]
    assert caplog.records[-1].__dict__["outage_seconds"] == 130.0
