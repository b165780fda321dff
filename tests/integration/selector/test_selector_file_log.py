"""``select --follow`` finds new files in the sink's file log instead of listing the lake."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from hosepipe.config import PipelineConfig
from hosepipe.file_log import LandedFile, encode_landed, ensure_file_log_topic
from hosepipe.kafka import make_producer
from hosepipe.lake import open_lake_store
from hosepipe.settings import Settings
from selector.runner import RunOptions, Selector
from selector.schema import upgrade
from selector.service import build_selector

pytestmark = pytest.mark.integration


@pytest.fixture
def log_settings(selector_settings: Settings, kafka_bootstrap: str) -> Settings:
    return selector_settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap})


@pytest.fixture
def log_pipeline(
    write_pipeline: Callable[..., PipelineConfig], unique_name: Callable[..., str]
) -> Callable[..., PipelineConfig]:
    """A pipeline whose ``topics.file_log`` is a fresh name (created unless ``create=False``)."""

    def make(settings: Settings, *, create: bool = True, **selection: Any) -> PipelineConfig:
        pipeline = write_pipeline(**selection)
        topics = pipeline.topics.model_copy(update={"file_log": unique_name("files")})
        pipeline = pipeline.model_copy(update={"topics": topics})
        if create:
            ensure_file_log_topic(settings, pipeline.topics.file_log)
        return pipeline

    return make


def follower(settings: Settings, pipeline: PipelineConfig) -> Selector:
    selector = build_selector(settings, pipeline, RunOptions(progress=False), follow=True)
    upgrade(selector.engine, pipeline.selection)
    return selector


def announce(settings: Settings, pipeline: PipelineConfig, keys: list[str]) -> None:
    """Produce one file-log record naming ``keys``, as the sink does after a flush."""
    store = open_lake_store(settings)
    files = [LandedFile(key, len(store.get(key)) if key in store.list() else 0, 0) for key in keys]
    producer = make_producer(settings, **{"linger.ms": 0})
    producer.produce(pipeline.topics.file_log, encode_landed("events.canonical", {0: 1}, files))
    assert producer.flush(30) == 0


def stored_positions(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT partition, next_offset FROM selector_file_log"))
        return {int(p): int(o) for p, o in rows}


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_follow_loads_announced_files_and_lists_only_at_start_and_per_rescan(
    make_event, write_lake, log_pipeline, log_settings, engine, caplog
):
    pipeline = log_pipeline(log_settings, rescan_interval="1h")
    before = write_lake([make_event(i, hour=1) for i in range(10)], first_offset=0)
    selector = follower(log_settings, pipeline)
    caplog.set_level(logging.INFO, logger="selector")

    # First pass: no position yet, so the lake is listed and the log's end is stored.
    assert selector.run_once().files == len(before)
    assert stored_positions(engine) == {0: 0}

    announced = write_lake([make_event(i, hour=2) for i in range(10, 20)], first_offset=100)
    silent = write_lake([make_event(i, hour=3) for i in range(20, 30)], first_offset=200)
    announce(log_settings, pipeline, announced)
    summary = selector.run_once()
    # Only the announced file: the unannounced one proves that nothing was listed.
    assert summary.files == len(announced)
    assert count(engine, "SELECT count(*) FROM events") == 20
    assert stored_positions(engine) == {0: 1}
    assert selector.run_once().files == 0

    # A replayed flush announces the same file again: it is loaded again (upserts).
    announce(log_settings, pipeline, announced)
    assert selector.run_once().files == len(announced)
    assert count(engine, "SELECT count(*) FROM events") == 20
    assert stored_positions(engine) == {0: 2}

    # A restarted follower resumes at the stored position; its start-up listing finds the
    # file nobody announced, and nothing already loaded is read again.
    selector.file_log.close()  # type: ignore[union-attr]
    restarted = follower(log_settings, pipeline)
    try:
        assert restarted.run_once().files == len(silent)
        assert count(engine, "SELECT count(*) FROM events") == 30
        assert restarted.run_once().files == 0
    finally:
        restarted.file_log.close()  # type: ignore[union-attr]
    assert "discovers new files by log" in caplog.text


def test_a_rescan_interval_lists_the_lake_again(
    make_event, write_lake, log_pipeline, log_settings, engine
):
    pipeline = log_pipeline(log_settings, rescan_interval="0.2s")
    selector = follower(log_settings, pipeline)
    assert selector.run_once().files == 0
    silent = write_lake([make_event(i, hour=4) for i in range(5)], first_offset=10)
    import time

    time.sleep(0.3)
    assert selector.run_once().files == len(silent)
    assert count(engine, "SELECT count(*) FROM events") == 5


def test_a_position_outside_the_log_falls_back_to_one_listing(
    make_event, write_lake, log_pipeline, log_settings, engine
):
    pipeline = log_pipeline(log_settings)
    selector = follower(log_settings, pipeline)
    # As if the topic had been deleted and recreated: the stored position lies past its end.
    selector.loader.save_log_positions(pipeline.topics.file_log, {0: 99})
    files = write_lake([make_event(i, hour=5) for i in range(8)])
    assert selector.run_once().files == len(files)
    assert stored_positions(engine) == {0: 0}


def test_an_announced_file_that_is_gone_is_skipped(
    make_event, write_lake, log_pipeline, log_settings, engine, caplog
):
    pipeline = log_pipeline(log_settings)
    selector = follower(log_settings, pipeline)
    selector.run_once()
    real = write_lake([make_event(i, hour=6) for i in range(4)], first_offset=50)
    gone = "source=orders/dt=2025-11-22/hour=06/events.canonical+0+999.parquet"
    announce(log_settings, pipeline, [gone, *real])
    caplog.set_level(logging.WARNING, logger="selector")
    summary = selector.run_once()
    assert summary.files == len(real)
    assert count(engine, "SELECT count(*) FROM events") == 4
    assert "announced lake file is gone" in caplog.text
    assert stored_positions(engine) == {0: 1}


def test_without_the_topic_every_pass_lists_the_lake(
    make_event, write_lake, log_pipeline, log_settings, engine
):
    pipeline = log_pipeline(log_settings, create=False)
    selector = follower(log_settings, pipeline)
    assert selector.run_once().files == 0
    files = write_lake([make_event(i, hour=7) for i in range(6)])
    assert selector.run_once().files == len(files)
    assert stored_positions(engine) == {}
