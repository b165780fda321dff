"""Faults while load runs, on loopback and bounded in time.

- kill -9 of worker, sink, selector, ingest and the poller, one after the other, each
  restarted (about 1.5 minutes);
- S3 stopped for 20 s mid-stream, then PostgreSQL restarted mid-load, on servers of the
  test's own (about 1.5 minutes).

After recovery: every acknowledged event_id is in PostgreSQL exactly once, the lake holds
exactly what the canonical topic holds (no file written twice), nothing is dead-lettered,
and the duplicates a crash let through the stream stage are counted and printed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from hosepipe.kafka import make_producer
from hosepipe.localstack.servers import free_port, start_postgres, start_s3
from tests.e2e.support import FeedApi, Stack, now_ms, wait_for

pytestmark = pytest.mark.integration

RECOVERY_TIMEOUT = 60.0
COMPLETION_TIMEOUT = 120.0
LONG_RUNNING = ("ingest", "worker", "sink", "select", "api")
WITH_POLLER = ("ingest", "poll", "worker", "sink", "select", "api")


@dataclass
class Load:
    """Sends events until stopped: through a Kafka client, HTTP ingest and (with ``feed``)
    the HTTP poller.

    Every batch also repeats a few ids of the batch before (duplicates). A record counts as
    sent once Kafka or ingest acknowledged it; refused or failed sends are retried, as a
    Firehose client would, so ingest being down delays records but loses none.
    """

    stack: Stack
    feed: FeedApi | None = None  # also offer records to the HTTP poller
    batch: int = 40
    pause: float = 0.4
    acked: set[str] = field(default_factory=set)
    attempts: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    batches: int = 0
    bursts: int = 0
    last_ids: tuple[str, ...] = ()
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="e2e-load", daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the load generator did not stop"
        if self.error is not None:
            raise AssertionError(f"load generator failed: {self.error!r}") from self.error

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def _events(self, prefix: str, n: int, base: int) -> list[dict[str, Any]]:
        """A batch; every 4th event 2-7 h late, so the sink's late lane holds rows too."""
        return [
            {
                "id": f"{prefix}-{n}-{i}",
                "ts": base + i - (0 if i % 4 else (2 + i % 6) * 3_600_000),
                "type": "tick",
                "user": f"u{i % 5}",
            }
            for i in range(self.batch)
        ]

    def _loop(self) -> None:
        stack = self.stack
        clicks, orders = stack.source("clicks"), stack.source("orders")
        raw_clicks = stack.pipeline.raw_topic(clicks)
        producer = make_producer(stack.settings)
        client = httpx.Client(timeout=10)
        previous: list[dict[str, Any]] = []
        n = 0
        try:
            while not self.stop.is_set():
                base = now_ms() - 60_000
                kafka_batch = self._events(f"k-{stack.tag}", n, base)
                for item in kafka_batch + previous[:3]:
                    producer.produce(raw_clicks, orjson.dumps(item), item["id"].encode())
                    self.attempts["kafka"] += 1
                while producer.flush(10) != 0:  # every record acknowledged before counting
                    self.attempts["kafka_flush_retry"] += 1
                self.acked.update(e["id"] for e in kafka_batch)
                http_batch = self._events(f"h-{stack.tag}", n, base)
                self._post(client, orders, http_batch + http_batch[:3])
                self.acked.update(e["id"] for e in http_batch)
                last = [kafka_batch[-1]["id"], http_batch[-1]["id"]]
                if self.feed is not None:
                    feed_batch = [
                        {**e, "updated_at": n * 100 + i}
                        for i, e in enumerate(self._events(f"p-{stack.tag}", n, base)[:5])
                    ]
                    self.feed.add(feed_batch)
                    self.acked.update(e["id"] for e in feed_batch)
                    last.append(feed_batch[-1]["id"])
                previous = kafka_batch
                n += 1
                self.batches = n
                self.last_ids = tuple(last)
                self.stop.wait(self.pause)
        finally:
            producer.flush(30)
            client.close()

    def burst(self, n: int) -> None:
        """``n`` events at once through the Kafka client (from the test's thread), acknowledged.

        A kill right after it lands in the middle of the work, not between two batches.
        """
        stack = self.stack
        raw_clicks = stack.pipeline.raw_topic(stack.source("clicks"))
        producer = make_producer(stack.settings)
        base = now_ms() - 60_000
        self.bursts += 1
        ids = [f"b-{stack.tag}-{self.bursts}-{i}" for i in range(n)]
        for i, event_id in enumerate(ids):
            item = {"id": event_id, "ts": base + i, "type": "burst"}
            producer.produce(raw_clicks, orjson.dumps(item), event_id.encode())
        assert producer.flush(30) == 0, "burst not acknowledged"
        self.acked.update(ids)

    def _post(self, client: httpx.Client, source: str, items: list[dict[str, Any]]) -> None:
        url = f"{self.stack.ingest_url}/v1/sources/{source}/records"
        pending = items
        deadline = time.monotonic() + 90
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingest refused {len(pending)} records for 90 s")
            self.attempts["http"] += 1
            try:
                response = client.post(url, json=pending)
            except httpx.HTTPError:
                self.attempts["http_retry"] += 1
                time.sleep(0.3)
                continue
            if response.status_code != 200:
                self.attempts[f"http_{response.status_code}"] += 1
                time.sleep(0.3)
                continue
            failed = {r["index"] for r in response.json()["results"] if "error" in r}
            pending = [item for index, item in enumerate(pending) if index in failed]
            if pending:
                self.attempts["http_partial"] += 1
                time.sleep(0.3)


