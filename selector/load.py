"""The unit of work: rows of some lake files + their checkpoint rows, committed together.

:meth:`Loader.load` upserts a group of files into ``events`` and the rule tables, records
rejected rows, writes the files into ``selector_files`` and sends ``NOTIFY hosepipe_events``,
all inside one PostgreSQL transaction. A crash before COMMIT leaves no checkpoint (the files
are loaded again on the next run); after COMMIT everything is there and the checkpoint says
so. Upserts make a repeated load harmless, so "again" never means "twice". A big group's
``events`` rows may be split by event_id over more connections
(``selection.load_connections``): those shares commit just before the group's transaction,
so a crash in between leaves only ``events`` rows, which the next load upserts in place.

Upsert method (measured in bench/selector_load.py): the Arrow table is written as CSV by
pyarrow's C++ writer and streamed with ``COPY`` straight into the table inside a savepoint;
a unique violation (an event loaded before, or repeated in the batch) rolls back to it and
merges instead: COPY into a temporary table, then ``INSERT ... SELECT DISTINCT ON (key) ...
ON CONFLICT DO UPDATE``. ``executemany`` of ``INSERT ... ON CONFLICT`` is kept as
``method="insert"`` for comparison. A group of files is one transaction however many files
it holds: one COPY stream, one checkpoint statement, one NOTIFY.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg.types.json import Jsonb
from sqlalchemy import Engine, Table, text

from hosepipe.config import SelectionConfig
from hosepipe.db import NOTIFY_CHANNEL, LoadNotice, rule_tables
from selector.plan import Checkpoint, LakeFile, Shard
from selector.projection import CompiledRule, micros_to_datetime
from selector.rule_columns import RuleRows, column_names, project_table
from selector.screen import escape_nul, unstorable_rows

log = logging.getLogger(__name__)

Method = Literal["copy", "merge", "insert"]
Reject = tuple[str, str, dict[str, Any], str | None]  # event_id, reason, row, lake file
EVENT_COLUMNS = (
    "event_id",
    "source",
    "event_type",
    "occurred_at",
    "ingested_at",
    "subject",
    "payload",
    "attributes",
)
_CSV = pacsv.WriteOptions(include_header=False, batch_size=8192)
CSV_CHUNK_ROWS = 8192
MIN_ROWS_PER_CONNECTION = 10_000
SHARE_LOCK_TIMEOUT_S = 30.0  # a share's wait for a row another transaction holds
SPLIT_SAMPLE = 2048  # ids sorted to find the bounds of the shares


@dataclass
class LoadResult:
    """What one load committed."""

    files: int = 0
    events: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    min_occurred_at: datetime | None = None
    max_occurred_at: datetime | None = None

    def notice(self, shard: Shard) -> LoadNotice:
        return {
            "count": self.events,
            "tables": self.tables,
            "files": self.files,
            "min_occurred_at": _iso(self.min_occurred_at),
            "max_occurred_at": _iso(self.max_occurred_at),
            "shard": str(shard),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


# --------------------------------------------------------------------------- Arrow helpers


def attributes_json(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``map<string,string>`` → JSON object text per row (``{}`` for empty/null).

    Vectorized with Arrow string kernels (escape, join) when the strings have no control
    characters and no null values; otherwise a Python loop with orjson.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets
    keys, values = column.keys, column.items
    if len(offsets) == len(column) + 1 and len(column):
        # A slice (a COPY chunk of a bigger batch): its offsets index the whole children.
        first, last = offsets[0].as_py(), offsets[-1].as_py()
        if first or last != len(keys):
            keys, values = keys.slice(first, last - first), values.slice(first, last - first)
            offsets = pc.subtract(offsets, pa.scalar(first, offsets.type))
    plain = (
        len(offsets) == len(column) + 1
        and (not len(column) or offsets[0].as_py() == 0)
        and (not len(column) or offsets[-1].as_py() == len(keys))
        and keys.null_count == 0
        and values.null_count == 0
    )
    # One search of the character data (no copy) usually shows nothing to escape.
    special = plain and any(_holds(array, _JSON_SPECIAL) for array in (keys, values))
    if special:
        plain = not any(
            pc.any(pc.match_substring_regex(a, _CONTROL)).as_py() for a in (keys, values)
        )
    if not plain:
        return _attributes_json_slow(column)
    if special:
        keys, values = _escape(keys), _escape(values)
    pairs = pc.binary_join_element_wise('"', keys, '":"', values, '"', "")
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, pairs), ",")
    return pc.binary_join_element_wise("{", pc.fill_null(joined, ""), "}", "")


_CONTROL = "[\\x00-\\x1f]"
_JSON_SPECIAL = re.compile(rb'[\x00-\x1f"\\]')


def _holds(array: pa.Array, pattern: re.Pattern[bytes]) -> bool:
    """Whether the character data of a string ``array`` may match ``pattern`` (the whole
    data buffer is searched, also bytes outside a slice: a hit only means "look closer")."""
    if not pa.types.is_string(array.type):
        return True
    data = array.buffers()[2]
    return data is not None and pattern.search(memoryview(data)) is not None


def _escape(strings: pa.Array) -> pa.Array:
    backslashes = pc.replace_substring(strings, "\\", "\\\\")
    return pc.replace_substring(backslashes, '"', '\\"')


def _attributes_json_slow(column: pa.Array) -> pa.Array:
    offsets = column.offsets.to_pylist()
    keys = column.keys.to_pylist()
    values = column.items.to_pylist()
    out: list[str] = []  # offsets index the whole child arrays, also for a sliced column
    append = out.append
    for i in range(len(column)):
        start, end = offsets[i], offsets[i + 1]
        if start == end or not column[i].is_valid:
            append("{}")
        else:
            pairs = dict(zip(keys[start:end], values[start:end], strict=True))
            append(orjson.dumps(pairs).decode())
    return pa.array(out, type=pa.string())


def timestamp_text(column: pa.Array) -> pa.Array | None:
    """``timestamp[us, UTC]`` → ``YYYY-MM-DD HH:MM:SS.ffffffZ``, the CSV writer's text, built
    with integer kernels and look-ups: about 4 times cheaper than the writer's formatting.
    None (let the writer format it) for nulls or times outside 1970-01-01..9999-12-31."""
    if column.null_count or not len(column) or not pa.types.is_timestamp(column.type):
        return None
    micros = pc.cast(column, pa.int64()) if column.type.unit == "us" else None
    if micros is None:
        return None
    bounds = pc.min_max(micros).as_py()
    if bounds["min"] < 0 or bounds["max"] >= _MAX_MICROS:
        return None
    days = pc.divide(micros, _DAY_US)  # integer division: floor for non-negative values
    of_day = pc.subtract(micros, pc.multiply(days, _DAY_US))
    seconds = pc.divide(of_day, 1_000_000)
    fraction = pc.subtract(of_day, pc.multiply(seconds, 1_000_000))
    distinct = pc.unique(days)
    dates = pc.cast(pc.cast(pc.cast(distinct, pa.int32()), pa.date32()), pa.string())
    date_text = pc.take(dates, pc.index_in(days, distinct))
    clock = pc.take(_clock_texts(), seconds)
    micro_text = pc.utf8_lpad(pc.cast(fraction, pa.string()), 6, "0")
    return pc.binary_join_element_wise(date_text, " ", clock, ".", micro_text, "Z", "")


_DAY_US = 86_400_000_000
_MAX_MICROS = 253_402_300_800_000_000  # 10000-01-01T00:00Z
_CLOCK: list[pa.Array] = []


def _clock_texts() -> pa.Array:
    """``HH:MM:SS`` for every second of a day (built once)."""
    if not _CLOCK:
        _CLOCK.append(
            pa.array(
                [
                    f"{h:02d}:{m:02d}:{s:02d}"
                    for h in range(24)
                    for m in range(60)
                    for s in range(60)
                ]
            )
        )
    return _CLOCK[0]


def csv_events(table: pa.Table) -> bytes:
    """The events of ``table`` as CSV in :data:`EVENT_COLUMNS` order (attributes as JSON)."""
    return b"".join(csv_chunks(table))


def csv_chunks(
    table: pa.Table, rows: int = CSV_CHUNK_ROWS, names: Sequence[str] = EVENT_COLUMNS
) -> Iterator[bytes]:
    """CSV of the ``names`` columns of ``table`` in chunks of ``rows``, so COPY streams while
    the next is made.

    Map columns (the attributes) become JSON objects and timestamps text, each made once for
    the whole table (each kernel runs once, and searches each buffer once), then written
    chunk by chunk.
    """
    columns = []
    for name in names:
        column = table[name]
        if pa.types.is_map(column.type):
            column = attributes_json(column)
        elif pa.types.is_timestamp(column.type):
            text = timestamp_text(column.combine_chunks())
            column = column if text is None else text
        columns.append(column)
    for batch in pa.table(columns, names=list(names)).to_batches(max_chunksize=rows):
        sink = io.BytesIO()
        pacsv.write_csv(batch, sink, _CSV)
        yield sink.getvalue()


def event_dicts(table: pa.Table, names: Sequence[str] = EVENT_COLUMNS) -> list[dict[str, Any]]:
    """Rows as canonical event dicts (times as int µs, attributes as dict), ``names`` only."""
    ints = table.select(list(names))
    for name in ("occurred_at", "ingested_at"):
        if name in names:
            index = ints.schema.get_field_index(name)
            ints = ints.set_column(index, name, pc.cast(ints[name], pa.int64()))
    rows = ints.to_pylist()
    if "attributes" in names:
        for row in rows:
            row["attributes"] = dict(row["attributes"] or ())
    return rows


def event_id_shares(event_ids: pa.ChunkedArray | pa.Array, parts: int) -> list[pa.BooleanArray]:
    """Masks of up to ``parts`` ranges of event_id of about equal size (none empty).

    Every row is in exactly one range, and all rows of one event_id are in the same one.
    The bounds come from a sample of the ids (sorting them all cost more than the split
    saved); fewer ranges come back when one id fills more than a range.
    """
    if isinstance(event_ids, pa.ChunkedArray):
        event_ids = event_ids.combine_chunks()
    count = len(event_ids)
    if not count:
        return []
    step = max(1, count // SPLIT_SAMPLE)
    sample = event_ids if step == 1 else event_ids.take(pa.array(range(0, count, step)))
    ordered = sample.take(pc.sort_indices(sample)).to_pylist()
    bounds: list[str] = []
    for k in range(1, parts):
        bound = ordered[len(ordered) * k // parts]
        if bound is not None and (not bounds or bound > bounds[-1]):
            bounds.append(bound)
    # A row's range is the number of bounds at or below its id (a null id: range 0).
    ranges = pa.repeat(pa.scalar(0, pa.int8()), count)
    for bound in bounds:
        above = pc.fill_null(pc.greater_equal(event_ids, pa.scalar(bound)), False)
        ranges = pc.add(ranges, pc.cast(above, pa.int8()))
    masks = [pc.equal(ranges, pa.scalar(k, pa.int8())) for k in range(len(bounds) + 1)]
    return [mask for mask in masks if pc.any(mask).as_py()]


def candidates(rule: CompiledRule, table: pa.Table) -> pa.Table:
    """Vectorized pre-filter on source and event type before the per-row rule."""
    indices = candidate_indices(rule, table)
    return table if indices is None else table.take(indices)


def candidate_indices(rule: CompiledRule, table: pa.Table) -> pa.Array | None:
    """Rows of ``table`` the rule's sources and event types admit (None: every row)."""
    mask = None
    if rule.rule.sources:
        mask = pc.is_in(table["source"], pa.array(rule.rule.sources))
    if rule.rule.event_types:
        types = pc.is_in(table["event_type"], pa.array(rule.rule.event_types))
        mask = types if mask is None else pc.and_(mask, types)
    return None if mask is None else pc.indices_nonzero(pc.fill_null(mask, False))


