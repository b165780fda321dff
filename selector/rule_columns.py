"""A rule's rows for a batch as Arrow columns, ready for one CSV ``COPY``.

:func:`project_table` gives what :func:`selector.projection.apply_rule` gives for the same
events (the same rows, the same winner per key, the same reasons for rejects), but works
from the batch's Arrow columns: event fields are read as columns, ``occurred_at`` never
becomes a Python datetime, a payload is parsed once per row, and each value goes through
the same :func:`~selector.projection.to_column`. A row on which anything is unusual (a
value that does not fit its column, a missing required value, a payload that is not JSON,
a NUL in the event id) is handed to the rule's own per-row :meth:`CompiledRule.project`,
so what happens to it, and the reason recorded, is word for word the generic path's.

Rules this shortcut does not cover (``where`` predicates, ``since``/``until``, a key that
is not one of the rule's columns) run :func:`apply_rule` on event dicts; the result is
converted to the same columns, so the loader has one write path.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from hosepipe.config import ColumnSpec
from selector.projection import (
    EPOCH,
    MISSING,
    CompiledRule,
    EventView,
    Rejected,
    apply_rule,
    micros_to_datetime,
    to_column,
)
from selector.screen import NUL

TIMESTAMP = pa.timestamp("us", "UTC")
META_COLUMNS = ("_event_id", "_occurred_at")
_ARROW_FIELDS = ("occurred_at", "ingested_at")  # kept as Arrow timestamps for timestamptz


@dataclass
class RuleRows:
    """One rule's result for a batch: a table of typed rows (one per key, in key order) and
    the rejected events as ``(event_id, reason, event)``."""

    table: pa.Table
    rejected: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def arrow_type(spec: ColumnSpec) -> pa.DataType:
    """How a column travels to PostgreSQL: CSV text of this Arrow type.

    Numbers PostgreSQL must read exactly (numeric, double) and JSON travel as text.
    """
    if spec.type in ("integer", "bigint"):
        return pa.int64()
    if spec.type == "boolean":
        return pa.bool_()
    if spec.type == "timestamptz":
        return TIMESTAMP
    if spec.type == "date":
        return pa.date32()
    return pa.string()


def column_names(rule: CompiledRule) -> list[str]:
    return [name for name, _, _ in rule.columns] + list(META_COLUMNS)


def project_table(
    rule: CompiledRule,
    table: pa.Table,
    event_dicts: Callable[[pa.Table, Sequence[str]], list[dict[str, Any]]],
) -> RuleRows:
    """The rule's rows for the events of ``table`` (already narrowed to its sources and
    event types); ``event_dicts(table, names)`` converts rows the way the loader does."""
    if not _columnar(rule, table):
        output = apply_rule(rule, event_dicts(table, rule.fields))
        return RuleRows(rows_table(rule, output.rows), output.rejected)
    return _Columnar(rule, table, event_dicts).run()


def _columnar(rule: CompiledRule, table: pa.Table) -> bool:
    names = {name for name, _, _ in rule.columns}
    return (
        not rule.where
        and rule.since is None
        and rule.until is None
        and all(key in names for key in rule.key)
        and table["occurred_at"].null_count == 0
        and table["event_id"].null_count == 0
    )


class _Slow(Exception):
    """This row needs the generic per-row path."""


_BAD_JSON = object()


class _Columnar:
    """One batch through a rule's generated row function (see :func:`_row_factory`)."""

    def __init__(
        self,
        rule: CompiledRule,
        table: pa.Table,
        event_dicts: Callable[[pa.Table, Sequence[str]], list[dict[str, Any]]],
    ) -> None:
        self.rule = rule
        self.table = table
        self.event_dicts = event_dicts
        self.plan = _plan(rule)

    def _list(self, name: str) -> list[Any]:
        column = self.table[name]
        if name in _ARROW_FIELDS:
            column = pc.cast(column, pa.int64())
        return column.to_pylist()  # type: ignore[no-any-return]

    def _payload_docs(self) -> list[Any]:
        docs: list[Any] = []
        append = docs.append
        loads = orjson.loads
        for text in self.table["payload"].to_pylist():
            try:
                append(loads(text) if text else None)
            except orjson.JSONDecodeError:
                append(_BAD_JSON)
        return docs

    def run(self) -> RuleRows:
        plan = self.plan
        ids = self._list("event_id")
        occurred = self._list("occurred_at")
        inputs: dict[str, list[Any]] = {"event_id": ids, "occurred_at": occurred}
        for name in plan.fields:
            if name not in inputs:
                inputs[name] = self._list(name)
        docs = self._payload_docs() if plan.payload else []
        attributes = (
            [dict(pairs or ()) for pairs in self.table["attributes"].to_pylist()]
            if plan.attributes
            else []
        )
        project_row = plan.factory(docs, attributes, *(inputs[name] for name in plan.fields))
        key_at = plan.key_at
        winners: dict[tuple[Any, ...], tuple[int, int, list[Any]]] = {}
        rejected: list[tuple[str, str, dict[str, Any]]] = []
        for i in range(self.table.num_rows):
            try:
                if NUL in ids[i]:
                    raise _Slow
                values = project_row(i)
            except (_Slow, Rejected):
                generic = self._generic(i)
                if isinstance(generic, tuple):
                    rejected.append(generic)
                    continue
                values = [generic[name] for name in plan.python]
            key = tuple([values[index] for index in key_at])
            previous = winners.get(key)
            # The latest event wins a key; a later row wins a tie (as in apply_rule).
            if previous is None or previous[1] <= occurred[i]:
                winners[key] = (i, occurred[i], values)
        ordered = list(winners.items())
        with contextlib.suppress(TypeError):  # mixed key types: any order is correct
            # Key order: concurrent shards then lock shared keys in the same order.
            ordered.sort(key=lambda item: item[0])
        return RuleRows(self._table([row for _, row in ordered]), rejected)

    def _generic(self, i: int) -> dict[str, Any] | tuple[str, str, dict[str, Any]]:
        """Row ``i`` through the rule's own per-row path: its row, or the reject."""
        event = self.event_dicts(self.table.slice(i, 1), self.rule.fields)[0]
        try:
            return self.rule.project(EventView.of(event))
        except Rejected as exc:
            return (str(event.get("event_id")), str(exc), dict(event))

    def _table(self, rows: list[tuple[int, int, list[Any]]]) -> pa.Table:
        indices = pa.array([index for index, _, _ in rows], pa.int64())
        columns: list[pa.Array | pa.ChunkedArray] = []
        position = 0
        for name, _, spec in self.rule.columns:
            if name in self.plan.arrow:
                column = self.table[self.plan.arrow[name]].take(indices)
                columns.append(pc.cast(column, TIMESTAMP))
            else:
                columns.append(_arrow_values([values[position] for _, _, values in rows], spec))
                position += 1
        columns.append(self.table["event_id"].take(indices))
        columns.append(pa.array([occurred for _, occurred, _ in rows], pa.int64()).cast(TIMESTAMP))
        return pa.table(columns, names=column_names(self.rule))


