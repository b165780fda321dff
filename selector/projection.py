"""Selection rules as pure functions: which events a rule takes, and its typed row.

A rule picks events by source, event type, time range and predicates on paths, then
projects paths into declared columns. A value that does not fit its column's type
(``amount: "abc"`` into ``numeric(12,2)``) rejects the whole row with a reason naming the
column, the value and the type; the selector records it in ``rejected_rows`` and goes on.

Paths (for columns and ``where`` predicates):

* an event field: ``event_id``, ``source``, ``event_type``, ``occurred_at``, ``ingested_at``,
  ``subject`` (also written ``$.event_id`` ...);
* ``$.payload.a.b[0]`` — into the JSON payload;
* ``$.attributes.key`` — an attribute.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import orjson

from hosepipe.config import ColumnSpec, Predicate, SelectionRule
from selector.screen import NUL, has_nul, nul_reason

EVENT_FIELDS = ("event_id", "source", "event_type", "occurred_at", "ingested_at", "subject")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "on", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "off", "0"})
_STEP = re.compile(r"\.([A-Za-z0-9_@-]+)|\[(\d+)\]")
MISSING = object()


class Rejected(Exception):
    """A value does not fit its column; ``str()`` is the reason recorded in rejected_rows."""


class PayloadError(Rejected):
    """The event's payload is not JSON, so no payload path can be read."""


class PathError(ValueError):
    """A rule path is not an event field, ``$.payload...`` or ``$.attributes.<key>``."""


