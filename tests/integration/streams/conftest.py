"""Fixtures of the stream-stage integration tests: a pipeline on fresh topics, helpers.

Only the broker is needed, so these fixtures depend on ``kafka_bootstrap`` alone (no S3 or
PostgreSQL is started for them). Every test using ``stage`` runs once per engine: the kafka
engine in a thread of the test process, the faust engine as a ``hosepipe worker --engine
faust`` child process (a faust worker owns its event loop and signal handlers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
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
ENGINES = ("kafka", "faust")


class WorkerProcess:
    """A ``hosepipe worker`` child process (the faust engine), with its log file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=self._log)
        self.errors: list[BaseException] = []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)

    def join(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait(10)
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def partitions(self) -> set[tuple[str, int]]:
        """The raw partitions this worker owns now (from its last "partitions assigned" log)."""
        owned: set[tuple[str, int]] = set()
        for line in self.log_text().splitlines():
            if '"partitions assigned"' not in line:
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            owned = set()
            for name in entry.get("partitions", []):
                topic, _, rest = name.rpartition("[")
                owned.add((topic, int(rest.rstrip("]"))))
        return owned


@dataclass
class Stage:
    """One test's pipeline: settings, config, topic names and helpers around them."""

    settings: Settings
    pipeline: PipelineConfig
    config_file: Path
    source: str
    engine: str = "kafka"
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

    def stats(self) -> Any:
        """The workers' merged counters of this source (None before the stats topic exists)."""
        from streams.stats import read_totals

        # {} until the worker has created its stats topic
        return read_totals(self.settings, self.pipeline.streams.consumer_group).get(self.source)

    @staticmethod
    def wait_for(
        condition: Callable[[], Any],
        timeout: float = 90.0,
        what: str = "",
        explain: Callable[[], str] | None = None,
    ) -> Any:
        """Poll ``condition`` every 0.5 s until it is truthy (its value) or ``timeout``.

        On timeout the error carries ``explain()`` (e.g. :meth:`diagnosis`): a stalled
        worker and a lost record look alike from the outside.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                detail = f"\n{explain()}" if explain is not None else ""
                raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
            time.sleep(0.5)

    def diagnosis(self) -> str:
        """Where each worker stands: its last counters, the group's committed offsets
        against the raw partitions' ends, and the tail of each worker process's log."""
        from confluent_kafka import TopicPartition

        from hosepipe.kafka import make_consumer
        from streams.dlq import read_topic
        from streams.metrics import latest_snapshots, stats_topic

        group = self.pipeline.streams.consumer_group
        lines: list[str] = []
        try:
            entries = read_topic(self.settings, stats_topic(group))
            latest = latest_snapshots((e.offset, e.value) for e in entries)
            lines += [f"worker {w} counters: {s.data}" for w, s in latest.items()]
        except RuntimeError as exc:
            lines.append(f"no counters: {exc}")
        consumer = make_consumer(self.settings, group)
        try:
            partitions = consumer.list_topics(self.raw, timeout=10).topics[self.raw].partitions
            tps = [TopicPartition(self.raw, p) for p in sorted(partitions)]
            for tp in consumer.committed(tps, timeout=10):
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                # "end" is Tansu's ListOffsets answer, which can be wrong (docs/streams.md)
                lines.append(f"{self.raw}[{tp.partition}]: committed {tp.offset}, end {high}")
        finally:
            consumer.close()
        for runner in self.runners:
            if isinstance(runner, WorkerProcess):
                tail = runner.log_text().splitlines()[-12:]
                lines.append(f"--- {runner.log_path} (exit {runner.process.poll()}):")
                lines += [line[:400] for line in tail]
        return "\n".join(lines)

    def worker_env(self, data_dir: Path) -> dict[str, str]:
        return {
            **os.environ,
            "HOSEPIPE_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "HOSEPIPE_CONFIG_FILE": str(self.config_file),
            "HOSEPIPE_DATA_DIR": str(data_dir),
            "HOSEPIPE_METRICS_PORT": "0",
            "HOSEPIPE_LOG_FORMAT": "json",
        }

    def worker_command(self) -> list[str]:
        return [sys.executable, "-m", "hosepipe", "worker", "--engine", self.engine]

    def start_runner(self, state_dir: Path | None = None, batch_size: int = 500) -> Any:
        """Start a worker of this stage's engine; returns it (for ``stop_runner``)."""
        state_dir = state_dir or self.settings.data_dir / f"state-{uuid.uuid4().hex[:6]}"
        if self.engine == "faust":
            state_dir.mkdir(parents=True, exist_ok=True)
            worker = WorkerProcess(
                self.worker_command(), self.worker_env(state_dir), state_dir / "worker.log"
            )
            self.runners.append(worker)
            return worker
        from streams.kafka_runner import KafkaRunner, RunnerOptions

        options = RunnerOptions(
            batch_size=batch_size,
            group=self.pipeline.streams.consumer_group,
            state_dir=state_dir,
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

    def partitions(self, runner: Any) -> set[tuple[str, int]]:
        """Raw partitions the worker owns now."""
        if isinstance(runner, WorkerProcess):
            return runner.partitions()
        return set(runner.stores)

    def stop_runner(self, runner: Any) -> None:
        if isinstance(runner, WorkerProcess):
            runner.stop()
            runner.join(60)
            code = runner.process.returncode
            assert code == 0, f"worker exited with {code}: {runner.log_text()[-3000:]}"
            return
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


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Which engine runs the stage (every stage test runs for both)."""
    return str(request.param)


def make_stage(
    kafka_bootstrap: str,
    tmp_path: Path,
    engine: str,
    partitions: int = 4,
    batch_size: int = 500,
    max_record_bytes: int = 2000,
    output_max_message_bytes: int | None = None,
) -> Stage:
    """A fresh pipeline (own topics and group) on ``kafka_bootstrap``, its topics created;
    the canonical and DLQ topics with ``output_max_message_bytes`` if given."""
    from hosepipe.topics import ensure_topics

    suffix = uuid.uuid4().hex[:10]
    source = "clicks"
    tree = pipeline_yaml(source, f"t{suffix}", f"g{suffix}", partitions=partitions)
    tree["streams"]["batch_size"] = batch_size
    tree["sources"][source]["max_record_bytes"] = max_record_bytes
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
    if output_max_message_bytes is not None:
        from confluent_kafka.admin import NewTopic

        from hosepipe.kafka import make_admin

        config = {"max.message.bytes": str(output_max_message_bytes)}
        topics = [pipeline.topics.canonical, pipeline.topics.dlq]
        admin = make_admin(settings)  # kept referenced until the futures resolve
        futures = admin.create_topics(
            [NewTopic(name, partitions, 1, config=config) for name in topics]
        )
        for future in futures.values():
            future.result(30)
    ensure_topics(settings, pipeline)
    return Stage(settings, pipeline, config_file, source, engine)


@pytest.fixture
def stage(kafka_bootstrap: str, tmp_path: Path, engine: str) -> Iterator[Stage]:
    """A fresh pipeline (own topics and group) with its topics created."""
    made = make_stage(kafka_bootstrap, tmp_path, engine)
    yield made
    for runner in made.runners:
        runner.stop()
    for runner in made.runners:
        if isinstance(runner, WorkerProcess):
            runner.join(30)
        else:
            runner.thread.join(10)


def event(i: int, now_ms: int, **extra: Any) -> tuple[bytes, bytes]:
    """A good raw record with id ``e<i>``, keyed by its id."""
    event_id = f"e{i}"
    body = {"id": event_id, "ts": now_ms, "type": "view", "user": f"u{i % 7}", **extra}
    return event_id.encode(), orjson.dumps(body)


@pytest.fixture
def make_event() -> Callable[..., tuple[bytes, bytes]]:
    return event
