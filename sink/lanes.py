"""The sink's two lanes: on-time rows, and late rows held longer so they make few files.

A flush writes one file per (Kafka partition, lake directory) of its batch. Events that
arrive hours after they happened (a phone that was offline) spread each flush over many
hour directories: in the demo, 2 % late events turned ~70 lake files per million events into
~2,300, a fifth of the pipeline's CPU (docs/benchmarks.md). With ``sink.late_after`` set,
rows whose ``occurred_at`` lies more than that before their ``ingested_at`` go to a *late
lane*: a second :class:`~sink.batch.SinkBatch` flushed every ``sink.late_max_age`` or when
the sink is idle, while on-time rows keep their ``max_age``.

Why this keeps "exactly once into the lake". The lane of a row is a pure function of the
row (:func:`late_rows`), so every replay puts each row in the same lane. Per Kafka
partition and lane, a *cursor* says: every row of this lane below this offset is in a
durable file. The sink commits the smaller of the two cursors (where a replay must start)
and, before that commit, stores both in a small object in the lake
(:func:`cursor_key`). A replay skips the rows of each lane below that lane's stored cursor
(:func:`rows_to_keep`); each lane's next batch therefore starts exactly where its last
durable one ended, which is the property that makes file names (first offset per file)
replay-stable in one lane.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc

ON_TIME = 0
LATE = 1
LANE_NAMES = ("on_time", "late")
CURSOR_PREFIX = ".hosepipe-sink/cursors"
"""Lake-relative folder of the cursor objects; readers skip names starting with '.'."""


@dataclass(frozen=True)
class StoredCursors:
    """A partition's cursors as last stored: ``on_time``/``late`` next offsets per lane."""

    on_time: int
    late: int
    late_after_us: int | None
    """The lane rule the cursors were made with (None: one lane, every row on time)."""


def cursor_key(topic: str, partition: int) -> str:
    return f"{CURSOR_PREFIX}/{topic}+{partition}.json"


def encode_cursors(topic: str, partition: int, cursors: StoredCursors) -> bytes:
    return json.dumps(
        {
            "topic": topic,
            "partition": partition,
            "on_time": cursors.on_time,
            "late": cursors.late,
            "late_after_us": cursors.late_after_us,
        },
        sort_keys=True,
    ).encode()


def decode_cursors(data: bytes, where: str) -> StoredCursors:
    """Parse a cursor object; ``where`` names it in the error."""
    try:
        doc = json.loads(data)
        on_time, late, after = doc["on_time"], doc["late"], doc.get("late_after_us")
        if not all(isinstance(v, int) and v >= 0 for v in (on_time, late)):
            raise ValueError("on_time and late must be offsets (integers >= 0)")
        if after is not None and not (isinstance(after, int) and after > 0):
            raise ValueError("late_after_us must be a positive integer or null")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"sink cursor object {where}: {exc}") from exc
    return StoredCursors(on_time, late, after)


def micros(duration: timedelta | None) -> int | None:
    return None if duration is None else duration // timedelta(microseconds=1)


def late_rows(table: pa.Table, late_after_us: int | None) -> pa.BooleanArray | None:
    """Per row, whether it belongs to the late lane; None when no row does.

    Late: ``occurred_at < ingested_at - late_after``. Both times are in the record, so a
    replay decides the same; a row without ``ingested_at`` is on time.
    """
    if late_after_us is None or table.num_rows == 0:
        return None
    occurred = table.column("occurred_at").cast(pa.int64())
    ingested = table.column("ingested_at").cast(pa.int64())
    mask = pc.fill_null(pc.less(occurred, pc.subtract(ingested, late_after_us)), False)
    mask = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
    return mask if pc.any(mask).as_py() else None


def rows_to_keep(
    table: pa.Table,
    partitions: pa.Int64Array,
    offsets: pa.Int64Array,
    stored: Mapping[int, StoredCursors],
) -> pa.BooleanArray | None:
    """Per row, False when its lane's stored cursor says it is durable already; None: keep all.

    The lane is decided with the rule the cursors were stored with, so a changed
    ``late_after`` never makes a durable row look new.
    """
    keep: pa.BooleanArray | None = None
    for partition, cursors in stored.items():
        if cursors.on_time == cursors.late == 0:
            continue
        mine = pc.equal(partitions, partition)
        below = pc.and_(mine, pc.less(offsets, max(cursors.on_time, cursors.late)))
        if not pc.any(below).as_py():
            continue
        late = late_rows(table, cursors.late_after_us)
        cursor = pc.if_else(late, cursors.late, cursors.on_time) if late is not None else None
        durable = pc.and_(mine, pc.less(offsets, cursor if cursor is not None else cursors.on_time))
        keep = pc.invert(durable) if keep is None else pc.and_(keep, pc.invert(durable))
    if keep is None or pc.all(keep).as_py():
        return None
    return keep


def split_lanes(
    columns: tuple[pa.Table, pa.Int64Array, pa.Int64Array, pa.Int64Array],
    late: pa.BooleanArray | None,
) -> list[tuple[int, tuple[pa.Table, pa.Int64Array, pa.Int64Array, pa.Int64Array]]]:
    """A poll's (table, partitions, offsets, sizes) per lane, on time first; rows in order."""
    if late is None:
        return [(ON_TIME, columns)]
    on_time = pc.invert(late)
    return [
        (lane, tuple(column.filter(rows) for column in columns))  # type: ignore[misc]
        for lane, rows in ((ON_TIME, on_time), (LATE, late))
    ]


