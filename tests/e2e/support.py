"""A whole hosepipe pipeline as subprocesses, and the means to look at what it produced.

The ``e2e_stack`` fixture (conftest.py) builds a :class:`Stack`: fresh topic names,
consumer groups and source names (uuid suffix), a fresh PostgreSQL database migrated with
``hosepipe db upgrade``, a lake prefix of its own, and the components as child processes
``python -m hosepipe ingest|poll|worker|sink|select --follow|api`` with ``HOSEPIPE_*``
built from the ``settings`` fixture. A test can kill -9 and restart any component, or point
the stack at servers of its own.

Helpers read the outcome the way a user would: topics by consuming to their end (Tansu's
ListOffsets is unreliable), the lake through a pyarrow dataset, PostgreSQL with SQL and the
API over HTTP.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from sqlalchemy import create_engine, text

from hosepipe.config import PipelineConfig
from hosepipe.localstack.supervisor import settings_env
from hosepipe.settings import Settings

# What ``hosepipe up`` runs, without the demo and the one-shot migration.
COMMANDS: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest",),
    "poll": ("poll",),
    "worker": ("worker",),
    "sink": ("sink",),
    "select": ("select", "--follow", "--no-progress"),
    "api": ("api",),
}
PARTITIONS = 2
MS = 1000


def now_ms() -> int:
    return int(time.time() * MS)


def healthy(base_url: str) -> bool:
    return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    interval: float = 0.5,
    describe: Callable[[], str] | None = None,
) -> float:
    """Poll ``check`` until true; return the seconds it took, fail naming ``what`` otherwise."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            if check():
                return time.monotonic() - start
        except Exception as exc:  # a server briefly away is not a failure yet
            last_error: Exception | None = exc
        else:
            last_error = None
        if time.monotonic() > deadline:
            extra = describe() if describe else ""
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}"
                + (f" (last error: {last_error!r})" if last_error else "")
                + (f"\n{extra}" if extra else "")
            )
        time.sleep(interval)


# --------------------------------------------------------------------------- the polled feed


