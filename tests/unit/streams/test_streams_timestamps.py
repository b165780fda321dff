"""Timestamp parsing: every supported form to exact UTC microseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hosepipe.config import TimestampField
from streams.timestamps import (
    TimestampError,
    TimestampParser,
    compile_timestamp,
    datetime_to_micros,
    format_micros,
    unit_by_magnitude,
)

T0 = datetime(2026, 11, 22, 6, 0, 0, 123456, tzinfo=UTC)
T0_US = 1795327200123456


def parser(fmt: str = "auto", **extra: str) -> TimestampParser:
    return compile_timestamp(TimestampField(path="$.ts", format=fmt, **extra))  # type: ignore[arg-type]


def test_reference_instant() -> None:
    assert datetime_to_micros(T0) == T0_US
    assert format_micros(T0_US) == "2026-11-22T06:00:00.123456Z"


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("epoch_s", 1795327200.123456),
        ("epoch_ms", 1795327200123.456),
        ("epoch_us", 1795327200123456),
        ("epoch_ns", 1795327200123456000),
        ("epoch_us", "1795327200123456"),
        ("auto", 1795327200123456),
        ("auto", 1795327200123456789),
        ("auto", "1795327200123456"),
        ("iso8601", "2026-11-22T06:00:00.123456Z"),
        ("iso8601", "2026-11-22T07:00:00.123456+01:00"),
        ("iso8601", "2026-11-22 01:00:00.123456-05:00"),
        ("auto", "2026-11-22T06:00:00.123456z"),
    ],
)
def test_formats_agree(fmt: str, value: object) -> None:
    assert parser(fmt)(value) == T0_US


def test_auto_by_magnitude_whole_units() -> None:
    parse = parser()
    assert parse(1795327200) == 1795327200_000000
    assert parse(1795327200123) == 1795327200123000


def test_naive_times_use_the_timezone() -> None:
    berlin = parser("iso8601", timezone="Europe/Berlin")
    assert berlin("2026-11-22T07:00:00") == datetime_to_micros(
        datetime(2026, 11, 22, 6, tzinfo=UTC)
    )
    # summer time: +02:00
    assert berlin("2026-07-01T12:00:00") == utc(2026, 7, 1, 10)
    # an explicit offset wins over the zone
    assert berlin("2026-11-22T06:00:00Z") == datetime_to_micros(
        datetime(2026, 11, 22, 6, tzinfo=UTC)
    )


def test_strptime() -> None:
    parse = parser("strptime", pattern="%d/%m/%Y %H:%M:%S", timezone="America/New_York")
    assert parse("22/11/2026 01:00:00") == utc(2026, 11, 22, 6)
    with pytest.raises(TimestampError, match="does not match pattern"):
        parse("2026-11-22")


def test_datetime_values_pass_through() -> None:
    assert parser("epoch_ms")(T0) == T0_US


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("auto", "yesterday"),
        ("auto", True),
        ("auto", None),
        ("auto", {"a": 1}),
        ("auto", float("nan")),
        ("epoch_ms", "12:00"),
        ("iso8601", 1795327200),
        ("iso8601", "2026-13-01T00:00:00Z"),
    ],
)
def test_garbage_is_an_error(fmt: str, value: object) -> None:
    with pytest.raises(TimestampError):
        parser(fmt)(value)


def test_unknown_zone_fails_at_compile() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        parser("iso8601", timezone="Mars/Olympus")


instants = st.datetimes(
    min_value=datetime(1974, 1, 1), max_value=datetime(4000, 1, 1), timezones=st.just(UTC)
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)


@given(instants, offsets)
def test_iso_roundtrip_any_offset(instant: datetime, offset: timezone) -> None:
    text = instant.astimezone(offset).isoformat()
    assert parser("iso8601")(text) == datetime_to_micros(instant)


@given(instants)
def test_epoch_units_roundtrip_and_auto_agrees(instant: datetime) -> None:
    us = datetime_to_micros(instant)
    whole_seconds = us // 1_000_000
    whole_ms = us // 1000
    assert parser("epoch_s")(whole_seconds) == whole_seconds * 1_000_000
    assert parser("epoch_ms")(whole_ms) == whole_ms * 1000
    assert parser("epoch_us")(us) == us
    assert parser("epoch_ns")(us * 1000 + 999) == us
    auto = parser("auto")
    assert auto(whole_seconds) == whole_seconds * 1_000_000
    assert auto(whole_ms) == whole_ms * 1000
    assert auto(us) == us
    assert auto(us * 1000) == us
    assert auto(str(us)) == us


@given(st.floats(min_value=1e9, max_value=9e10))
def test_magnitude_of_seconds(value: float) -> None:
    assert unit_by_magnitude(value) == "epoch_s"
    assert unit_by_magnitude(value * 1000) == "epoch_ms"
    assert unit_by_magnitude(value * 1e6) == "epoch_us"
    assert unit_by_magnitude(value * 1e9) == "epoch_ns"


def utc(*parts: int) -> int:
    return datetime_to_micros(datetime(*parts, tzinfo=UTC))  # type: ignore[arg-type,misc]
