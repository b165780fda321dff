"""Limits: memory with many open time partitions, timestamps outside years 1..9999."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from hosepipe.config import PipelineConfig
from hosepipe.lake import INVALID_TIME_PARTITION, lake_dataset, open_lake_store
from hosepipe.settings import Settings
from sink.metrics import SinkMetrics

pytestmark = pytest.mark.integration

RSS_BOUND = 512 * 1024 * 1024  # the target for 500 open time partitions


def _metric(port: int, name: str) -> float:
    """Sum of the samples of one metric (with any labels) scraped from /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_memory_bounded_with_500_open_time_partitions(
    settings: Settings, canonical: Callable[..., PipelineConfig], kit, tmp_path: Path
) -> None:
    """500 event hours over 2 Kafka partitions = 1000 (partition, hour) files: the cap flushes."""
    from hosepipe.localstack.servers import free_port

    hours, total = 500, 20_000
    pipeline = canonical(max_open_partitions=500, max_rows=100_000, max_age="2s")
    events = kit.make_events(total, hours=1)
    for n, event in enumerate(events):  # hours ascend through the topic, 40 events each
        event["occurred_at"] = kit.T0 + (n * hours // total) * kit.HOUR + n
        event["payload"] = '{"pad": "' + "x" * 400 + '"}'
    kit.produce(settings, pipeline.topics.canonical, events)

    port = free_port()
    env = kit.sink_env(settings)
    env["HOSEPIPE_METRICS_PORT"] = str(port)
    env["HOSEPIPE_BIND_HOST"] = "127.0.0.1"
    log = tmp_path / "sink.log"
    import subprocess
    import sys

    with log.open("ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "hosepipe", "sink"], env=env, stdout=handle, stderr=handle
        )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        proc = psutil.Process(process.pid)
        while not done.is_set():
            try:
                peak[0] = max(peak[0], proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        kit.wait_committed(settings, pipeline, total, timeout=180)
        partition_flushes = _metric(port, 'hosepipe_sink_flushes_total{reason="partitions"}')
    finally:
        done.set()
        sampler.join(5)
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    print(f"sink peak RSS {peak[0] / 2**20:.0f} MB, {partition_flushes:.0f} flushes by partitions")
    assert partition_flushes >= 1, log.read_text()[-3000:]
    assert peak[0] < RSS_BOUND, f"peak RSS {peak[0] / 2**20:.0f} MB"
    keys = open_lake_store(settings).list()
    assert len({k.rsplit("/", 1)[0] for k in keys}) == hours
    assert len(keys) >= 2 * hours - 2  # each Kafka partition wrote each of its hours
    assert kit.lake_counts(settings) == (total, total)


def test_occurred_at_outside_years_1_to_9999_lands_in_dt_invalid(
    settings: Settings, canonical: Callable[..., PipelineConfig], run_sink_thread, kit
) -> None:
    """No crash loop and no loss: such events land under dt=invalid and are counted."""
    import pyarrow.dataset as ds
    from prometheus_client import CollectorRegistry

    pipeline = canonical(max_age="0.3s")
    events = kit.make_events(6, hours=2)
    events[1]["occurred_at"] = -(2**63)
    events[4]["occurred_at"] = 253_402_300_800_000_000  # 10000-01-01
    kit.produce(settings, pipeline.topics.canonical, events)
    metrics = SinkMetrics.create(CollectorRegistry())
    running = run_sink_thread(settings, pipeline, metrics=metrics)
    kit.wait_committed(settings, pipeline, 6)
    running.stop()
    assert metrics.invalid_time_events._value.get() == 2
    assert kit.lake_counts(settings) == (6, 6)
    invalid = lake_dataset(settings).to_table(
        columns=["event_id"], filter=ds.field("dt") == "invalid"
    )
    assert sorted(invalid["event_id"].to_pylist()) == ["e1", "e4"]
    assert any(k.startswith(INVALID_TIME_PARTITION + "/") for k in open_lake_store(settings).list())
