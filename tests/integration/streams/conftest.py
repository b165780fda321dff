"""Fixtures of the stream-stage integration tests: a pipeline on fresh topics, helpers.

Only the broker is needed, so these fixtures depend on ``kafka_bootstrap`` alone (no S3 or
PostgreSQL is started for them).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from hosepipe.config import PipelineConfig, parse_pipeline
from hosepipe.settings import Settings

NOW_MS = 0  # set per test from the clock


@dataclass
class Stage:
    """One test's pipeline: settings, config, topic names and helpers around them."""

    settings: Settings
    pipeline: PipelineConfig
    config_file: Path
    source: str
    runners: list[Any] = field(default_factory=list)

    @property
    def raw(self) -> str:
        return self.pipeline.raw_topic(self.source)

    @property
    def canonical(self) -> str:
        return self.pipeline.topics.canonical

    @property
    def dlq(self) -> str:
        return self.pipeline.topics.dlq

    def produce(self, records: list[tuple[bytes | None, bytes | None]]) -> None:
        """Produce ``(key, value)`` records to the raw topic, keyed like our ingest does."""
        from hosepipe.kafka import make_producer

        producer = make_producer(self.settings)
        for key, value in records:
            while True:
                try:
                    producer.produce(self.raw, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(30) == 0

    def canonical_events(self) -> list[dict[str, Any]]:
        from hosepipe.avro import make_decoder
        from streams.dlq import read_topic

        decoder = make_decoder(self.settings)
        return [decoder.decode(e.value or b"") for e in read_topic(self.settings, self.canonical)]

    def dead_letters(self) -> list[Any]:
        from streams.dlq import read_topic

        return list(read_topic(self.settings, self.dlq))

    def start_runner(self, state_dir: Path | None = None, batch_size: int = 500) -> Any:
        """Start a kafka-engine runner in a thread; returns it (``.stop()``, ``.thread``)."""
        from streams.kafka_runner import KafkaRunner, RunnerOptions

        options = RunnerOptions(
            batch_size=batch_size,
            group=self.pipeline.streams.consumer_group,
            state_dir=state_dir or self.settings.data_dir / f"state-{uuid.uuid4().hex[:6]}",
            stats_every_s=0.5,
        )
        runner = KafkaRunner(self.settings, self.pipeline, options=options)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                runner.run()
            except BaseException as exc:  # surfaced by stop_runner
                errors.append(exc)

        runner.thread = threading.Thread(target=run, daemon=True)  # type: ignore[attr-defined]
        runner.errors = errors  # type: ignore[attr-defined]
        runner.thread.start()  # type: ignore[attr-defined]
        self.runners.append(runner)
        return runner

    def stop_runner(self, runner: Any) -> None:
        runner.stop()
        runner.thread.join(30)
        assert not runner.thread.is_alive(), "worker did not stop within 30 s"
        if runner.errors:
            raise runner.errors[0]


def pipeline_yaml(source: str, prefix: str, group: str, partitions: int) -> dict[str, Any]:
    return {
        "topics": {
            "raw_prefix": f"{prefix}.raw.",
            "canonical": f"{prefix}.canonical",
            "dlq": f"{prefix}.dlq",
            "partitions": partitions,
        },
        "sources": {
            source: {
                "kind": "push",
                "key_path": "$.id",
                "max_record_bytes": 2000,
                "mapping": {
                    "event_id": "$.id",
                    "occurred_at": {"path": "$.ts", "format": "epoch_ms"},
                    "event_type": "$.type",
                    "subject": "$.user",
                    "attributes": {"channel": "test"},
                },
            }
        },
        "streams": {"consumer_group": group, "batch_size": 500, "dedupe_window": "1h"},
    }


@pytest.fixture
def stage(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Stage]:
    """A fresh pipeline (own topics and group) with its topics created."""
    from hosepipe.topics import ensure_topics

    suffix = uuid.uuid4().hex[:10]
    source = "clicks"
    tree = pipeline_yaml(source, f"t{suffix}", f"g{suffix}", partitions=4)
    config_file = tmp_path / "hosepipe.yaml"
    config_file.write_text(yaml.safe_dump(tree), encoding="utf-8")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        config_file=config_file,
        data_dir=tmp_path / "data",
        kafka_bootstrap=kafka_bootstrap,
        metrics_port=0,
    )
    pipeline = parse_pipeline(config_file.read_text(), str(config_file))
    ensure_topics(settings, pipeline)
    made = Stage(settings, pipeline, config_file, source)
    yield made
    for runner in made.runners:
        runner.stop()
        runner.thread.join(10)


def event(i: int, now_ms: int, **extra: Any) -> tuple[bytes, bytes]:
    """A good raw record with id ``e<i>``, keyed by its id."""
    event_id = f"e{i}"
    body = {"id": event_id, "ts": now_ms, "type": "view", "user": f"u{i % 7}", **extra}
    return event_id.encode(), orjson.dumps(body)


@pytest.fixture
def make_event() -> Callable[..., tuple[bytes, bytes]]:
    return event
