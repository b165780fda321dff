"""The sink's late lane: which rows are late, cursor objects, and exactly-once under crashes.

The crash test drives the same pure pieces as the runner (two :class:`SinkBatch` lanes and a
:class:`LaneBook`) through sessions that die at random points: mid-flush with only some
files written, after the cursor objects but before the commit, or between flushes with late
rows held. Every event must end up in exactly one lake file.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from hosepipe.lake import events_to_table
from sink.batch import BufferingHints, FlushReason, SinkBatch
from sink.lanes import (
    LATE,
    ON_TIME,
    LaneBook,
    StoredCursors,
    commit_cursors,
    cursor_key,
    decode_cursors,
    encode_cursors,
    late_rows,
    poll_ends,
    rows_to_keep,
    split_lanes,
)

HOUR = 3_600_000_000
T0 = 1_763_791_200_000_000  # 2025-11-22T06:00:00Z
INGESTED = T0 + 40 * HOUR
TOPIC = "events.canonical"


def event(n: int, hours_late: float) -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "source": "web" if n % 3 else "app",
        "event_type": "click",
        "occurred_at": INGESTED - int(hours_late * HOUR) - n % 1000,
        "ingested_at": INGESTED,
        "subject": None,
        "payload": "{}",
        "attributes": {},
    }


def test_late_rows_compare_occurred_with_ingested() -> None:
    table = events_to_table([event(0, 0.2), event(1, 1.5), event(2, 30), event(3, 0.99)])
    assert late_rows(table, HOUR).to_pylist() == [False, True, True, False]  # type: ignore[union-attr]
    assert late_rows(table, None) is None  # one lane
    assert late_rows(table, 40 * HOUR) is None  # none that late


def test_a_row_without_ingested_at_is_on_time() -> None:
    rows = [event(0, 5), event(1, 5)]
    rows[0]["ingested_at"] = None
    mask = late_rows(events_to_table(rows), HOUR)
    assert mask is not None and mask.to_pylist() == [False, True]


def test_cursor_objects_round_trip_and_bad_ones_are_named() -> None:
    stored = StoredCursors(on_time=120, late=80, late_after_us=HOUR)
    key = cursor_key(TOPIC, 3)
    assert key == ".hosepipe-sink/cursors/events.canonical+3.json"
    assert decode_cursors(encode_cursors(TOPIC, 3, stored), key) == stored
    with pytest.raises(ValueError, match=r"sink cursor object x\.json: .*offsets"):
        decode_cursors(b'{"on_time": -1, "late": 2}', "x.json")
    with pytest.raises(ValueError, match=r"x\.json"):
        decode_cursors(b"not json", "x.json")


def test_rows_below_their_lanes_cursor_are_skipped_by_the_stored_rule() -> None:
    # offsets 10..15 of partition 0: late ones below 12, on-time ones below 14 are durable
    lateness = [0, 5, 0, 5, 0, 5]
    table = events_to_table([event(n, h) for n, h in enumerate(lateness)])
    parts = pa.array([0] * 6, pa.int64())
    offs = pa.array(range(10, 16), pa.int64())
    stored = {0: StoredCursors(on_time=14, late=12, late_after_us=HOUR)}
    keep = rows_to_keep(table, parts, offs, stored)
    assert keep is not None and keep.to_pylist() == [False, False, False, True, True, True]
    # the stored rule decides, not today's: with one lane stored, every row is "on time"
    one_lane = {0: StoredCursors(on_time=14, late=12, late_after_us=None)}
    keep = rows_to_keep(table, parts, offs, one_lane)
    assert keep is not None and keep.to_pylist() == [False] * 4 + [True] * 2
    # other partitions and rows above both cursors are kept
    assert rows_to_keep(table, parts, offs, {1: stored[0]}) is None


def test_commit_cursors_take_the_first_held_row_of_a_lane() -> None:
    added = {0: (100, 100), 1: (50, 60)}
    held = ({0: 90}, {0: 40, 1: 55})
    assert commit_cursors(added, held) == {0: (90, 40), 1: (50, 55)}


# --------------------------------------------------------------------------- crash model


@dataclass
class World:
    """What survives a crash: the log, the lake, committed offsets, cursor objects."""

    log: dict[int, list[dict[str, Any]]]
    lake: dict[str, list[str]] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    objects: dict[int, StoredCursors] = field(default_factory=dict)


class Crash(Exception):
    pass


class Session:
    """One sink process: the runner's steps with pure parts, dying where ``rng`` says."""

    def __init__(
        self,
        world: World,
        rng: random.Random,
        late_after: int | None,
        crash_rate: float,
        late_flush_rate: float = 0.15,
        mid_flush_crashes: bool = True,
    ) -> None:
        self.world, self.rng, self.late_after, self.crash_rate = world, rng, late_after, crash_rate
        self.late_flush_rate = late_flush_rate
        self.mid_flush_crashes = mid_flush_crashes
        on_time = BufferingHints(rng.randint(5, 40), 10**9, 60, rng.randint(3, 30))
        late = BufferingHints(rng.randint(20, 200), 10**9, 60, 500)
        self.lanes = (SinkBatch(on_time, ("source",)), SinkBatch(late, ("source",)))
        self.book = LaneBook(late_after)
        self.position = {p: world.committed.get(p, 0) for p in world.log}

    def run(self, until_end: bool) -> None:
        while any(self.position[p] < len(rows) for p, rows in self.world.log.items()):
            self.poll()
            if self.rng.random() < 0.3:
                self.flush(ON_TIME, between_polls=True)  # the age rule
            if self.rng.random() < self.late_flush_rate:
                self.flush(LATE, between_polls=True)  # the late lane's age rule, or idle
            if not until_end and self.rng.random() < self.crash_rate:
                raise Crash("between flushes")
        for lane in (ON_TIME, LATE):
            if not self.lanes[lane].empty:
                self.flush(lane, between_polls=True)

    def poll(self) -> None:
        events, parts, offs = [], [], []
        for partition, rows in self.world.log.items():
            start = self.position[partition]
            end = min(len(rows), start + self.rng.randint(0, 25))
            events += rows[start:end]
            parts += [partition] * (end - start)
            offs += range(start, end)
            self.position[partition] = end
            if end > start and not self.book.known(partition):
                self.book.start(partition, start, self.world.objects.get(partition))
        if not events:
            return
        table = events_to_table(events)
        partitions, offsets = pa.array(parts, pa.int64()), pa.array(offs, pa.int64())
        ends = poll_ends(partitions, offsets)
        keep = self.book.keep(table, partitions, offsets)
        if keep is not None:
            table, partitions, offsets = (c.filter(keep) for c in (table, partitions, offsets))
        sizes = pa.array([1] * table.num_rows, pa.int64())
        late = self.book.late_mask(table, partitions)
        for lane, columns in split_lanes((table, partitions, offsets, sizes), late):
            lane_table, lane_parts, lane_offs, lane_sizes = columns
            start = 0
            while start < lane_table.num_rows:
                start += self.lanes[lane].add_table(
                    TOPIC,
                    lane_parts.slice(start),
                    lane_offs.slice(start),
                    lane_table.slice(start),
                    lane_sizes.slice(start),
                    0.0,
                )
                if self.lanes[lane].flush_reason() is not None:
                    self.flush(lane)
        self.book.polled(ends)

    def flush(self, lane: int, between_polls: bool = False) -> None:
        batch = self.lanes[lane]
        if batch.empty:
            return
        plan = batch.drain(FlushReason.AGE)
        cursors = self.book.drained(
            lane,
            {p: o for (_, p), o in plan.offsets.items()},
            (self.lanes[ON_TIME].held_offsets(), self.lanes[LATE].held_offsets()),
            between_polls=between_polls,
        )
        files = list(plan.files)
        crash = self.mid_flush_crashes and self.rng.random() < self.crash_rate
        if crash:
            files = self.rng.sample(files, self.rng.randint(0, len(files)))
        for open_file in files:
            self.world.lake[open_file.key] = open_file.table().column("event_id").to_pylist()
        if crash:
            raise Crash("mid-flush")
        for partition, cursors_of in cursors.items():
            if cursors_of.on_time != cursors_of.late:
                self.world.objects[partition] = cursors_of
        if self.rng.random() < self.crash_rate:
            raise Crash("after the cursor objects, before the commit")
        for partition, cursors_of in cursors.items():
            self.world.committed[partition] = min(cursors_of.on_time, cursors_of.late)


