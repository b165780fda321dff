"""Event times in whatever form a source writes them → microseconds since the epoch, UTC.

A parser is compiled once per source from :class:`hosepipe.config.TimestampField`:

- ``epoch_s`` / ``epoch_ms`` / ``epoch_us`` / ``epoch_ns``: a number (int, float or a numeric
  string) in that unit.
- ``auto``: numbers by magnitude (below 1e11 seconds, below 1e14 milliseconds, below 1e17
  microseconds, else nanoseconds — unambiguous for every date between 1973 and 5138), strings
  that look like numbers likewise, other strings as ISO-8601.
- ``iso8601``: ``2026-11-22T06:00:00Z``, ``...+01:00``, fractions, a space instead of ``T``,
  a date alone. Naive times (no offset) are read in the field's ``timezone``.
- ``strptime``: Python's ``datetime.strptime`` with ``pattern``; naive results in ``timezone``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hosepipe.config import TimestampField

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)

TimestampParser = Callable[[Any], int]

_EPOCH_FACTORS = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1, "epoch_ns": 0.001}


class TimestampError(ValueError):
    """A value cannot be read as a time in the configured format."""


def resolve_zone(name: str) -> tzinfo:
    """A tzinfo for ``UTC`` or an IANA name; ValueError names the zone when unknown."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def datetime_to_micros(value: datetime, zone: tzinfo = UTC) -> int:
    """Exact µs since the epoch; a naive ``value`` is taken as wall time in ``zone``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return (value - EPOCH) // ONE_MICROSECOND


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise TimestampError(f"expected a number, got a boolean {value!r}")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TimestampError(f"expected a finite number, got {value!r}")
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise TimestampError(f"expected a number, got {value!r}") from None
        return _number(number)
    raise TimestampError(f"expected a number, got {type(value).__name__} {value!r}")


def epoch_to_micros(value: Any, unit: str) -> int:
    """``value`` in ``unit`` (epoch_s|ms|us|ns) → µs, rounding fractions to the nearest µs."""
    number = _number(value)
    if unit == "epoch_ns":
        return int(number) // 1000 if isinstance(number, int) else round(number / 1000)
    factor = _EPOCH_FACTORS[unit]
    if isinstance(number, int):
        return number * int(factor)
    return round(number * factor)


def unit_by_magnitude(number: float) -> str:
    """Guess the epoch unit of a number from its size (see module docstring)."""
    size = abs(number)
    if size < 1e11:
        return "epoch_s"
    if size < 1e14:
        return "epoch_ms"
    if size < 1e17:
        return "epoch_us"
    return "epoch_ns"


def iso_to_micros(value: Any, zone: tzinfo = UTC) -> int:
    """ISO-8601 text → µs; naive times in ``zone``."""
    if not isinstance(value, str):
        raise TimestampError(f"expected ISO-8601 text, got {type(value).__name__} {value!r}")
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise TimestampError(f"not an ISO-8601 time: {value!r}") from None
    return datetime_to_micros(parsed, zone)


def compile_timestamp(spec: TimestampField) -> TimestampParser:
    """A function ``raw value -> µs UTC`` for ``spec``; raises :class:`TimestampError`.

    A ``datetime`` value (what Avro sources with timestamp logical types decode to) is taken
    as is, whatever the format.
    """
    parse = _compile_format(spec)
    zone = resolve_zone(spec.timezone)
    fmt = spec.format
    if fmt in _EPOCH_FACTORS and fmt != "epoch_ns":
        factor = int(_EPOCH_FACTORS[fmt])

        def parse_epoch(value: Any) -> int:
            if type(value) is int:  # the common case, without the general path's calls
                return value * factor
            if isinstance(value, datetime):
                return datetime_to_micros(value, zone)
            return parse(value)

        return parse_epoch

    def parse_value(value: Any) -> int:
        if isinstance(value, datetime):
            return datetime_to_micros(value, zone)
        return parse(value)

    return parse_value


def _compile_format(spec: TimestampField) -> TimestampParser:
    zone = resolve_zone(spec.timezone)
    fmt = spec.format
    if fmt in _EPOCH_FACTORS:
        return lambda value: epoch_to_micros(value, fmt)
    if fmt == "iso8601":
        return lambda value: iso_to_micros(value, zone)
    if fmt == "strptime":
        pattern = spec.pattern or ""

        def parse_strptime(value: Any) -> int:
            if not isinstance(value, str):
                raise TimestampError(f"expected text for pattern {pattern!r}, got {value!r}")
            try:
                parsed = datetime.strptime(value, pattern)
            except ValueError:
                raise TimestampError(f"{value!r} does not match pattern {pattern!r}") from None
            return datetime_to_micros(parsed, zone)

        return parse_strptime

    def parse_auto(value: Any) -> int:
        if isinstance(value, str):
            try:
                number = _number(value)
            except TimestampError:
                return iso_to_micros(value, zone)
        else:
            number = _number(value)
        return epoch_to_micros(number, unit_by_magnitude(number))

    return parse_auto


def format_micros(micros: int) -> str:
    """µs since the epoch → ``2026-11-22T06:00:00.123456Z`` (for people and DLQ headers).

    Values outside the years 1 to 9999 have no calendar date here; they are written as the
    number with the reason (``1000000000000000000000000000 µs since the epoch (after year
    9999)``), never an exception: this text goes into error messages.
    """
    try:
        return (EPOCH + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, ValueError):
        where = "after year 9999" if micros > 0 else "before year 1"
        return f"{micros} µs since the epoch ({where})"