def pg_distinct(stack: Stack) -> int:
    return stack.pg_counts()[1]


def wait_progress(stack: Stack, load: Load, what: str, timeout: float = RECOVERY_TIMEOUT) -> float:
    """Seconds until events sent after now (both ways in) are queryable in PostgreSQL.

    Proves the whole chain moves again, not just a backlog behind the fault.
    """
    start = time.monotonic()
    batch = load.batches
    wait_for(f"the load to get a batch through after {what}", lambda: load.batches > batch, timeout)
    ids = load.last_ids
    wait_for(
        f"events {ids} sent after {what} to reach PostgreSQL",
        lambda: stack.pg_has(ids),
        max(1.0, timeout - (time.monotonic() - start)),
        describe=stack.tails,
    )
    return time.monotonic() - start


def check_recovered(stack: Stack, load: Load, report: dict[str, Any]) -> None:
    """Wait for every acknowledged event, then check PostgreSQL, the lake and the topics."""
    expected = load.acked
    report["events_acknowledged"] = len(expected)
    report["load_attempts"] = dict(load.attempts)
    report["drain_seconds"] = round(
        wait_for(
            f"all {len(expected)} acknowledged events in PostgreSQL",
            lambda: pg_distinct(stack) >= len(expected),
            COMPLETION_TIMEOUT,
            1.0,
            describe=lambda: f"pg={stack.pg_counts()}\n{stack.tails()}",
        ),
        1,
    )
    rows, distinct = stack.pg_counts()
    report["postgres_rows"] = rows
    assert rows == distinct, "duplicate event_id rows in PostgreSQL"
    missing = expected - set(stack.pg_event_ids())
    assert not missing, f"{len(missing)} acknowledged events never reached PostgreSQL"
    assert distinct == len(expected), "PostgreSQL holds events nobody sent"

    raw = [m for s in stack.pipeline.sources for m in stack.read_topic(stack.pipeline.raw_topic(s))]
    raw_ids = Counter((m.key() or b"").decode() for m in raw)
    assert expected <= set(raw_ids), "an acknowledged record is missing from its raw topic"
    canonical = Counter(
        (m.key() or b"").decode() for m in stack.read_topic(stack.pipeline.topics.canonical)
    )
    dlq = stack.read_topic(stack.pipeline.topics.dlq)
    assert set(canonical) == expected
    assert not dlq, f"{len(dlq)} records dead-lettered under faults"
    report["raw_records"] = sum(raw_ids.values())
    report["canonical_records"] = sum(canonical.values())
    report["canonical_duplicates"] = sum(canonical.values()) - len(canonical)
    report["duplicates_dropped"] = sum(raw_ids.values()) - sum(canonical.values()) - len(dlq)
    assert report["duplicates_dropped"] >= 0, "conservation: canonical holds more than raw"

    lake = Counter(stack.lake_event_ids())
    report["lake_rows"] = sum(lake.values())
    report["lake_duplicates"] = sum(lake.values()) - len(lake)
    assert set(lake) == expected, "the lake misses events or holds foreign ones"
    # Exactly once with respect to the canonical topic: a file replayed after a crash
    # overwrites itself; any lake duplicate must be one the stream stage let through.
    assert lake == canonical, (
        f"lake and canonical topic differ: {sum((lake - canonical).values())} extra rows in "
        f"the lake, {sum((canonical - lake).values())} missing"
    )

    # The API answers from the same database, after a PostgreSQL restart too. Its pool does
    # not pre-ping, so a request may fail once per stale connection: counted, then it must
    # answer right.
    failures: list[str] = []

    def api_answers() -> bool:
        try:
            data = stack.graphql("{ events(first: 1) { totalCount } }")
        except AssertionError as exc:
            failures.append(str(exc)[:200])
            return False
        return bool(data["events"]["totalCount"] == len(expected))

    wait_for("the API to count every event", api_answers, 30, 0.5)
    report["api_failed_requests_after_recovery"] = len(failures)


