"""The late lane against a real broker and S3: held rows, idle flushes, crashes."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hosepipe.config import PipelineConfig
from hosepipe.lake import open_lake_store
from hosepipe.settings import Settings
from sink.lanes import cursor_key, decode_cursors
from sink.metrics import SinkMetrics

pytestmark = pytest.mark.integration

LATE_LANE = {"late_after": "1h", "late_max_age": "900s"}


def with_late(events: list[dict[str, Any]], hour: int, every: int = 4) -> list[dict[str, Any]]:
    """Every ``every``-th event ingested hours after it happened (late by 2-9 h)."""
    for n, event in enumerate(events):
        if n % every == 0:
            event["ingested_at"] = event["occurred_at"] + (2 + n % 8) * hour
    return events


def test_late_rows_are_held_and_land_when_the_sink_is_idle(
    settings: Settings, canonical: Callable[..., PipelineConfig], run_sink_thread, kit
) -> None:
    pipeline = canonical(max_age="0.3s", **LATE_LANE)
    events = with_late(kit.make_events(400, hours=6), kit.HOUR)
    kit.produce(settings, pipeline.topics.canonical, events)
    metrics = SinkMetrics.create(CollectorRegistry())
    running = run_sink_thread(settings, pipeline, metrics=metrics)
    kit.wait_committed(settings, pipeline, 400)
    # late_max_age is 15 minutes: only the idle rule can have landed the late rows
    assert metrics.flushes.labels("idle")._value.get() >= 1
    assert kit.lake_counts(settings) == (400, 400)
    assert metrics.late_events._value.get() >= 100
    running.stop()


def test_crash_with_late_rows_held_replays_them_and_skips_the_durable_ones(
    settings: Settings, canonical: Callable[..., PipelineConfig], kit
) -> None:
    """The on-time rows are committed past the held late rows; the sink dies while their
    files are being written. The next sink skips what its cursor object says is durable and
    rewrites the late files under the same names."""
    from sink.runner import SinkRunner

    pipeline = canonical(max_age="0.2s", **LATE_LANE)
    topic = pipeline.topics.canonical
    events = with_late(kit.make_events(600, hours=6), kit.HOUR, every=3)
    kit.produce(settings, topic, events)

    first = SinkRunner(settings, pipeline, metrics=SinkMetrics.create(CollectorRegistry()))
    first.start()
    deadline = time.monotonic() + 60
    while first._inflight is None or first._inflight.plan.lane != 1:
        assert time.monotonic() < deadline, "the late lane never flushed"
        first._step()  # the idle rule drains the late lane right after the on-time commit
    # crash: the late plan's write finishes (or not) but it is never stored or committed
    first._inflight = None
    first._flusher.shutdown(wait=True)
    first.consumer.close()

    store = open_lake_store(settings)
    stored = {
        p: decode_cursors(data, cursor_key(topic, p))
        for p in range(pipeline.topics.partitions)
        if (data := store.get_optional(cursor_key(topic, p))) is not None
    }
    assert stored and all(c.late < c.on_time for c in stored.values()), stored
    assert kit.committed_total(settings, pipeline) < 600  # the held late rows are not

    metrics = SinkMetrics.create(CollectorRegistry())
    second = SinkRunner(settings, pipeline, metrics=metrics)
    second.start()
    deadline = time.monotonic() + 60
    while kit.committed_total(settings, pipeline) < 600:
        assert time.monotonic() < deadline, "the replay never committed everything"
        second._step()
    second.stop()
    second.consumer.close()
    assert metrics.skipped_rows._value.get() > 0  # on-time rows above the commit
    assert kit.lake_counts(settings) == (600, 600)
    kit.assert_every_file_announced(settings, pipeline)


def test_kill_9_at_random_points_with_the_late_lane_loses_and_duplicates_nothing(
    settings: Settings, canonical: Callable[..., PipelineConfig], kit, tmp_path: Path
) -> None:
    pipeline = canonical(max_rows=300, max_age="0.3s", late_after="1h", late_max_age="2s")
    total, chunk = 6000, 500
    rng = random.Random(5)
    log = tmp_path / "sink.log"
    produced = 0
    for _ in range(4):  # produce in small steps while the sink gets killed at random
        process = kit.start_sink_process(settings, log)
        until = time.monotonic() + rng.uniform(3.0, 6.0)
        while time.monotonic() < until:
            if produced < total:
                events = with_late(kit.make_events(chunk, hours=8, start=produced), kit.HOUR)
                kit.produce(settings, pipeline.topics.canonical, events)
                produced += chunk
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    while produced < total:
        events = with_late(kit.make_events(chunk, hours=8, start=produced), kit.HOUR)
        kit.produce(settings, pipeline.topics.canonical, events)
        produced += chunk
    kit.finish_after_kills(settings, pipeline, total, log)