@dataclass(frozen=True)
class _Plan:
    """A rule compiled for the columnar pass."""

    arrow: dict[str, str]  # column -> time field taken straight from Arrow
    python: list[str]  # columns the row function returns, in order
    key_at: list[int]  # positions of the key columns in the row function's list
    fields: list[str]  # event fields the row function reads, in its arguments' order
    payload: bool
    attributes: bool
    factory: Callable[..., Callable[[int], list[Any]]]


_PLANS: dict[int, tuple[CompiledRule, _Plan]] = {}


def _plan(rule: CompiledRule) -> _Plan:
    cached = _PLANS.get(id(rule))
    if cached is None or cached[0] is not rule:
        cached = _PLANS[id(rule)] = (rule, _compile(rule))
    return cached[1]


def _compile(rule: CompiledRule) -> _Plan:
    """Generate the rule's row function: ``row(i) -> [typed values]`` for the columns not
    taken from Arrow, as straight-line code; it raises :class:`_Slow` or
    :class:`Rejected` when the row needs the generic path.

    Values are read with :meth:`EventView.get`'s meaning (orjson gives exact ``dict`` and
    ``list`` types) and converted by :func:`to_column`; the common cases skip the call: a
    text value that is already a string without NUL, and for a non-key ``numeric(p,s)`` a
    string already in the canonical form ``str(Decimal)`` of the rounded value would have
    (travelling as text, the value is the same).
    """
    # Columns taken straight from Arrow: timestamptz of a time field (never null there).
    arrow = {
        name: path.root
        for name, path, spec in rule.columns
        if spec.type == "timestamptz" and path.root in _ARROW_FIELDS and name not in rule.key
    }
    python = [(name, path, spec) for name, path, spec in rule.columns if name not in arrow]
    fields = sorted({path.root for _, path, _ in python if path.root in EVENT_FIELD_ROOTS})
    namespace: dict[str, Any] = {
        "MISSING": MISSING,
        "NUL": NUL,
        "BAD": _BAD_JSON,
        "_Slow": _Slow,
        "to_column": to_column,
        "micros_to_datetime": micros_to_datetime,
    }
    body: list[str] = []
    uses_payload = any(path.root == "payload" for _, path, _ in python)
    uses_attributes = any(path.root == "attributes" for _, path, _ in python)
    if uses_payload:
        body += ["doc = docs[i]", "if doc is BAD:", "    raise _Slow"]
    if uses_attributes:
        body.append("attrs = attributes[i]")
    for k, (name, path, spec) in enumerate(python):
        v = f"v{k}"
        namespace[f"S{k}"] = spec
        if path.root == "payload":
            body.append(f"{v} = doc")
            for step in path.steps:
                if isinstance(step, int):
                    body.append(
                        f"{v} = {v}[{step}] if type({v}) is list and {step} < len({v}) else MISSING"
                    )
                else:
                    body.append(
                        f"{v} = {v}.get({step!r}, MISSING) if type({v}) is dict else MISSING"
                    )
        elif path.root == "attributes":
            body.append(f"{v} = attrs.get({path.steps[0]!r}, MISSING)")
        elif path.root in _ARROW_FIELDS:
            body.append(f"{v} = micros_to_datetime(F_{path.root}[i])")
        else:
            body.append(f"{v} = F_{path.root}[i]")
        if spec.type == "text":
            body += [
                f"if type({v}) is not str or NUL in {v}:",
                f"    {v} = None if {v} is None or {v} is MISSING else to_column({v}, S{k})",
            ]
        elif spec.type == "numeric" and spec.precision is not None and name not in rule.key:
            namespace[f"R{k}"] = _canonical_decimal(spec.precision, spec.scale or 0).fullmatch
            body += [
                f"if type({v}) is not str or R{k}({v}) is None:",
                f"    {v} = to_column({v}, S{k})",
            ]
        else:
            body.append(f"{v} = to_column({v}, S{k})")
        if not spec.nullable or name in rule.key:
            body += [f"if {v} is None:", "    raise _Slow"]
    body.append(f"return [{', '.join(f'v{k}' for k in range(len(python)))}]")
    arguments = ", ".join(["docs", "attributes", *(f"F_{name}" for name in fields)])
    inner = "\n".join("        " + line for line in body)
    source = f"def factory({arguments}):\n    def row(i):\n{inner}\n    return row\n"
    exec(compile(source, f"<rule {rule.name}>", "exec"), namespace)
    names = [name for name, _, _ in python]
    return _Plan(
        arrow=arrow,
        python=names,
        key_at=[names.index(key) for key in rule.key],
        fields=fields,
        payload=uses_payload,
        attributes=uses_attributes,
        factory=namespace["factory"],
    )