def valid_json_mask(column: pa.ChunkedArray) -> list[bool]:
    """Which payloads parse as JSON (the slow path after PostgreSQL refused a batch)."""
    mask = []
    for value in column.to_pylist():
        try:
            orjson.loads(value)
            mask.append(True)
        except (orjson.JSONDecodeError, TypeError):
            mask.append(False)
    return mask


# --------------------------------------------------------------------------- the loader


@dataclass
class RuleBatch:
    """One rule's share of a load: typed rows by key and rejects per file, or events."""

    rule: CompiledRule
    table: Table
    rows: RuleRows | None = None  # a rule with columns: its typed rows
    rejected: list[tuple[str | None, list[tuple[str, str, dict[str, Any]]]]] = field(
        default_factory=list
    )
    events: pa.Table | None = None  # a rule without columns: the matching events
    origins: list[tuple[str, int]] = field(default_factory=list)  # of events: (file, rows)


class Loader:
    """Loads groups of lake files; one :meth:`load` call is one transaction (plus, for a big
    group, the ``events`` shares committed just before it)."""

    def __init__(
        self,
        engine: Engine,
        selection: SelectionConfig,
        shard: Shard = Shard(),
        method: Method = "copy",
    ) -> None:
        self.engine = engine
        self.selection = selection
        self.shard = shard
        self.method = method
        self.rules = [CompiledRule.compile(rule) for rule in selection.rules]
        self.tables: dict[str, Table] = rule_tables(selection)
        # A group is split over several connections only if each gets this many rows.
        self.min_rows_per_connection = MIN_ROWS_PER_CONNECTION
        self.share_lock_timeout_s = SHARE_LOCK_TIMEOUT_S

    def checkpoints(self) -> dict[str, Checkpoint]:
        """Files already loaded (path → size/etag)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT path, size, etag FROM selector_files"))
            return {path: Checkpoint(size, etag) for path, size, etag in rows}

    def log_positions(self, topic: str) -> dict[int, int]:
        """This shard's stored position in the file log ``topic`` (empty: none yet)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT partition, next_offset FROM selector_file_log"
                    " WHERE shard = :shard AND topic = :topic"
                ),
                {"shard": str(self.shard), "topic": topic},
            )
            return {partition: offset for partition, offset in rows}

    def save_log_positions(self, topic: str, positions: Mapping[int, int]) -> None:
        """Store this shard's file-log position, after the files before it are loaded."""
        if not positions:
            return
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO selector_file_log (shard, topic, partition, next_offset)"
                    " VALUES (:shard, :topic, :partition, :offset)"
                    " ON CONFLICT (shard, topic, partition) DO UPDATE"
                    " SET next_offset = excluded.next_offset, updated_at = now()"
                ),
                [
                    {"shard": str(self.shard), "topic": topic, "partition": p, "offset": o}
                    for p, o in sorted(positions.items())
                ],
            )

    def load(
        self, parts: Sequence[tuple[LakeFile, pa.Table]], *, checkpoint: bool = True
    ) -> LoadResult:
        """Upsert the rows of ``parts`` and (if ``checkpoint``) mark the files loaded."""
        result = LoadResult(files=len(parts))
        tables = [table for _, table in parts if table.num_rows]
        with self.engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, psycopg.Connection)
            with raw.cursor() as cur:
                if tables:
                    combined = pa.concat_tables(tables).combine_chunks()
                    origins = [(f.path, t.num_rows) for f, t in parts if t.num_rows]
                    bounds = pc.min_max(combined["occurred_at"]).as_py()
                    result.min_occurred_at = bounds["min"]
                    result.max_occurred_at = bounds["max"]
                    # Rule projection is Python work: it runs while PostgreSQL digests the
                    # events COPY (the client mostly waits on the socket then).
                    with ThreadPoolExecutor(1, thread_name_prefix="rules") as pool:
                        projected = pool.submit(self._project_rules, combined, origins)
                        if self.selection.load_all_events:
                            result.events = self._load_events(
                                cur, combined, origins, result, optimistic=checkpoint
                            )
                            result.tables["events"] = result.events
                        batches = projected.result()
                    self._write_rules(cur, batches, result, optimistic=checkpoint)
                if checkpoint and parts:
                    # One statement for the group's files, however many.
                    cur.execute(
                        "INSERT INTO selector_files (path, partition, size, etag, rows)"
                        " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[],"
                        " %s::bigint[]) ON CONFLICT (path) DO UPDATE SET"
                        " size = excluded.size, etag = excluded.etag, rows = excluded.rows,"
                        " partition = excluded.partition, loaded_at = now()",
                        [
                            [f.path for f, _ in parts],
                            [f.partition for f, _ in parts],
                            [f.size for f, _ in parts],
                            [f.etag for f, _ in parts],
                            [t.num_rows for _, t in parts],
                        ],
                    )
                if tables:
                    payload = orjson.dumps(result.notice(self.shard)).decode()
                    cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, payload))
        return result

    # ---------------------------------------------------------------- events-shaped tables

    def _load_events(
        self,
        cur: psycopg.Cursor[Any],
        combined: pa.Table,
        origins: Sequence[tuple[str, int]],
        result: LoadResult,
        optimistic: bool,
    ) -> int:
        """Upsert the group's rows into ``events``: on ``cur`` alone, or split by event_id
        over ``selection.load_connections`` connections when the group is big enough.

        The other connections commit their share before ``cur``'s transaction (which holds
        the checkpoint) can: a crash in between leaves rows without their checkpoint, and
        the next load of those files upserts them again (by event_id, so still once).
        Ranges of event_id keep every id on one connection, so no connection of the group
        waits for a row another one of it has not committed yet.
        """
        parts = min(
            self.selection.load_connections, combined.num_rows // self.min_rows_per_connection
        )
        masks = event_id_shares(combined["event_id"], parts) if parts > 1 else []
        rejects: list[Reject] = []
        if len(masks) < 2:
            count = self._upsert_events(cur, combined, "events", rejects, optimistic, origins)
        else:
            count = self._load_events_split(cur, combined, masks, origins, rejects, optimistic)
        # Every reject is written here, on the group's connection, also those of other
        # shares: rejected_rows is keyed by the escaped id, which two ids of different shares
        # can share, and no connection of the group may wait for another one's row.
        self._reject_rows(cur, "events", rejects, result)
        return count

    def _load_events_split(
        self,
        cur: psycopg.Cursor[Any],
        combined: pa.Table,
        masks: Sequence[pa.BooleanArray],
        origins: Sequence[tuple[str, int]],
        rejects: list[Reject],
        optimistic: bool,
    ) -> int:
        """The first share on ``cur``, the others at the same time on their own connections
        (committed when this returns); their rejects are added to ``rejects``."""
        shares = [(combined.filter(mask), _origins_in(origins, mask)) for mask in masks]
        with ThreadPoolExecutor(len(shares) - 1, thread_name_prefix="events") as pool:
            others = [
                pool.submit(self._load_events_share, table, share_origins, optimistic)
                for table, share_origins in shares[1:]
            ]
            table, share_origins = shares[0]
            count = self._upsert_events(cur, table, "events", rejects, optimistic, share_origins)
            failures: list[BaseException] = []
            for other in others:
                try:
                    loaded, rejected = other.result()
                except Exception as exc:  # the group fails; say what each share met
                    failures.append(exc)
                    continue
                count += loaded
                rejects.extend(rejected)
            for failure in failures[1:]:
                log.warning("another share of the group failed too", extra={"error": repr(failure)})
            if failures:
                raise failures[0]
        return count

    def _load_events_share(
        self, table: pa.Table, origins: Sequence[tuple[str, int]], optimistic: bool
    ) -> tuple[int, list[Reject]]:
        """One share of a split group, in its own transaction on its own connection: the
        rows it upserted, and its rejects (for the group's transaction to write)."""
        rejects: list[Reject] = []
        with self.engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            assert isinstance(raw, psycopg.Connection)
            with raw.cursor() as cur:
                # The group's connection waits for this one outside PostgreSQL, so a lock
                # cycle through another selector (a shard or a reload holding an id of this
                # share while it waits for one of the group's) is invisible to its deadlock
                # detector: this wait must end on its own. The group then fails and is
                # loaded again on the next pass.
                cur.execute(f"SET LOCAL lock_timeout = {int(self.share_lock_timeout_s * 1000)}")
                loaded = self._upsert_events(cur, table, "events", rejects, optimistic, origins)
        return loaded, rejects

    def _upsert_events(
        self,
        cur: psycopg.Cursor[Any],
        table: pa.Table,
        target: str,
        rejects: list[Reject],
        optimistic: bool = True,
        origins: Sequence[tuple[str, int]] = (),
    ) -> int:
        """Upsert events-shaped rows into ``target``; rows PostgreSQL cannot store (a NUL
        character, a payload that is not JSON) are added to ``rejects``, for the caller to
        write to ``rejected_rows``.

        ``copy``: COPY straight into the table (one pass, like a plain COPY) when the batch
        has no repeated event_id; a unique violation (a replayed or reloaded event) rolls
        back to a savepoint and merges instead. ``merge`` always merges. ``origins`` (lake
        path, rows) in table order name the file of a rejected row.
        """
        unstorable = unstorable_rows(table)
        if unstorable:
            # Screened before COPY: such a row would fail every load of its file.
            indices = pa.array(list(unstorable), pa.int64())
            rows = event_dicts(table.take(indices))
            rejects.extend(
                (str(row["event_id"]), reason, row, _origin(origins, index))
                for (index, reason), row in zip(unstorable.items(), rows, strict=True)
            )
            keep = [True] * table.num_rows
            for index in unstorable:
                keep[index] = False
            table = table.filter(pa.array(keep, pa.bool_()))
            origins = _without(origins, list(unstorable))
        # A repeated event_id (also within the batch) makes the direct COPY fail with a
        # unique violation, which falls back to the merge: no need to count ids first.
        if self.method == "copy" and optimistic and table.num_rows:
            cur.execute("SAVEPOINT hp_direct")
            try:
                self._copy_events(cur, table, target)
                cur.execute("RELEASE SAVEPOINT hp_direct")
                return int(table.num_rows)
            except (psycopg.errors.UniqueViolation, psycopg.errors.DataError):
                cur.execute("ROLLBACK TO SAVEPOINT hp_direct")
        cur.execute("SAVEPOINT hp_events")
        try:
            count = self._merge_events(cur, table, target)
        except psycopg.errors.DataError as exc:
            # A payload that is not JSON: reject those rows, load the rest.
            cur.execute("ROLLBACK TO SAVEPOINT hp_events")
            log.warning("invalid payloads in batch, rejecting them", extra={"error": str(exc)})
            mask = valid_json_mask(table["payload"])
            bad_indices = [i for i, ok in enumerate(mask) if not ok]
            bad = table.take(pa.array(bad_indices, pa.int64()))
            rejects.extend(
                (str(row["event_id"]), "payload is not valid JSON", row, _origin(origins, i))
                for i, row in zip(bad_indices, event_dicts(bad), strict=True)
            )
            count = self._merge_events(cur, table.filter(pa.array(mask)), target)
        cur.execute("RELEASE SAVEPOINT hp_events")
        return count

    @staticmethod
    def _copy_events(cur: psycopg.Cursor[Any], table: pa.Table, target: str) -> None:
        columns = ", ".join(EVENT_COLUMNS)
        with cur.copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT csv)") as copy:
            for chunk in csv_chunks(table):
                copy.write(chunk)

    def _merge_events(self, cur: psycopg.Cursor[Any], table: pa.Table, target: str) -> int:
        if table.num_rows == 0:
            return 0
        columns = ", ".join(EVENT_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in EVENT_COLUMNS if c != "event_id")
        extra_set = ", _loaded_at = now()" if target != "events" else ""
        conflict = f"ON CONFLICT (event_id) DO UPDATE SET {updates}{extra_set}"
        if self.method == "insert":
            rows = event_dicts(table)
            cur.executemany(
                f"INSERT INTO {target} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                f" {conflict}",
                [
                    (
                        r["event_id"],
                        r["source"],
                        r["event_type"],
                        micros_to_datetime(r["occurred_at"]),
                        micros_to_datetime(r["ingested_at"]),
                        r["subject"],
                        Jsonb(orjson.loads(r["payload"])),
                        Jsonb(r["attributes"]),
                    )
                    for r in _last_per_event_id(rows)
                ],
            )
            return len(rows)
        temp = f"_hp_{target}"
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {temp} (event_id text, source text,"
            " event_type text, occurred_at timestamptz, ingested_at timestamptz, subject text,"
            " payload text, attributes text) ON COMMIT DROP"
        )
        cur.execute(f"TRUNCATE {temp}")
        self._copy_events(cur, table, temp)
        cur.execute(
            f"INSERT INTO {target} ({columns}) SELECT DISTINCT ON (event_id) event_id, source,"
            " event_type, occurred_at, ingested_at, subject, payload::jsonb, attributes::jsonb"
            f" FROM {temp} ORDER BY event_id, ingested_at DESC {conflict}"
        )
        return int(cur.rowcount)

    # ---------------------------------------------------------------- rule tables

    def _project_rules(
        self, combined: pa.Table, origins: Sequence[tuple[str, int]]
    ) -> list[RuleBatch]:
        """What every rule makes of the group's rows (pure CPU work, no database).

        ``combined`` is the group's files concatenated, ``origins`` their (path, rows) in
        that order, which name the file of a rejected row.
        """
        batches = []
        for rule in self.rules:
            batch = RuleBatch(rule, self.tables[rule.name])
            batches.append(batch)
            indices = candidate_indices(rule, combined)
            picked = combined if indices is None else combined.take(indices)
            if not rule.columns:
                mask = self._matching(rule, picked)
                kept = picked.filter(pa.array(mask, pa.bool_()))
                if kept.num_rows:
                    rows = range(combined.num_rows) if indices is None else indices.to_pylist()
                    in_group = [False] * combined.num_rows
                    for row, ok in zip(rows, mask, strict=True):
                        in_group[row] = ok
                    batch.events = kept
                    batch.origins = _origins_in(origins, pa.array(in_group, pa.bool_()))
                continue
            output = project_table(rule, picked, event_dicts)
            if output.rejected:
                # Rejected rows are recorded whole: convert just those in full.
                ids = pa.array([event_id for event_id, _, _ in output.rejected], pa.string())
                positions = pc.index_in(ids, combined["event_id"]).to_pylist()
                found = [p for p in positions if p is not None]
                full = {
                    row["event_id"]: row
                    for row in event_dicts(combined.take(pa.array(found, pa.int64())))
                }
                by_file: dict[str | None, list[tuple[str, str, dict[str, Any]]]] = {}
                for (event_id, reason, event), position in zip(
                    output.rejected, positions, strict=True
                ):
                    file = _origin(origins, position) if position is not None else None
                    by_file.setdefault(file, []).append(
                        (event_id, reason, full.get(event_id, event))
                    )
                batch.rejected.extend(by_file.items())
            batch.rows = output
        return batches

    def _write_rules(
        self,
        cur: psycopg.Cursor[Any],
        batches: Sequence[RuleBatch],
        result: LoadResult,
        optimistic: bool,
    ) -> None:
        for batch in batches:
            name = str(batch.table.name)
            if not batch.rule.columns:
                count = 0
                if batch.events is not None:
                    rejects: list[Reject] = []
                    count = self._upsert_events(
                        cur, batch.events, name, rejects, optimistic, batch.origins
                    )
                    self._reject_rows(cur, batch.rule.name, rejects, result)
                result.tables[name] = count
                continue
            for file, rejected in batch.rejected:
                self._reject(cur, batch.rule.name, rejected, file, result)
            result.tables[name] = self._merge_rule_rows(cur, batch.rule, batch.table, batch.rows)

    @staticmethod
    def _matching(rule: CompiledRule, table: pa.Table) -> list[bool]:
        from selector.projection import EventView, Rejected

        mask = []
        for event in event_dicts(table):
            try:
                mask.append(rule.matches(EventView.of(event)))
            except Rejected:
                mask.append(False)
        return mask

    def _merge_rule_rows(
        self, cur: psycopg.Cursor[Any], rule: CompiledRule, table: Table, rows: RuleRows | None
    ) -> int:
        if rows is None or not rows.table.num_rows:
            return 0
        names = column_names(rule)
        quoted = ", ".join(f'"{n}"' for n in names)
        temp = f'"_hp_rule_{table.name}"'
        cur.execute(
            f'CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE "{table.name}" INCLUDING DEFAULTS)'
            " ON COMMIT DROP"
        )
        cur.execute(f"TRUNCATE {temp}")
        # Rows come in key order: concurrent shards then lock shared keys in the same order.
        with cur.copy(f"COPY {temp} ({quoted}) FROM STDIN (FORMAT csv)") as copy:
            for chunk in csv_chunks(rows.table, names=names):
                copy.write(chunk)
        key = ", ".join(f'"{k}"' for k in rule.key)
        updates = ", ".join(f'"{n}" = excluded."{n}"' for n in names if n not in rule.key)
        cur.execute(
            f'INSERT INTO "{table.name}" ({quoted}, _loaded_at) SELECT {quoted}, now()'
            f" FROM {temp} ON CONFLICT ({key}) DO UPDATE SET {updates}, _loaded_at = now()"
            f' WHERE "{table.name}"._occurred_at <= excluded._occurred_at'
        )
        return int(cur.rowcount)

    @classmethod
    def _reject(
        cls,
        cur: psycopg.Cursor[Any],
        rule: str,
        rejected: Sequence[tuple[str, str, dict[str, Any]]],
        file: str | None,
        result: LoadResult,
    ) -> None:
        cls._reject_rows(
            cur, rule, [(event_id, reason, row, file) for event_id, reason, row in rejected], result
        )

    @staticmethod
    def _reject_rows(
        cur: psycopg.Cursor[Any],
        rule: str,
        rejected: Sequence[Reject],
        result: LoadResult,
    ) -> None:
        """Record ``(event_id, reason, row, file)`` in rejected_rows (NULs escaped, since
        PostgreSQL could not store the row otherwise)."""
        if not rejected:
            return
        cur.executemany(
            'INSERT INTO rejected_rows (rule, event_id, reason, "row", file) VALUES'
            " (%s, %s, %s, %s, %s) ON CONFLICT (rule, event_id) DO UPDATE SET"
            ' reason = excluded.reason, "row" = excluded."row", file = excluded.file, at = now()',
            [
                (rule, escape_nul(event_id), reason, Jsonb(escape_nul(_json_row(row))), file)
                for event_id, reason, row, file in rejected
            ],
        )
        result.rejected[rule] = result.rejected.get(rule, 0) + len(rejected)