def poll_ends(partitions: pa.Int64Array, offsets: pa.Int64Array) -> dict[int, tuple[int, int]]:
    """Per partition in a poll: (first offset, offset after the last)."""
    if len(partitions) == 0:
        return {}
    ranges = (
        pa.table({"partition": partitions, "offset": offsets})
        .group_by("partition")
        .aggregate([("offset", "min"), ("offset", "max")])
    )
    return {
        partition: (first, last + 1)
        for partition, first, last in zip(
            ranges.column("partition").to_pylist(),
            ranges.column("offset_min").to_pylist(),
            ranges.column("offset_max").to_pylist(),
            strict=True,
        )
    }


def commit_cursors(
    added: Mapping[int, tuple[int, int]],
    held: tuple[Mapping[int, int], Mapping[int, int]],
) -> dict[int, tuple[int, int]]:
    """Per partition, the two lanes' cursors right after a drain (nothing in flight).

    ``added[p]`` is, per lane, the offset below which every row of that lane has been added
    to the lane's batch (or was durable before); ``held[lane][p]`` the first offset the
    lane's batch still holds. A lane holding rows of ``p`` is durable below its first held
    row; otherwise below what it has added.
    """
    return {
        partition: (
            held[ON_TIME].get(partition, lanes[ON_TIME]),
            held[LATE].get(partition, lanes[LATE]),
        )
        for partition, lanes in added.items()
    }


class LaneBook:
    """The runner's bookkeeping of both lanes per Kafka partition, since the assignment.

    ``added[p][lane]``: every row of the lane below this offset was added to the lane's
    batch or is durable, and the lane's next batch starts there. It starts at the first
    offset read after the assignment (the committed one: everything below is durable in
    both lanes), raised to the stored cursor, and moves to the end of each poll once all
    its rows are added.

    A cursor means something only under the rule it was made with. When a partition's
    stored cursors were made with another ``late_after`` than today's (the setting changed,
    or the lane was turned off), the partition keeps the stored rule (``rules``) until both
    lanes are level again (nothing held, equal cursors); only then does today's rule decide.
    """

    def __init__(self, late_after_us: int | None) -> None:
        self.rule = late_after_us
        self.stored: dict[int, StoredCursors] = {}
        self.added: dict[int, list[int]] = {}
        self.rules: dict[int, int | None] = {}
        """Partitions still on the rule of their stored cursors (it differs from ``rule``)."""

    def known(self, partition: int) -> bool:
        return partition in self.added

    def rule_of(self, partition: int) -> int | None:
        return self.rules.get(partition, self.rule)

    def start(self, partition: int, first_offset: int, stored: StoredCursors | None) -> None:
        """The first record read of ``partition``, and its cursor object if there is one."""
        if stored is None or max(stored.on_time, stored.late) <= first_offset:
            self.added[partition] = [first_offset, first_offset]  # level: nothing to skip
            return
        self.stored[partition] = stored
        if stored.late_after_us != self.rule:
            self.rules[partition] = stored.late_after_us
        self.added[partition] = [
            max(first_offset, stored.on_time),
            max(first_offset, stored.late),
        ]

    def keep(
        self, table: pa.Table, partitions: pa.Int64Array, offsets: pa.Int64Array
    ) -> pa.BooleanArray | None:
        """Rows not yet durable in their lane (None: all of them)."""
        return rows_to_keep(table, partitions, offsets, self.stored) if self.stored else None

    def late_mask(self, table: pa.Table, partitions: pa.Int64Array) -> pa.BooleanArray | None:
        """Per row, whether it goes to the late lane, by its partition's rule (None: none)."""
        mask = late_rows(table, self.rule)
        for partition, rule in self.rules.items():
            mine = pc.equal(partitions, partition)
            if not pc.any(mine).as_py():
                continue
            theirs = late_rows(table, rule)
            base = mask if mask is not None else pa.array([False] * table.num_rows)
            mask = pc.if_else(mine, theirs if theirs is not None else False, base)
        if mask is None or not pc.any(mask).as_py():
            return None
        return mask

    def polled(self, ends: Mapping[int, tuple[int, int]]) -> None:
        """Every row of a poll was added to its lane: ``ends[p] = (first, after last)``."""
        for partition, (_, end) in ends.items():
            added = self.added[partition]
            added[ON_TIME], added[LATE] = max(added[ON_TIME], end), max(added[LATE], end)
            stored = self.stored.get(partition)
            if stored is not None and end >= max(stored.on_time, stored.late):
                del self.stored[partition]  # read past it: nothing left to skip

    def drained(
        self,
        lane: int,
        next_offsets: Mapping[int, int],
        held: tuple[Mapping[int, int], Mapping[int, int]],
        *,
        between_polls: bool,
    ) -> dict[int, StoredCursors]:
        """A lane's batch was drained with ``next_offsets`` (after its last row, per
        partition); ``held`` the first offsets both batches still hold. The cursors (and
        the rule they are made with) that hold once the drained plan is durable.

        ``between_polls``: every row read so far was added to its lane. Only then can a
        partition on an old rule switch to today's: mid-poll, rows of the other lane may
        still come, routed by the old rule."""
        for partition, next_offset in next_offsets.items():
            added = self.added.get(partition)
            if added is not None:
                added[lane] = max(added[lane], next_offset)
        pairs = commit_cursors({p: (a[ON_TIME], a[LATE]) for p, a in self.added.items()}, held)
        cursors = {p: StoredCursors(on, late, self.rule_of(p)) for p, (on, late) in pairs.items()}
        for partition in list(self.rules) if between_polls else ():
            on_time, late = pairs.get(partition, (0, 1))
            if on_time == late and partition not in held[ON_TIME] and partition not in held[LATE]:
                del self.rules[partition]  # level: today's rule from the next row on
        return cursors

    def clear(self) -> None:
        self.stored.clear()
        self.added.clear()
        self.rules.clear()
