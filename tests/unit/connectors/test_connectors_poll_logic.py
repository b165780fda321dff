"""Pure decisions of the pollers: requests, pagination, backoff, SQL batches, cursors."""

from __future__ import annotations

import datetime
import decimal
import gzip
import io
from datetime import timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.pull.formats import FormatError, format_of, iter_records
from connectors.pull.http_poller import (
    PollFailed,
    Request,
    build_request,
    newest,
    next_position,
    records_of,
    retry_delay,
)
from connectors.pull.runner import PollHealth, poller_status
from connectors.pull.sql_poller import decode_cursor, encode_cursor, trim_batch
from hosepipe.config import HttpPull


def spec(**kwargs: object) -> HttpPull:
    return HttpPull.model_validate({"type": "http", "url": "http://api/items", **kwargs})


def test_cursor_pagination_with_incremental_param() -> None:
    s = spec(
        pagination={"kind": "cursor", "cursor_path": "$.next", "cursor_param": "after"},
        incremental_param="since",
        incremental_path="$.t",
        params={"limit": "10"},
    )
    first = build_request(s, None, None)
    assert first == Request("http://api/items", {"limit": "10"})
    later = build_request(s, {"cursor": "abc"}, 42)
    assert later.params == {"limit": "10", "since": "42", "after": "abc"}
    assert next_position(s, first, None, {"next": "abc"}, [{"t": 1}]) == {"cursor": "abc"}
    assert next_position(s, first, None, {"next": None}, [{"t": 1}]) is None
    assert next_position(s, first, {"cursor": "abc"}, {"next": "abc"}, [{"t": 1}]) is None
    assert next_position(s, first, None, {"next": "x"}, []) is None


def test_next_link_and_page_pagination() -> None:
    link = spec(pagination={"kind": "next_link", "next_link_path": "$.links.next"})
    request = build_request(link, None, None)
    following = next_position(link, request, None, {"links": {"next": "/items?p=2"}}, [{}])
    assert following == {"url": "http://api/items?p=2"}
    assert build_request(link, following, None) == Request("http://api/items?p=2", {})
    paged = spec(pagination={"kind": "page", "page_size": 2, "page_size_param": "size"})
    assert build_request(paged, None, None).params == {"size": "2", "page": "1"}
    assert next_position(paged, request, None, {}, [{}, {}]) == {"page": 2}
    assert next_position(paged, request, {"page": 2}, {}, [{}]) is None


def test_records_and_newest() -> None:
    s = spec(records_path="$.data", incremental_path="$.t")
    assert records_of(s, {"data": [{"t": 1}, 5, {"t": 3}]}) == [{"t": 1}, {"t": 3}]
    assert records_of(s, {}) == []
    with pytest.raises(PollFailed):
        records_of(s, {"data": {"t": 1}})
    assert newest(s, 2, [{"t": 1}, {"t": 3}, {}]) == 3
    assert newest(s, "2026-01-02", [{"t": "2026-01-01"}]) == "2026-01-02"


def test_retry_delay_honours_retry_after() -> None:
    assert retry_delay({"Retry-After": "7"}, 0, 300) == 7
    assert retry_delay({"Retry-After": "900"}, 0, 60) == 60
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)
    assert 25 <= retry_delay({"Retry-After": format_datetime(when, usegmt=True)}, 0, 300) <= 30


@given(st.integers(0, 30), st.floats(1, 600))
def test_backoff_is_bounded_and_grows(attempt: int, cap: float) -> None:
    delay = retry_delay({}, attempt, cap)
    assert 0 < delay <= cap
    assert delay >= min(cap, 2.0 ** min(attempt, 16)) / 2


@given(st.lists(st.integers(0, 5), min_size=1, max_size=30).map(sorted), st.integers(1, 30))
def test_trim_batch_never_splits_a_value(values: list[int], size: int) -> None:
    rows = [{"c": v} for v in values[:size]]
    kept = trim_batch(rows, "c", size)
    assert kept == rows[: len(kept)] and kept
    if len(kept) < len(rows):
        assert kept[-1]["c"] != rows[len(kept)]["c"]  # the cut falls between two values


@pytest.mark.parametrize(
    "value",
    [
        17,
        "abc",
        decimal.Decimal("12.50"),
        datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        datetime.date(2026, 1, 2),
        1.5,
    ],
)
def test_cursor_round_trip(value: object) -> None:
    assert decode_cursor(encode_cursor(value)) == value
    assert decode_cursor(None) is None


def test_formats() -> None:
    assert format_of("a.csv.gz") == "csv" and format_of("a.jsonl") == "jsonl"
    assert format_of("noext", "csv") == "csv"
    with pytest.raises(FormatError):
        format_of("data.bin")
    compressed = io.BytesIO(gzip.compress(b'{"a": 1}\n\n{"a": 2}\n'))
    assert list(iter_records(compressed, "x.ndjson")) == [{"a": 1}, {"a": 2}]
    with pytest.raises(FormatError, match="line 2"):
        list(iter_records(io.BytesIO(b'{"a": 1}\n{oops\n'), "x.jsonl"))


def _poller(sweeps: int, since_good: float, error: str | None, interval: float = 10.0) -> Any:
    spec = SimpleNamespace(interval=timedelta(seconds=interval), type="http")
    return SimpleNamespace(
        source="feed",
        spec=spec,
        sweeps=sweeps,
        last_complete=1000.0 - since_good,
        last_error=error,
    )


@pytest.mark.parametrize(
    ("sweeps", "since_good", "error", "state"),
    [
        (0, 1.0, None, "starting"),
        (3, 5.0, None, "ok"),
        (3, 5.0, "HTTP 503 from the API", "failing"),
        (3, 3 * 10 + 61.0, None, "stale"),
        (0, 3 * 10 + 61.0, None, "stale"),  # a first sweep that never finishes
    ],
)
def test_poller_status_states(
    sweeps: int, since_good: float, error: str | None, state: str
) -> None:
    status = poller_status(_poller(sweeps, since_good, error), now=1000.0)
    assert status["state"] == state
    assert status["last_error"] == error


def test_poll_health_is_503_only_when_the_loop_is_not_running() -> None:
    health = PollHealth(pollers=[_poller(3, 5.0, "HTTP 503 from the API")])
    assert health()["ok"] is False  # not started yet
    health.running = True
    report = health()
    assert report["ok"] is True and report["degraded"] is True
    assert report["pollers"]["feed"]["state"] == "failing"