def emit(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=True))
    print(f"\nfault report: {json.dumps(report, sort_keys=True)}")


def test_kill9_each_component_under_load_loses_nothing(
    e2e_stack: Callable[..., Stack], feed_api: tuple[FeedApi, str], tmp_path: Path
) -> None:
    feed, feed_url = feed_api
    stack = e2e_stack(feed_url=feed_url)
    stack.start_all(WITH_POLLER)
    load = Load(stack, feed=feed)
    report: dict[str, Any] = {"test": "kill9", "recovery_seconds": {}}
    load.start()
    try:
        wait_for("the first events in PostgreSQL", lambda: pg_distinct(stack) > 0, 90)
        for name in ("worker", "sink", "select", "ingest", "poll"):
            if name in ("worker", "sink"):
                load.burst(3000)  # kill it while it works on a backlog
                time.sleep(0.5 if name == "worker" else 1.5)
            stack.kill9(name)
            time.sleep(1.0)  # load keeps coming while it is down
            stack.restart(name)
            report["recovery_seconds"][name] = round(
                wait_progress(stack, load, f"kill -9 {name}"), 1
            )
            stack.assert_alive()
    finally:
        load.finish()
    check_recovered(stack, load, report)
    stack.assert_alive()
    emit(report, tmp_path / "fault-report.json")


@pytest.mark.timeout(600)
def test_s3_outage_and_postgres_restart_under_load_lose_nothing(
    e2e_stack: Callable[..., Stack], make_database: Callable[..., str], tmp_path: Path
) -> None:
    """Own S3 and PostgreSQL servers, so the session's servers are never disturbed."""
    s3_dir, s3_port = tmp_path / "own-s3", free_port()
    s3 = start_s3(s3_dir, s3_port, "e2e-fault", "e2e-fault-secret", ["e2e-lake"])
    pg_dir, pg_port = tmp_path / "own-pg", free_port()
    pg = start_postgres(pg_dir, pg_port, durable=False)
    try:
        stack = e2e_stack(
            database_url=make_database(pg.url),
            lake_url="s3://e2e-lake/lake",
            s3_endpoint_url=s3.endpoint_url,
            s3_access_key_id="e2e-fault",
            s3_secret_access_key=SecretStr("e2e-fault-secret"),
        )
        stack.start_all(LONG_RUNNING)
        load = Load(stack)
        report: dict[str, Any] = {"test": "s3+postgres", "recovery_seconds": {}}
        load.start()
        try:
            wait_for("the first events in PostgreSQL", lambda: pg_distinct(stack) > 0, 90)
            s3.stop()
            time.sleep(20)  # S3 away for 20 s while events keep coming
            s3 = start_s3(s3_dir, s3_port, "e2e-fault", "e2e-fault-secret", ["e2e-lake"])
            report["recovery_seconds"]["s3_outage_20s"] = round(
                wait_progress(stack, load, "S3 came back", 90), 1
            )
            report["exited_during_s3_outage"] = {n: not a for n, a in stack.alive().items()}
            pg.stop()
            time.sleep(3)
            pg = start_postgres(pg_dir, pg_port, durable=False)
            report["recovery_seconds"]["postgres_restart"] = round(
                wait_progress(stack, load, "PostgreSQL restarted", 90), 1
            )
            report["exited_during_pg_restart"] = {n: not a for n, a in stack.alive().items()}
        finally:
            load.finish()
        check_recovered(stack, load, report)
        emit(report, tmp_path / "fault-report.json")
        stack.assert_alive()
    finally:
        # the components first (they hold connections), then the servers
        for built in [stack] if "stack" in locals() else []:
            built.stop_all()
        s3.stop()
        pg.stop()