@dataclass(frozen=True)
class Path:
    """A parsed rule path: a root (event field, payload or attributes) and steps into it."""

    root: str
    steps: tuple[str | int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Path:
        body = text[2:] if text.startswith("$.") else text
        head, _, _ = body.partition(".")
        head = head.split("[", 1)[0]
        if head in EVENT_FIELDS and body == head:
            return cls(head)
        if head not in ("payload", "attributes"):
            raise PathError(
                f"path {text!r}: use an event field ({', '.join(EVENT_FIELDS)}), "
                "$.payload.<path> or $.attributes.<key>"
            )
        rest = body[len(head) :]
        steps: list[str | int] = []
        pos = 0
        for match in _STEP.finditer(rest):
            if match.start() != pos:
                raise PathError(f"path {text!r}: cannot parse at {rest[pos:]!r}")
            steps.append(match[1] if match[1] is not None else int(match[2]))
            pos = match.end()
        if pos != len(rest):
            raise PathError(f"path {text!r}: cannot parse at {rest[pos:]!r}")
        if head == "attributes" and len(steps) != 1:
            raise PathError(f"path {text!r}: attributes take exactly one key")
        return cls(head, tuple(steps))

    @property
    def needs_payload(self) -> bool:
        return self.root == "payload"


@dataclass(frozen=True)
class EventView:
    """One lake event for the rules; ``payload`` is parsed lazily by :meth:`parsed_payload`."""

    event: Mapping[str, Any]  # canonical fields; occurred_at/ingested_at as int µs
    _cache: dict[str, Any]

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> EventView:
        return cls(event, {})

    def parsed_payload(self) -> Any:
        if "payload" not in self._cache:
            text = self.event.get("payload")
            try:
                self._cache["payload"] = orjson.loads(text) if text else None
            except orjson.JSONDecodeError as exc:
                raise PayloadError(f"payload is not valid JSON: {exc}") from exc
        return self._cache["payload"]

    def get(self, path: Path) -> Any:
        """The value at ``path``, or :data:`MISSING`."""
        if path.root in EVENT_FIELDS:
            value = self.event.get(path.root)
            if path.root in ("occurred_at", "ingested_at") and isinstance(value, int):
                return micros_to_datetime(value)
            return value
        if path.root == "attributes":
            attributes = self.event.get("attributes") or {}
            return attributes.get(path.steps[0], MISSING)
        node = self.parsed_payload()
        for step in path.steps:
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    return MISSING
                node = node[step]
            else:
                if not isinstance(node, dict) or step not in node:
                    return MISSING
                node = node[step]
        return node


def micros_to_datetime(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


# --------------------------------------------------------------------------- typing values


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def type_label(spec: ColumnSpec) -> str:
    if spec.type == "numeric" and spec.precision is not None:
        return f"numeric({spec.precision},{spec.scale or 0})"
    return spec.type


def to_column(value: Any, spec: ColumnSpec) -> Any:
    """``value`` converted to the column's Python type; raises :class:`Rejected`."""
    if value is None or value is MISSING:
        return None
    kind = spec.type
    if kind == "text":
        if isinstance(value, str):
            if NUL in value:
                raise Rejected(_NUL_TEXT)
            return value
        if isinstance(value, datetime):
            return value.isoformat()
        return orjson.dumps(value).decode()  # numbers, booleans, objects: their JSON text
    if kind == "jsonb":
        if has_nul(value):
            raise Rejected(_NUL_TEXT)
        return value.isoformat() if isinstance(value, datetime) else value
    if kind in ("integer", "bigint"):
        number = _integer(value)
        if number is None:
            raise _wrong(value, spec)
        low, high = INT_RANGES[kind]
        if not low <= number <= high:
            raise Rejected(f"{_describe(value)} is out of range for {kind}")
        return number
    if kind == "numeric":
        return _numeric(value, spec)
    if kind == "double":
        if isinstance(value, bool):
            raise _wrong(value, spec)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _wrong(value, spec) from None
        raise _wrong(value, spec)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        raise _wrong(value, spec)
    if kind == "timestamptz":
        return _timestamp(value, spec)
    if kind == "date":
        if isinstance(value, datetime):
            return value.astimezone(UTC).date()
        if isinstance(value, str):
            try:
                if len(value) == 10:
                    return date.fromisoformat(value)
                return _timestamp(value, spec).date()
            except ValueError:
                raise _wrong(value, spec) from None
        raise _wrong(value, spec)
    raise Rejected(f"unknown column type {kind!r}")


_NUL_TEXT = "contains a NUL character (U+0000, \\u0000), which PostgreSQL cannot store"


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _wrong(value: Any, spec: ColumnSpec) -> Rejected:
    return Rejected(f"{_describe(value)} is not {type_label(spec)}")


def _numeric(value: Any, spec: ColumnSpec) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _wrong(value, spec)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise _wrong(value, spec) from None
    if not number.is_finite():
        raise _wrong(value, spec)
    if spec.precision is None:
        return number
    scale = spec.scale or 0
    overflow = Rejected(f"{_describe(value)} overflows {type_label(spec)}")
    # Too many integer digits before rounding (which never removes any) is an overflow,
    # and quantize would fail on it anyway past the context's 28 digits (1e26 at scale 2).
    if number and number.adjusted() + 1 > spec.precision - scale:
        raise overflow
    try:
        number = number.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise overflow from None
    integer_digits = len(number.as_tuple().digits) - scale if number else 0
    if integer_digits > spec.precision - scale:
        raise overflow
    return number


def _timestamp(value: Any, spec: ColumnSpec) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        raise _wrong(value, spec)
    if isinstance(value, int | float):
        magnitude = abs(value)
        # Epoch numbers by magnitude, like the mapping's `auto` format.
        divisor = 1 if magnitude < 1e11 else 1e3 if magnitude < 1e14 else 1e6
        if magnitude >= 1e17:
            divisor = 1e9
        try:
            return EPOCH + timedelta(seconds=value / divisor)
        except OverflowError:
            raise _wrong(value, spec) from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _wrong(value, spec) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise _wrong(value, spec)


# --------------------------------------------------------------------------- rules


def _as_instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CompiledRule:
    """A selection rule with its paths parsed and bounds resolved, ready to apply per event."""

    rule: SelectionRule
    columns: tuple[tuple[str, Path, ColumnSpec], ...]
    where: tuple[tuple[Path, Predicate], ...]
    since: datetime | None
    until: datetime | None

    @classmethod
    def compile(cls, rule: SelectionRule) -> CompiledRule:
        def parse(text: str, where: str) -> Path:
            try:
                return Path.parse(text)
            except PathError as exc:
                raise PathError(f"selection rule {rule.name}, {where}: {exc}") from exc

        columns = tuple(
            (name, parse(spec.path, f"column {name}"), spec) for name, spec in rule.columns.items()
        )
        where = tuple((parse(p.path, "where"), p) for p in rule.where)
        return cls(rule, columns, where, _as_instant(rule.since), _as_instant(rule.until))

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def fields(self) -> tuple[str, ...]:
        """Event fields the rule reads (so callers convert only those columns)."""
        needed = {"event_id", "occurred_at"}
        if self.rule.sources:
            needed.add("source")
        if self.rule.event_types:
            needed.add("event_type")
        needed.update(path.root for _, path, _ in self.columns)
        needed.update(path.root for path, _ in self.where)
        return tuple(sorted(needed))

    @property
    def key(self) -> list[str]:
        return self.rule.key

    def matches(self, view: EventView) -> bool:
        """Source, type, time range and every ``where`` predicate hold for the event."""
        event = view.event
        rule = self.rule
        if rule.sources and event.get("source") not in rule.sources:
            return False
        if rule.event_types and event.get("event_type") not in rule.event_types:
            return False
        if self.since is not None or self.until is not None:
            occurred = micros_to_datetime(int(event["occurred_at"]))
            if self.since is not None and occurred < self.since:
                return False
            if self.until is not None and occurred >= self.until:
                return False
        return all(_holds(predicate, view.get(path)) for path, predicate in self.where)

    def project(self, view: EventView) -> dict[str, Any]:
        """The typed row of the rule's table; raises :class:`Rejected` with the reason."""
        event_id = view.event.get("event_id")
        if isinstance(event_id, str) and NUL in event_id:
            raise Rejected(nul_reason(["event_id"]))  # the row's _event_id could not be stored
        row: dict[str, Any] = {}
        for name, path, spec in self.columns:
            try:
                value = to_column(view.get(path), spec)
            except PayloadError:
                raise
            except Rejected as exc:
                raise Rejected(f"column {name} ({spec.path}): {exc}") from None
            if value is None and (not spec.nullable or name in self.rule.key):
                raise Rejected(f"column {name} ({spec.path}): missing or null, but required")
            row[name] = value
        return row


def _holds(predicate: Predicate, value: Any) -> bool:
    present = value is not MISSING and value is not None
    if predicate.exists is not None and present != predicate.exists:
        return False
    if "equals" in predicate.model_fields_set and not _equal(value, predicate.equals):
        return False
    return predicate.in_ is None or any(_equal(value, option) for option in predicate.in_)


def _equal(value: Any, expected: Any) -> bool:
    if value is MISSING:
        return False
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return value == expected
    return value == expected


@dataclass
class RuleOutput:
    """What one rule makes of a batch of events: rows by key, and rejects."""

    rows: dict[tuple[Any, ...], dict[str, Any]]
    rejected: list[tuple[str, str, dict[str, Any]]]  # (event_id, reason, event)


def apply_rule(rule: CompiledRule, events: Iterable[Mapping[str, Any]]) -> RuleOutput:
    """Project the matching events; on a repeated key the latest ``occurred_at`` wins.

    Each row carries ``_event_id`` and ``_occurred_at`` (the event that wrote it), which
    the upsert uses to keep the newest state when files arrive out of order.
    """
    output = RuleOutput({}, [])
    for event in events:
        view = EventView.of(event)
        try:
            if not rule.matches(view):
                continue
            row = rule.project(view)
        except Rejected as exc:
            output.rejected.append((str(event.get("event_id")), str(exc), dict(event)))
            continue
        occurred = micros_to_datetime(int(event["occurred_at"]))
        row["_event_id"] = event["event_id"]
        row["_occurred_at"] = occurred
        key = tuple(row[k] if k in row else event.get(k) for k in rule.key)
        previous = output.rows.get(key)
        if previous is None or previous["_occurred_at"] <= occurred:
            output.rows[key] = row
    return output