def _json_row(event: dict[str, Any]) -> dict[str, Any]:
    row = dict(event)
    for name in ("occurred_at", "ingested_at"):
        if isinstance(row.get(name), int):
            row[name] = _iso(micros_to_datetime(row[name]))
    return row


def _origin(origins: Sequence[tuple[str, int]], index: int) -> str | None:
    """The lake file of row ``index`` of a table made of ``origins`` (path, rows) in order."""
    for path, rows in origins:
        if index < rows:
            return path
        index -= rows
    return None


def _origins_in(origins: Sequence[tuple[str, int]], mask: pa.BooleanArray) -> list[tuple[str, int]]:
    """``origins`` of the table made of the rows ``mask`` keeps (files left empty are
    dropped)."""
    counts: list[tuple[str, int]] = []
    start = 0
    for path, rows in origins:
        kept = pc.sum(mask.slice(start, rows)).as_py() or 0
        if kept:
            counts.append((path, kept))
        start += rows
    return counts


def _without(origins: Sequence[tuple[str, int]], indices: Sequence[int]) -> list[tuple[str, int]]:
    """``origins`` after the rows at ``indices`` were removed from the table."""
    removed = [0] * len(origins)
    for index in indices:
        for n, (_, rows) in enumerate(origins):
            if index < rows:
                removed[n] += 1
                break
            index -= rows
    return [(path, rows - gone) for (path, rows), gone in zip(origins, removed, strict=True)]


def _last_per_event_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        previous = latest.get(row["event_id"])
        if previous is None or previous["ingested_at"] <= row["ingested_at"]:
            latest[row["event_id"]] = row
    return list(latest.values())
