"""The unit of work: rows of some lake files + their checkpoint rows, in ONE transaction.

:meth:`Loader.load` upserts a group of files into ``events`` and the rule tables, records
rejected rows, writes the files into ``selector_files`` and sends ``NOTIFY hosepipe_events``,
all inside one PostgreSQL transaction. A crash before COMMIT leaves nothing (the files are
loaded again on the next run); after COMMIT everything is there and the checkpoint says so.
Upserts make a repeated load harmless, so "again" never means "twice".

Upsert method (measured in bench/selector.py): the Arrow table is written as CSV by
pyarrow's C++ writer and streamed with ``COPY`` into a temporary table, then merged with
``INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT DO UPDATE``. ``executemany`` of
``INSERT ... ON CONFLICT`` is kept as ``method="insert"`` for comparison.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
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
from selector.projection import CompiledRule, RuleOutput, apply_rule, micros_to_datetime
from selector.screen import escape_nul, unstorable_rows

log = logging.getLogger(__name__)

Method = Literal["copy", "merge", "insert"]
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


@dataclass
class LoadResult:
    """What one transaction committed."""

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
    plain = (
        len(offsets) == len(column) + 1
        and offsets[0].as_py() == 0
        and offsets[-1].as_py() == len(keys)
        and keys.null_count == 0
        and values.null_count == 0
        and not pc.any(pc.match_substring_regex(keys, _CONTROL)).as_py()
        and not pc.any(pc.match_substring_regex(values, _CONTROL)).as_py()
    )
    if not plain:
        return _attributes_json_slow(column)
    pairs = pc.binary_join_element_wise('"', _escape(keys), '":"', _escape(values), '"', "")
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, pairs), ",")
    return pc.binary_join_element_wise("{", pc.fill_null(joined, ""), "}", "")


_CONTROL = "[\\x00-\\x1f]"


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


def csv_events(table: pa.Table) -> bytes:
    """The events of ``table`` as CSV in :data:`EVENT_COLUMNS` order (attributes as JSON)."""
    return b"".join(csv_chunks(table))


def csv_chunks(table: pa.Table, rows: int = CSV_CHUNK_ROWS) -> Iterator[bytes]:
    """CSV of ``table`` in chunks of ``rows``, so COPY streams while the next is made."""
    for batch in table.select(list(EVENT_COLUMNS)).to_batches(max_chunksize=rows):
        columns = [
            attributes_json(batch["attributes"]) if name == "attributes" else batch[name]
            for name in EVENT_COLUMNS
        ]
        sink = io.BytesIO()
        pacsv.write_csv(pa.RecordBatch.from_arrays(columns, names=list(EVENT_COLUMNS)), sink, _CSV)
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


def candidates(rule: CompiledRule, table: pa.Table) -> pa.Table:
    """Vectorized pre-filter on source and event type before the per-row rule."""
    mask = None
    if rule.rule.sources:
        mask = pc.is_in(table["source"], pa.array(rule.rule.sources))
    if rule.rule.event_types:
        types = pc.is_in(table["event_type"], pa.array(rule.rule.event_types))
        mask = types if mask is None else pc.and_(mask, types)
    return table if mask is None else table.filter(mask)


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
    output: RuleOutput = field(default_factory=lambda: RuleOutput({}, []))
    rejected: list[tuple[str, list[tuple[str, str, dict[str, Any]]]]] = field(default_factory=list)
    events: pa.Table | None = None  # a rule without columns: the matching events
    origins: list[tuple[str, int]] = field(default_factory=list)  # of events: (file, rows)


class Loader:
    """Loads groups of lake files; one :meth:`load` call is one transaction."""

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

    def checkpoints(self) -> dict[str, Checkpoint]:
        """Files already loaded (path → size/etag)."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT path, size, etag FROM selector_files"))
            return {path: Checkpoint(size, etag) for path, size, etag in rows}

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
                        projected = pool.submit(self._project_rules, parts)
                        if self.selection.load_all_events:
                            result.events = self._upsert_events(
                                cur,
                                combined,
                                "events",
                                "events",
                                result,
                                optimistic=checkpoint,
                                origins=origins,
                            )
                            result.tables["events"] = result.events
                        batches = projected.result()
                    self._write_rules(cur, batches, result, optimistic=checkpoint)
                if checkpoint and parts:
                    cur.executemany(
                        "INSERT INTO selector_files (path, partition, size, etag, rows)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (path) DO UPDATE SET"
                        " size = excluded.size, etag = excluded.etag, rows = excluded.rows,"
                        " partition = excluded.partition, loaded_at = now()",
                        [
                            (f.path, f.partition, f.size, f.etag, table.num_rows)
                            for f, table in parts
                        ],
                    )
                if tables:
                    payload = orjson.dumps(result.notice(self.shard)).decode()
                    cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, payload))
        return result

    # ---------------------------------------------------------------- events-shaped tables

    def _upsert_events(
        self,
        cur: psycopg.Cursor[Any],
        table: pa.Table,
        target: str,
        rule: str,
        result: LoadResult,
        optimistic: bool = True,
        origins: Sequence[tuple[str, int]] = (),
    ) -> int:
        """Upsert events-shaped rows into ``target``; rows PostgreSQL cannot store (a NUL
        character, a payload that is not JSON) go to ``rejected_rows`` under ``rule``.

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
            self._reject_rows(
                cur,
                rule,
                [
                    (str(row["event_id"]), reason, row, _origin(origins, index))
                    for (index, reason), row in zip(unstorable.items(), rows, strict=True)
                ],
                result,
            )
            keep = [True] * table.num_rows
            for index in unstorable:
                keep[index] = False
            table = table.filter(pa.array(keep, pa.bool_()))
            origins = _without(origins, list(unstorable))
        if (
            self.method == "copy"
            and optimistic
            and table.num_rows
            and pc.count_distinct(table["event_id"]).as_py() == table.num_rows
        ):
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
            self._reject_rows(
                cur,
                rule,
                [
                    (str(row["event_id"]), "payload is not valid JSON", row, _origin(origins, i))
                    for i, row in zip(bad_indices, event_dicts(bad), strict=True)
                ],
                result,
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

    def _project_rules(self, parts: Sequence[tuple[LakeFile, pa.Table]]) -> list[RuleBatch]:
        """What every rule makes of ``parts`` (pure CPU work, no database)."""
        batches = []
        for rule in self.rules:
            batch = RuleBatch(rule, self.tables[rule.name])
            batches.append(batch)
            if not rule.columns:
                picked = [(f.path, candidates(rule, t)) for f, t in parts if t.num_rows]
                picked = [(p, t.filter(pa.array(self._matching(rule, t)))) for p, t in picked]
                picked = [(p, t) for p, t in picked if t.num_rows]
                batch.events = pa.concat_tables([t for _, t in picked]) if picked else None
                batch.origins = [(p, t.num_rows) for p, t in picked]
                continue
            for file, part in parts:
                if not part.num_rows:
                    continue
                picked = candidates(rule, part)
                output = apply_rule(rule, event_dicts(picked, rule.fields))
                if output.rejected:
                    # Rejected rows are recorded whole: convert just those in full.
                    ids = pa.array([event_id for event_id, _, _ in output.rejected])
                    full = {
                        row["event_id"]: row
                        for row in event_dicts(picked.filter(pc.is_in(picked["event_id"], ids)))
                    }
                    batch.rejected.append(
                        (
                            file.path,
                            [
                                (event_id, reason, full.get(event_id, event))
                                for event_id, reason, event in output.rejected
                            ],
                        )
                    )
                for key, row in output.rows.items():
                    previous = batch.output.rows.get(key)
                    if previous is None or previous["_occurred_at"] <= row["_occurred_at"]:
                        batch.output.rows[key] = row
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
                    count = self._upsert_events(
                        cur, batch.events, name, batch.rule.name, result, optimistic, batch.origins
                    )
                result.tables[name] = count
                continue
            for file, rejected in batch.rejected:
                self._reject(cur, batch.rule.name, rejected, file, result)
            result.tables[name] = self._merge_rule_rows(cur, batch.rule, batch.table, batch.output)

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
        self, cur: psycopg.Cursor[Any], rule: CompiledRule, table: Table, output: RuleOutput
    ) -> int:
        if not output.rows:
            return 0
        names = [name for name, _, _ in rule.columns] + ["_event_id", "_occurred_at"]
        jsonb = {name for name, _, spec in rule.columns if spec.type == "jsonb"}
        quoted = ", ".join(f'"{n}"' for n in names)
        temp = f'"_hp_rule_{table.name}"'
        cur.execute(
            f'CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE "{table.name}" INCLUDING DEFAULTS)'
            " ON COMMIT DROP"
        )
        cur.execute(f"TRUNCATE {temp}")
        rows = list(output.rows.items())
        with contextlib.suppress(TypeError):  # mixed key types: any order is correct
            # Key order: concurrent shards then lock shared keys in the same order.
            rows.sort(key=lambda item: item[0])
        with cur.copy(f"COPY {temp} ({quoted}) FROM STDIN") as copy:
            for _, row in rows:
                copy.write_row(
                    [Jsonb(row[n]) if n in jsonb and row[n] is not None else row[n] for n in names]
                )
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
        rejected: Sequence[tuple[str, str, dict[str, Any], str | None]],
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
