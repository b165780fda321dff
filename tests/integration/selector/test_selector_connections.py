"""A big group's ``events`` rows load over several connections (split by event_id): every
event still lands once, rejects keep their file, and the checkpoint commits last, so a crash
between the shares' commits and the group's leaves rows that the next run upserts again."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from hosepipe.config import PipelineConfig
from hosepipe.db import NOTIFY_CHANNEL
from hosepipe.settings import Settings
from selector.load import Loader, Method
from selector.runner import RunOptions, Selector
from selector.schema import upgrade
from selector.service import build_selector

pytestmark = pytest.mark.integration

NUL_REASON = "contains a NUL character (U+0000, \\u0000)"


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


@pytest.fixture
def split_selector(
    selector_settings: Settings, write_pipeline: Callable[..., PipelineConfig]
) -> Iterator[Callable[..., Selector]]:
    """Selectors whose groups split over ``connections`` from 10 rows on (their connection
    pools are closed after the test)."""
    engines: list[Engine] = []

    def make(connections: int, method: Method = "copy") -> Selector:
        pipeline = write_pipeline(load_connections=connections)
        options = RunOptions(progress=False, method=method)
        migrating = build_selector(selector_settings, pipeline, options)
        upgrade(migrating.engine, pipeline.selection)
        migrating.engine.dispose()
        selector = build_selector(selector_settings, pipeline, options)
        selector.loader.min_rows_per_connection = 10
        engines.append(selector.engine)
        return selector

    yield make
    for engine in engines:
        engine.dispose()


def count_shares(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows of every share loaded on a connection of its own (a spy; the load is real)."""
    shares: list[int] = []
    original = Loader._load_events_share

    def spy(self: Loader, table: Any, origins: Any, optimistic: bool) -> Any:
        shares.append(table.num_rows)
        return original(self, table, origins, optimistic)

    monkeypatch.setattr(Loader, "_load_events_share", spy)
    return shares


@pytest.mark.parametrize("method", ["copy", "merge"])
def test_a_split_group_loads_every_event_once_with_rejects_and_one_notice(
    method: Method,
    make_event: Callable[..., dict[str, Any]],
    selector_settings: Settings,
    split_selector: Callable[..., Selector],
    write_lake: Callable[..., list[str]],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    selector = split_selector(3, method)
    shares = count_shares(monkeypatch)
    # Loaded before: the group below repeats 20 of these ids (the direct COPY conflicts on
    # whichever connection holds them, which merges instead).
    write_lake([make_event(i, hour=0) for i in range(100, 120)], first_offset=0)
    assert selector.run_once().rows["events"] == 20
    shares.clear()

    events = [make_event(i, hour=1, amount="1.00") for i in range(90)]
    events += [make_event(i, hour=2, amount="2.00") for i in range(60, 120)]  # 30+20 repeats
    # At both ends of the event_id order (the first share and the last), in both files.
    bad = {"a-nul": 1, "m-nul": 1, "z-nul": 1, "z2-nul": 2}
    events += [
        {**make_event(500 + n, hour=hour), "subject": "s\x00", "event_id": eid}
        for n, (eid, hour) in enumerate(bad.items())
    ]
    paths = write_lake(events, first_offset=10)

    url = selector_settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        summary = selector.run_once()
        notices = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]

    assert len(shares) == 2 and sum(shares) > 60, "the group was split over 3 connections"
    assert summary.files == len(paths) == 2
    assert summary.rejected["events"] == len(bad)
    assert summary.rows["events"] == 120  # one per event_id, also where a share merged
    assert [n["count"] for n in notices] == [summary.rows["events"]]
    assert scalar(engine, "SELECT count(*) FROM events") == 120
    assert scalar(engine, "SELECT count(DISTINCT event_id) FROM events") == 120
    # The later file's copy of a repeated id wins (its amount), whichever connection had it.
    later = "SELECT count(*) FROM events WHERE payload->'total'->>'amount' = '2.00'"
    assert scalar(engine, later) == 60
    assert scalar(engine, "SELECT count(*) FROM orders") == 120 + len(bad)  # no subject
    with engine.connect() as conn:
        rejected = dict(
            conn.execute(
                text("SELECT event_id, file FROM rejected_rows WHERE rule = 'events'")
            ).all()
        )
        reasons = {r for (r,) in conn.execute(text("SELECT DISTINCT reason FROM rejected_rows"))}
    # Each reject names its own file, whichever share found it.
    [hour1] = [p for p in paths if "hour=01" in p]
    [hour2] = [p for p in paths if "hour=02" in p]
    assert rejected == {eid: (hour1, hour2)[hour - 1] for eid, hour in bad.items()}
    assert reasons and all(NUL_REASON in reason for reason in reasons)
    assert scalar(engine, "SELECT count(*) FROM selector_files") == 3


def test_a_crash_after_the_shares_commit_is_loaded_again_exactly_once(
    make_event: Callable[..., dict[str, Any]],
    split_selector: Callable[..., Selector],
    write_lake: Callable[..., list[str]],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    selector = split_selector(2)
    events = [make_event(i, hour=i % 4) for i in range(400)]
    files = len(write_lake(events))
    shares = count_shares(monkeypatch)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("selector died before the group's commit")

    monkeypatch.setattr(Loader, "_write_rules", crash)
    with pytest.raises(RuntimeError, match="died before the group's commit"):
        selector.run_once()
    assert shares, "the group was split"
    # The other connection committed its share; the group (its share, the rule rows, the
    # checkpoint) did not.
    committed = scalar(engine, "SELECT count(*) FROM events")
    assert committed == shares[0] and 0 < committed < 400
    assert scalar(engine, "SELECT count(*) FROM selector_files") == 0
    assert scalar(engine, "SELECT count(*) FROM orders") == 0

    monkeypatch.undo()
    summary = selector.run_once()
    assert summary.files == files
    assert summary.rows["events"] == 400  # the committed share upserted again, not added
    assert scalar(engine, "SELECT count(*) FROM events") == 400
    assert scalar(engine, "SELECT count(DISTINCT event_id) FROM events") == 400
    assert scalar(engine, "SELECT count(*) FROM orders") == 400
    assert scalar(engine, "SELECT count(*) FROM selector_files") == files


def test_a_share_waiting_on_another_transactions_row_gives_up_and_the_group_loads_later(
    make_event: Callable[..., dict[str, Any]],
    selector_settings: Settings,
    split_selector: Callable[..., Selector],
    write_lake: Callable[..., list[str]],
    engine: Engine,
) -> None:
    """A lock cycle through another selector passes the group's wait for its shares, which
    PostgreSQL cannot see: a share's lock wait ends by itself instead of hanging forever."""
    selector = split_selector(2)
    selector.loader.share_lock_timeout_s = 0.5
    write_lake([make_event(i, hour=1) for i in range(100)])
    url = selector_settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as other:  # another selector's open transaction
        # "e99" sorts last: the second share's range, on a connection of its own.
        other.execute(
            "INSERT INTO events (event_id, source, event_type, occurred_at,"
            " ingested_at, payload) VALUES ('e99', 'orders', 'x', now(), now(), '{}')"
        )
        with pytest.raises(psycopg.errors.LockNotAvailable):
            selector.run_once()
        other.rollback()
    assert scalar(engine, "SELECT count(*) FROM selector_files") == 0
    summary = selector.run_once()
    assert summary.files == 1 and summary.rows["events"] == 100
    assert scalar(engine, "SELECT count(DISTINCT event_id) FROM events") == 100
    assert scalar(engine, "SELECT count(*) FROM events") == 100
