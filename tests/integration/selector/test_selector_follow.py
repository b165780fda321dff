"""Following the lake: many small files per transaction, and quiet logs during an outage."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from hosepipe.config import PipelineConfig
from hosepipe.db import NOTIFY_CHANNEL
from hosepipe.localstack.servers import free_port
from hosepipe.settings import Settings
from selector.lakefiles import Lake
from selector.runner import RunOptions, Selector
from selector.schema import upgrade
from selector.service import build_selector

pytestmark = pytest.mark.integration


def selector_for(settings: Settings, pipeline: PipelineConfig) -> Selector:
    selector = build_selector(settings, pipeline, RunOptions(progress=False))
    upgrade(selector.engine, pipeline.selection)
    return selector


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_many_small_files_load_in_few_transactions_each_with_its_checkpoint(
    make_event, selector_settings, write_pipeline, write_lake, engine, database_url
):
    pipeline = write_pipeline(batch_rows=200)
    # 60 files of 10 rows in 30 hours x 2 sources (like late events of a sink flush).
    events = [
        make_event(i, hour=(i // 10) % 30, source="orders" if (i // 300) % 2 else "web")
        for i in range(600)
    ]
    written = write_lake(events)
    assert len(written) == 60
    selector = selector_for(selector_settings, pipeline)
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        summary = selector.run_once()
        notices = [n.payload for n in listener.notifies(timeout=1.0, stop_after=10)]
    assert summary.files == 60
    assert summary.rows == {"events": 600, "orders": 300}
    assert scalar(engine, "SELECT count(*) FROM events") == 600
    assert scalar(engine, "SELECT count(*) FROM selector_files") == 60
    assert scalar(engine, "SELECT sum(rows) FROM selector_files") == 600
    # batch_rows 200 = 20 files of 10 rows per transaction: 3 transactions, 3 notices.
    assert len(notices) == 3
    assert selector.run_once().files == 0


def test_follow_logs_an_s3_outage_once_and_its_end_once(
    make_event, selector_settings, write_pipeline, write_lake, engine, caplog
):
    pipeline = write_pipeline(follow_interval="0.1s")
    selector = selector_for(selector_settings, pipeline)
    good_lake = selector.lake
    dead = selector_settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}
    )
    selector.lake = Lake.open(dead, pipeline.sink.partition_keys)
    write_lake([make_event(i, hour=2) for i in range(10)])
    errors: list[Exception] = []
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="selector")
    thread = threading.Thread(target=selector.follow, args=(stop, errors.append), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(errors) < 5:
            assert time.monotonic() < deadline, "the follower did not retry"
            time.sleep(0.05)
        assert not selector.health()["ok"]
        selector.lake = good_lake  # S3 is back
        while scalar(engine, "SELECT count(*) FROM events") < 10:
            assert time.monotonic() < deadline, "the follower did not load after the outage"
            time.sleep(0.05)
        while not selector.health()["ok"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    records = [r for r in caplog.records if r.name.startswith("selector")]
    down = [r for r in records if "unreachable" in r.getMessage()]
    assert len(down) == 1, [r.getMessage() for r in records]
    assert down[0].levelno == logging.WARNING
    assert down[0].getMessage().startswith("lake (S3) unreachable: OSError: ")
    assert "\n" not in down[0].getMessage() and down[0].exc_info is None
    back = [r for r in records if "work again" in r.getMessage()]
    assert len(back) == 1 and f"({len(errors)} failed runs)" in back[0].getMessage()


def test_follow_takes_the_shard_lock_again_after_postgresql_dropped_its_sessions(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    pipeline = write_pipeline(follow_interval="0.1s")
    selector = selector_for(selector_settings, pipeline)
    write_lake([make_event(i, hour=2) for i in range(10)])
    stop = threading.Event()
    thread = threading.Thread(target=selector.follow, args=(stop,), daemon=True)
    thread.start()
    advisory = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted" + (
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    try:
        deadline = time.monotonic() + 30
        while scalar(engine, "SELECT count(*) FROM events") < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with engine.connect() as conn:  # what a restart does to the follower's sessions
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        write_lake([make_event(i, hour=3) for i in range(10, 20)], first_offset=5)
        while scalar(engine, "SELECT count(*) FROM events") < 20 or scalar(engine, advisory) < 1:
            assert time.monotonic() < deadline, "the follower did not recover its lock"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert scalar(engine, advisory) == 0  # released on stop


def test_follow_looks_again_at_once_after_a_pass_that_loaded_files(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    # A long interval: only a pass that found nothing may wait it.
    pipeline = write_pipeline(follow_interval="60s")
    selector = selector_for(selector_settings, pipeline)
    write_lake([make_event(i, hour=2) for i in range(10)])
    passes: list[int] = []
    real_run_once = selector.run_once

    def run_once(stop: threading.Event | None = None) -> Any:
        summary = real_run_once(stop)
        passes.append(summary.files)
        if len(passes) == 1:  # a file that landed while the first pass ran
            write_lake([make_event(i, hour=3) for i in range(10, 20)], first_offset=5)
        return summary

    selector.run_once = run_once  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=selector.follow, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while scalar(engine, "SELECT count(*) FROM events") < 20 or len(passes) < 3:
            assert time.monotonic() < deadline, f"passes so far: {passes}"
            time.sleep(0.05)
        time.sleep(0.5)
        assert passes == [1, 1, 0]  # the pass that found nothing now waits its 60 s
    finally:
        stop.set()
        thread.join(timeout=10)