EVENT_FIELD_ROOTS = ("event_id", "source", "event_type", "occurred_at", "ingested_at", "subject")


def _canonical_decimal(precision: int, scale: int) -> re.Pattern[str]:
    """Strings that are ``str()`` of their own value rounded to ``numeric(precision, scale)``:
    no sign but ``-``, no leading zeros, exactly ``scale`` decimals, within the precision."""
    whole = precision - scale
    integer = "0" if whole <= 0 else f"(?:0|[1-9][0-9]{{0,{whole - 1}}})"
    fraction = rf"\.[0-9]{{{scale}}}" if scale else ""
    return re.compile(f"-?{integer}{fraction}")


def rows_table(rule: CompiledRule, rows: dict[tuple[Any, ...], dict[str, Any]]) -> pa.Table:
    """Typed rows by key (:func:`apply_rule`'s) as the columns :func:`project_table` makes."""
    items = list(rows.items())
    with contextlib.suppress(TypeError):  # mixed key types: any order is correct
        items.sort(key=lambda item: item[0])
    ordered = [row for _, row in items]
    columns = [
        _arrow_values([row[name] for row in ordered], spec) for name, _, spec in rule.columns
    ]
    columns.append(pa.array([row["_event_id"] for row in ordered], pa.string()))
    columns.append(pa.array([row["_occurred_at"] for row in ordered], TIMESTAMP))
    return pa.table(columns, names=column_names(rule))


def _arrow_values(values: list[Any], spec: ColumnSpec) -> pa.Array:
    """Converted column values (what :func:`to_column` returns) as an Arrow array."""
    kind = spec.type
    if kind == "jsonb":
        values = [None if v is None else orjson.dumps(v).decode() for v in values]
    elif kind == "numeric":
        values = [None if v is None else str(v) for v in values]
    elif kind == "double":
        values = [None if v is None else _FLOAT_WORDS.get(repr(v), repr(v)) for v in values]
    elif kind == "timestamptz":
        values = [None if v is None else _micros(v) for v in values]
        return pa.array(values, pa.int64()).cast(TIMESTAMP)
    return pa.array(values, arrow_type(spec))


_FLOAT_WORDS = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}  # PostgreSQL's spelling


def _micros(value: datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