@dataclass
class FeedApi:
    """A JSON API with cursor pagination and ``updated_since``: what the HTTP poller pulls."""

    items: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 10
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0

    def add(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            self.items.extend(items)

    def answer(self, query: dict[str, str]) -> bytes:
        with self.lock:
            self.requests += 1
            since = int(query.get("updated_since", -1))
            selected = sorted(
                (i for i in self.items if int(i["updated_at"]) > since),
                key=lambda i: int(i["updated_at"]),
            )
            offset = int(query.get("cursor", 0))
            page = selected[offset : offset + self.page_size]
            more = offset + self.page_size < len(selected)
            nxt = str(offset + self.page_size) if more else None
            return orjson.dumps({"items": page, "next_cursor": nxt})


# --------------------------------------------------------------------------- pipeline file


def pipeline_document(tag: str, feed_url: str | None) -> dict[str, Any]:
    """hosepipe.yaml for one e2e stack: every name carries ``tag``."""
    mapping = {
        "event_id": "$.id",
        "occurred_at": {"path": "$.ts", "format": "epoch_ms"},
        "event_type": "$.type",
        "subject": "$.user",
        "payload": {"rest": True},
        "attributes": {"e2e": tag},
    }
    sources: dict[str, Any] = {
        f"clicks_{tag}": {"kind": "push", "key_path": "$.id", "mapping": mapping},
        f"orders_{tag}": {"kind": "push", "key_path": "$.id", "mapping": mapping},
    }
    if feed_url is not None:
        sources[f"feed_{tag}"] = {
            "kind": "pull",
            "key_path": "$.id",
            "mapping": mapping,
            "pull": {
                "type": "http",
                "url": feed_url,
                "interval": "1s",
                "records_path": "$.items",
                "pagination": {
                    "kind": "cursor",
                    "cursor_path": "$.next_cursor",
                    "cursor_param": "cursor",
                },
                "incremental_param": "updated_since",
                "incremental_path": "$.updated_at",
                "timeout": "5s",
                "max_backoff": "2s",
            },
        }
    return {
        "version": 1,
        "topics": {
            "raw_prefix": f"e2e.raw.{tag}.",
            "canonical": f"e2e.canonical.{tag}",
            "dlq": f"e2e.dlq.{tag}",
            "partitions": PARTITIONS,
        },
        "sources": sources,
        "streams": {"batch_size": 500, "consumer_group": f"e2e-worker-{tag}"},
        "sink": {
            "max_age": "1s",
            "late_after": "1h",  # the late lane, as in the embedded defaults
            "late_max_age": "3s",
            "partition_keys": ["source"],
            "consumer_group": f"e2e-sink-{tag}",
            "retry_max_backoff": "2s",
            "s3_max_attempts": 2,
        },
        "selection": {"load_all_events": True, "follow_interval": "1s"},
        "ingest": {"auth": False},
        "api": {"auth": "none", "max_first": 1000},
    }


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The pipeline's child processes and the means to look at what they produced."""

    settings: Settings
    pipeline: PipelineConfig
    tag: str
    log_dir: Path
    base_env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)
    restarts: Counter[str] = field(default_factory=Counter)

    # ---- names
    def source(self, kind: str) -> str:
        return f"{kind}_{self.tag}"

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def env(self) -> dict[str, str]:
        return {**self.base_env, **settings_env(self.settings)}

    # ---- processes
    def run_once(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``python -m hosepipe ARGS`` to completion; fails the test on a non-zero exit."""
        done = subprocess.run(
            [sys.executable, "-m", "hosepipe", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, (
            f"hosepipe {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
        return done

    def start(self, name: str) -> None:
        assert name not in self.processes or self.processes[name].poll() is not None
        log = self.logs.get(name)
        if log is None:
            log = self.logs[name] = (self.log_dir / f"{name}.log").open("ab")
        log.write(f"\n===== start {name} at {time.time():.3f}\n".encode())
        log.flush()
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "hosepipe", *COMMANDS[name]],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_http_ready(self) -> None:
        for name, url in (("ingest", self.ingest_url), ("api", self.api_url)):
            if name in self.processes:
                wait_for(
                    f"{name} /healthz",
                    partial(healthy, url),
                    60,
                    0.3,
                    describe=partial(self.tail, name),
                )

    def start_all(self, names: tuple[str, ...] = tuple(COMMANDS)) -> None:
        for name in names:
            self.start(name)
        self.wait_http_ready()

    def kill9(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, name: str) -> None:
        self.start(name)
        self.restarts[name] += 1
        if name in ("ingest", "api"):
            self.wait_http_ready()

    def stop(self, name: str, timeout: float = 15) -> None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def stop_all(self, timeout: float = 15) -> None:
        """SIGTERM to every component at once, then wait (SIGKILL after ``timeout``)."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
                name = next(n for n, p in self.processes.items() if p is process)
                print(f"\n{name} did not stop within {timeout:.0f} s of SIGTERM: killed")
        for log in self.logs.values():
            log.close()

    def alive(self) -> dict[str, bool]:
        return {name: p.poll() is None for name, p in self.processes.items()}

    def assert_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
        assert not dead, f"components exited: {dead}\n" + "\n".join(self.tail(n) for n in dead)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            content = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"--- {name}: no log"
        return f"--- {name} (last {lines} lines of {path.name}):\n" + "\n".join(content)

    def tails(self) -> str:
        return "\n".join(self.tail(name) for name in self.processes)

    # ---- what came out
    def read_topic(self, topic: str, timeout: float = 30) -> list[Any]:
        return read_topic(self.settings, topic, timeout)

    def raw_topics(self) -> dict[str, str]:
        return {name: self.pipeline.raw_topic(name) for name in self.pipeline.sources}

    def pg_counts(self, table: str = "events") -> tuple[int, int]:
        """(rows, distinct event_id) of a table."""
        engine = create_engine(self.settings.database_url)
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    text(f"select count(*), count(distinct event_id) from {table}")
                ).one()
        finally:
            engine.dispose()
        return int(row[0]), int(row[1])

    def pg_has(self, event_ids: tuple[str, ...]) -> bool:
        """Whether every one of ``event_ids`` is in table events."""
        engine = create_engine(self.settings.database_url)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    text("select count(*) from events where event_id = any(:ids)"),
                    {"ids": list(event_ids)},
                ).scalar_one()
        finally:
            engine.dispose()
        return int(found) == len(set(event_ids))

    def pg_event_ids(self) -> list[str]:
        engine = create_engine(self.settings.database_url)
        try:
            with engine.connect() as conn:
                return [r[0] for r in conn.execute(text("select event_id from events"))]
        finally:
            engine.dispose()

    def lake_event_ids(self) -> list[str]:
        from hosepipe.lake import lake_dataset

        dataset = lake_dataset(self.settings, keys=self.pipeline.sink.partition_keys)
        column = dataset.to_table(columns=["event_id"]).column("event_id")
        return [str(v) for v in column.to_pylist()]

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.api_url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    def stats(self) -> list[dict[str, Any]]:
        """``hosepipe stats --json``: the workers' per-source counters."""
        done = self.run_once("stats", "--json", timeout=60)
        rows: list[dict[str, Any]] = orjson.loads(done.stdout.strip().splitlines()[-1])
        return rows


def read_topic(settings: Settings, topic: str, timeout: float = 30) -> list[Any]:
    """Every message of ``topic`` from the beginning to the end each partition had when read.

    Counts by consuming to partition EOF (fetch responses carry the right high-water mark;
    Tansu's ListOffsets does not).
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from hosepipe.kafka import consumer_config

    reader = Consumer(
        consumer_config(
            settings, f"e2e-reader-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
    )
    try:
        metadata = reader.list_topics(topic, timeout=10).topics.get(topic)
        assert metadata is not None and metadata.error is None, f"topic {topic} missing"
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        reader.assign(partitions)
        pending = {p.partition for p in partitions}
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"reading {topic} to its end timed out"
            for message in reader.consume(1000, 1.0):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, f"{topic}: {error}"
                    pending.discard(message.partition())
                    continue
                messages.append(message)
        return messages
    finally:
        reader.close()