def make_log(rng: random.Random, size: int, late_share: float) -> dict[int, list[dict[str, Any]]]:
    log: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for n in range(size):
        hours_late = rng.uniform(2, 30) if rng.random() < late_share else rng.uniform(0, 0.9)
        log[rng.randint(0, 1)].append(event(n, hours_late))
    return log


def assert_exactly_once(world: World, size: int) -> None:
    seen: dict[str, int] = {}
    for ids in world.lake.values():
        for event_id in ids:
            seen[event_id] = seen.get(event_id, 0) + 1
    missing = size - len(seen)
    twice = sorted(k for k, v in seen.items() if v > 1)
    assert missing == 0 and not twice, f"{missing} missing, duplicated: {twice[:5]}"


@hyp_settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_crashes_anywhere_lose_and_duplicate_nothing_with_two_lanes(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(50, 400)
    world = World(make_log(rng, size, late_share=rng.choice((0.0, 0.2, 0.5))))
    for _ in range(rng.randint(0, 6)):
        with contextlib.suppress(Crash):
            Session(world, rng, HOUR, crash_rate=0.15).run(until_end=False)
    Session(world, rng, HOUR, crash_rate=0.0).run(until_end=True)
    assert_exactly_once(world, size)


@hyp_settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), after=st.sampled_from([None, 3 * HOUR, HOUR // 2]))
def test_a_changed_late_after_keeps_durable_rows_durable(seed: int, after: int | None) -> None:
    """Killed between flushes with late rows held, restarted with another rule (or one lane),
    then killed again and again: the stored rule decides until both lanes are level.

    Not covered (docs/sink.md): a crash *while files are written* before the lanes are level
    again, which can let a replay reach level sooner and route a written row otherwise."""
    rng = random.Random(seed)
    size = rng.randint(50, 300)
    world = World(make_log(rng, size, late_share=0.3))
    session = Session(world, rng, HOUR, crash_rate=0.0)
    for _ in range(rng.randint(1, 30)):
        session.poll()
        if rng.random() < 0.3:
            session.flush(ON_TIME, between_polls=True)
    for _ in range(rng.randint(1, 4)):
        with contextlib.suppress(Crash):
            Session(world, rng, after, 0.25, mid_flush_crashes=False).run(until_end=False)
    Session(world, rng, after, crash_rate=0.0).run(until_end=True)
    assert_exactly_once(world, size)


def test_a_partition_keeps_its_stored_rule_until_the_lanes_are_level() -> None:
    book = LaneBook(None)  # lane turned off today
    book.start(0, 100, StoredCursors(on_time=140, late=110, late_after_us=HOUR))
    book.start(1, 50, StoredCursors(on_time=40, late=30, late_after_us=HOUR))  # stale
    table = events_to_table([event(0, 5), event(1, 5), event(2, 0.1)])
    parts = pa.array([0, 1, 0], pa.int64())
    assert book.rules == {0: HOUR}
    assert book.late_mask(table, parts).to_pylist() == [True, False, False]  # type: ignore[union-attr]
    # the late lane still holds partition 0's rows from 110: not level, the rule stays
    cursors = book.drained(ON_TIME, {0: 160}, ({}, {0: 110}), between_polls=True)
    assert (cursors[0].on_time, cursors[0].late, cursors[0].late_after_us) == (160, 110, HOUR)
    assert book.rules == {0: HOUR}
    book.polled({0: (150, 170)})
    assert book.drained(LATE, {0: 165}, ({}, {}), between_polls=False)[0].late_after_us == HOUR
    assert book.rules == {0: HOUR}  # mid-poll: late rows of this poll may still come
    cursors = book.drained(LATE, {0: 165}, ({}, {}), between_polls=True)
    assert (cursors[0].on_time, cursors[0].late) == (170, 170)
    assert book.rules == {}  # level: today's rule (one lane) from here on
    assert book.late_mask(table, parts) is None


def test_late_rows_make_fewer_files_than_one_lane() -> None:
    """5 % of events 2-6 h late: with one lane every flush writes a file per late hour."""
    rng = random.Random(7)
    size = 3000
    log: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    late_ids = set()
    for n in range(size):
        late = rng.random() < 0.05
        log[n % 2].append(event(n, rng.uniform(2, 6) if late else rng.uniform(0, 0.9)))
        if late:
            late_ids.add(f"e{n}")
    late_files = {}
    for late_after in (None, HOUR):
        world = World({p: list(rows) for p, rows in log.items()})
        session = Session(world, random.Random(1), late_after, 0.0, late_flush_rate=0.0)
        session.run(until_end=True)
        assert_exactly_once(world, size)
        late_files[late_after] = sum(1 for ids in world.lake.values() if late_ids & set(ids))
    assert late_files[HOUR] * 2 < late_files[None], late_files
