"""Helpers for the sink's integration tests: a pipeline, a canonical topic, events, lake reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings

HOUR = 3_600_000_000
T0 = 1_763_791_200_000_000  # 2025-11-22T06:00:00Z


def make_events(
    count: int, hours: int = 3, start: int = 0, prefix: str = "e"
) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{prefix}{n}",
            "source": "web" if n % 2 else "app",
            "event_type": "click",
            "occurred_at": T0 + (n % hours) * HOUR + n,
            "ingested_at": T0,
            "subject": f"user{n % 7}",
            "payload": f'{{"n": {n}}}',
            "attributes": {"i": str(n)},
        }
        for n in range(start, start + count)
    ]


def pipeline_dict(topic: str, **sink: Any) -> dict[str, Any]:
    return {
        "topics": {
            "canonical": topic,
            "dlq": topic + ".dlq",
            "file_log": topic + ".files",
            "partitions": 2,
        },
        "sources": {
            "web": {
                "kind": "push",
                "mapping": {"event_id": "$.id", "occurred_at": "$.ts", "event_type": "click"},
            }
        },
        "sink": {"max_age": "1s", "consumer_group": topic + "-sink", **sink},
    }


@pytest.fixture
def canonical(settings: Settings, unique_name: Callable[..., str]) -> Callable[..., PipelineConfig]:
    """``canonical(**sink_options)``: a pipeline with a fresh, created canonical topic."""
    from hosepipe.topics import ensure_topics

    def make(**sink: Any) -> PipelineConfig:
        pipeline = PipelineConfig.model_validate(pipeline_dict(unique_name("canon"), **sink))
        ensure_topics(settings, pipeline)
        settings.config_file.write_text(
            yaml.safe_dump(pipeline_dict(pipeline.topics.canonical, **sink))
        )
        return pipeline

    return make


def produce(settings: Settings, topic: str, events: list[dict[str, Any]]) -> None:
    from hosepipe.avro import make_encoder
    from hosepipe.kafka import make_producer

    encoder = make_encoder(settings, topic)
    producer = make_producer(settings)
    for event, value in zip(events, encoder.encode_many(events), strict=True):
        producer.produce(topic, value, event["event_id"].encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def committed_total(settings: Settings, pipeline: PipelineConfig) -> int:
    """Sum of the committed offsets of the sink group over the topic's partitions."""
    from confluent_kafka import TopicPartition

    from hosepipe.kafka import make_consumer

    consumer = make_consumer(settings, pipeline.sink.consumer_group)
    try:
        parts = [
            TopicPartition(pipeline.topics.canonical, p) for p in range(pipeline.topics.partitions)
        ]
        return sum(max(0, tp.offset) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def lake_counts(settings: Settings, keys: list[str] | None = None) -> tuple[int, int]:
    """``(count(*), count(distinct event_id))`` over the lake, read with pyarrow."""
    import pyarrow.compute as pc

    from hosepipe.lake import lake_dataset

    table = lake_dataset(settings, keys or []).to_table(columns=["event_id"])
    return table.num_rows, len(pc.unique(table["event_id"]))


def announced(settings: Settings, pipeline: PipelineConfig) -> list[str]:
    """Every lake path the sink announced in its file log, in log order (repeats kept)."""
    from confluent_kafka import KafkaError, TopicPartition

    from hosepipe.file_log import decode_landed
    from hosepipe.kafka import make_consumer

    topic = pipeline.topics.file_log
    consumer = make_consumer(settings, topic + "-reader", **{"enable.partition.eof": True})
    paths: list[str] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        while True:
            message = consumer.poll(10)
            assert message is not None, f"no end of partition from {topic}"
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                return paths
            paths += [f.path for f in decode_landed(message.value(), topic)]
    finally:
        consumer.close()


def lake_keys(settings: Settings) -> list[str]:
    """Lake-relative keys of every data file."""
    from hosepipe.lake import open_lake_store

    return open_lake_store(settings).list()


class RunningSink:
    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.runner.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "sink did not stop"
        if self.error:
            raise self.error


@pytest.fixture
def run_sink_thread() -> Iterator[Callable[..., RunningSink]]:
    started: list[RunningSink] = []

    def start(settings: Settings, pipeline: PipelineConfig, **kw: Any) -> RunningSink:
        from sink.runner import SinkRunner

        running = RunningSink(SinkRunner(settings, pipeline, **kw))
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.runner.stop()
            running.thread.join(60)


def sink_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSEPIPE_")}
    env.update(
        HOSEPIPE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        HOSEPIPE_LAKE_URL=settings.lake_url,
        HOSEPIPE_S3_ENDPOINT_URL=settings.s3_endpoint_url or "",
        HOSEPIPE_S3_ACCESS_KEY_ID=settings.s3_access_key_id or "",
        HOSEPIPE_S3_SECRET_ACCESS_KEY=settings.s3_secret_access_key.get_secret_value()
        if settings.s3_secret_access_key
        else "",
        HOSEPIPE_CONFIG_FILE=str(settings.config_file),
        HOSEPIPE_DATA_DIR=str(settings.data_dir),
        HOSEPIPE_LOG_LEVEL="INFO",
    )
    return env


def start_sink_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``python -m hosepipe sink`` as a child process (for kill -9)."""
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "hosepipe", "sink"],
        env=sink_env(settings),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


class SinkKit:
    """The helpers above, as one fixture (test modules cannot import conftest)."""

    HOUR = HOUR
    T0 = T0
    make_events = staticmethod(make_events)
    produce = staticmethod(produce)
    committed_total = staticmethod(committed_total)
    lake_counts = staticmethod(lake_counts)
    announced = staticmethod(announced)
    lake_keys = staticmethod(lake_keys)
    start_sink_process = staticmethod(start_sink_process)
    sink_env = staticmethod(sink_env)

    @staticmethod
    def assert_every_file_announced(settings: Settings, pipeline: PipelineConfig) -> None:
        """Every durable file was announced before its commit (replays only repeat them)."""
        missing = set(lake_keys(settings)) - set(announced(settings, pipeline))
        assert not missing, f"lake files never announced in the file log: {sorted(missing)[:5]}"

    @staticmethod
    def finish_after_kills(
        settings: Settings, pipeline: PipelineConfig, total: int, log: Path
    ) -> None:
        """After a kill -9 series: one more sink drains to ``total``; then the lake holds
        every event exactly once and every file is announced."""
        process = start_sink_process(settings, log)
        try:
            SinkKit.wait_committed(settings, pipeline, total, timeout=120)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        rows, distinct = lake_counts(settings)
        assert (rows, distinct) == (total, total), log.read_text()[-3000:]
        SinkKit.assert_every_file_announced(settings, pipeline)

    @staticmethod
    def wait_committed(
        settings: Settings, pipeline: PipelineConfig, total: int, timeout: float = 60
    ) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if committed_total(settings, pipeline) >= total:
                return
            time.sleep(0.3)
        raise AssertionError(f"committed {committed_total(settings, pipeline)} of {total}")


@pytest.fixture
def kit() -> type[SinkKit]:
    return SinkKit
