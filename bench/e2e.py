"""The whole pipeline on one machine: raw topic -> worker -> sink -> lake -> select -> PostgreSQL.

    python bench/e2e.py                        # 300,000 events, then 2,000 events/s for 30 s
    python bench/e2e.py --events 100000 --rate 2000 --seconds 30 --broker-storage memory
    python bench/e2e.py --events 1000000 --sustain 20000 --seconds 0   # + 120 s at 20k/s

Starts its own embedded servers on free loopback ports (SeaweedFS S3, Tansu, PostgreSQL,
as ``hosepipe up`` does: broker topics in S3 unless ``--broker-storage memory``, durable
PostgreSQL), creates the topics of the pipeline file (default: the repository's
``hosepipe.yaml``, i.e. the embedded defaults: sink ``max_age`` 2 s with the late lane
(``late_after`` 1 h), ``select --follow`` every 1 s, the ``orders`` rule table), runs
``hosepipe db upgrade``, then the components as child processes
``python -m hosepipe worker|sink|select --follow``, and the broker trim in a thread (as
``hosepipe up`` does with S3 storage).

Phases, each printed:

1. **ceilings**: a plain confluent-kafka producer, then consumer, over a scratch topic with
   the same records (before the components start, so they do not compete);
2. **warm-up**: 100 events, until they are queryable (group joins, first flush);
3. **throughput**: N demo events (clickstream + orders, 5 % duplicates, 1 % malformed, 2 %
   late, from :mod:`hosepipe.demo`) produced into the raw topics as fast as the producer
   goes, keyed by event id like hosepipe's ingest keys them (``--unkeyed``: no keys);
   sustained events/s = valid unique events / (first produce -> last one in ``events``);
   progress is followed through the selector's ``NOTIFY hosepipe_events`` (rows written per
   committed load), and ``count(*)`` must equal what was sent; the lake's rows and distinct
   event ids are counted after it. Per stage, the time each consumer group's committed
   offsets (worker on raw, sink on canonical) reached their final value;
3b. **sustained** (``--sustain EVENTS_PER_S``): the demo mix paced at that many valid unique
   events/s for ``--sustain-seconds``; the backlog (valid events sent minus rows in
   ``events``, in seconds of input) is sampled every second, and the phase is met when
   nothing is lost and at most 10 s of input is behind at its end;
4. **latency**: clickstream events at a paced rate; every k-th event's send time is kept and
   PostgreSQL is polled for those ids: event-to-queryable p50/p95/p99; the canonical topic
   is tailed too (its key is the event id), which splits off the worker's share.

CPU seconds and peak RSS per component and server (psutil; PostgreSQL summed over its
process tree, exited autovacuum workers included, so shared buffers count more than once).
After the throughput table, what PostgreSQL did for the rows loaded in that phase: WAL per
row, megabytes written per backend type and kind of write (``pg_stat_io``: ``wal/init`` is
new WAL segments zero-filled, ``relation/normal`` by a client backend is dirty pages it had
to evict), and the autovacuum runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

REPO = Path(__file__).resolve().parent.parent
COMPONENTS: dict[str, tuple[str, ...]] = {
    "worker": ("worker",),
    "sink": ("sink",),
    "select": ("select", "--follow", "--no-progress"),
}
# The benchmark's own process in the CPU table: the producer of the workload, its probes.
BENCH_PROCESS = "bench (producer, probes)"
CEILING_TOPIC = "bench.ceiling"
S3_KEY, S3_SECRET = "bench", "bench-secret-key"
BROKER_BUCKET = "tansu"


# --------------------------------------------------------------------------- events


@dataclass
class Workload:
    """Encoded raw records per topic and the number of valid unique events among them."""

    records: list[tuple[str, bytes | None, bytes]]
    expected: int
    duplicates: int
    malformed: int
    late: int


def compact(value: bytes) -> bytes:
    """A right-sized copy of ``value``.

    orjson writes into a ~4 KB buffer and shrinks the bytes object in place, and the
    allocator keeps the whole block: kept by the million, 250-byte records held ~4 KB
    each (14.5 GB for a 120 s sustained phase).
    """
    return bytes(memoryview(value))


def demo_workload(
    pipeline: Any, n: int, seed: int, late: float | None = None, keyed: bool = True
) -> Workload:
    """``n`` records, half clickstream, half orders, with the demo's imperfections
    (``late``: the share of events 2-30 h late instead of the demo's).

    Keyed by event id as hosepipe's ingest keys them and as docs/connectors.md asks of every
    raw producer; ``keyed=False`` sends them without keys (copies of an event then scatter
    over the partitions and some pass the worker's per-partition dedupe).
    """
    from connectors.records import key_of_bytes, record_key, unkeyed
    from hosepipe.demo import (
        DemoCounts,
        DemoMix,
        clickstream_event,
        order_event,
        with_imperfections,
    )

    mix, counts = DemoMix(rng=random.Random(seed)), DemoCounts()
    if late is not None:
        mix.late = late
    records: list[tuple[str, bytes | None, bytes]] = []
    sources = [
        (pipeline.raw_topic(name), record_key(name, pipeline.sources[name]) if keyed else unkeyed)
        for name in ("clickstream", "orders")
    ]
    (clicks, click_key), (orders, order_key) = sources
    batch = 1000
    while len(records) < n:
        size = min(batch, n - len(records))
        for value in with_imperfections(clickstream_event, mix, counts, (size + 1) // 2):
            records.append((clicks, key_of_bytes(value, click_key), compact(value)))
        for value in with_imperfections(order_event, mix, counts, size // 2):
            records.append((orders, key_of_bytes(value, order_key), compact(value)))
    return Workload(records, counts.sent, counts.duplicates, counts.malformed, counts.late)


def click(rng: random.Random) -> tuple[str, bytes]:
    """A clean clickstream record sent now: (event id, JSON)."""
    from hosepipe.demo import DemoCounts, DemoMix, clickstream_event

    body = clickstream_event(DemoMix(duplicates=0, malformed=0, late=0, rng=rng), DemoCounts())
    return str(body["eventId"]), orjson.dumps(body)


# --------------------------------------------------------------------------- measuring


@dataclass
class Resources:
    """Peak RSS and CPU seconds of named process trees, sampled in a thread."""

    pids: dict[str, int]
    peak_rss: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> dict[str, float]:
        for name, pid in self.pids.items():
            own = pid == os.getpid()
            try:
                root = psutil.Process(pid)
                # The benchmark's own process is every other's parent: it counts alone.
                tree = [root] if own else [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            rss, cpu = 0, 0.0
            for proc in tree:
                try:
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    if not own:
                        # descendants that exited, e.g. PostgreSQL's autovacuum workers
                        cpu += times.children_user + times.children_system
                except psutil.Error:
                    pass
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)
            self.cpu[name] = max(self.cpu.get(name, 0.0), cpu)
        return dict(self.cpu)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.sample()


def cpu_use_line(label: str, cpu: dict[str, float], seconds: float, cores: int, events: int) -> str:
    """How much of the machine a phase used: every measured process's CPU seconds against
    the core-seconds the phase had, and per million valid events. A phase that used (nearly)
    all of it was bound by the machine's CPU, not by waiting."""
    used = sum(cpu.values())
    available = seconds * cores
    share = used / available if available > 0 else float("nan")
    per_million = used / events * 1e6 if events else float("nan")
    return (
        f"{label} phase: {used:.1f} CPU s of the {available:.1f} core-seconds it had "
        f"({share:.0%} of {cores} cores); {per_million:.1f} CPU s per million valid events"
    )


def lake_event_ids(stack: Stack) -> tuple[int, int]:
    """Rows in the lake and distinct event ids among them (all the run's events so far).

    PostgreSQL keeps each event_id once whatever it is sent, so only the lake shows a
    duplicate that passed the worker (e.g. copies of an event in two raw partitions).
    """
    import pyarrow.compute as pc

    from hosepipe.lake import lake_dataset

    dataset = lake_dataset(stack.settings, keys=stack.pipeline.sink.partition_keys)
    ids = dataset.to_table(columns=["event_id"]).column("event_id")
    return len(ids), int(pc.count_distinct(ids).as_py())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class CommittedOffsets:
    """Sums of a consumer group's committed offsets over topics, through one client.

    One consumer that never subscribes (no group join) answers every poll of the phase: a
    new client per poll cost the broker, its S3 server and the benchmark ~20 ms of CPU
    each half second, taken from the pipeline it measures.
    """

    def __init__(self, settings: Any, group: str, topics: Iterable[str]) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from hosepipe.kafka import consumer_config

        self.reader = Consumer(consumer_config(settings, group))
        self.partitions = []
        for topic in topics:
            meta = self.reader.list_topics(topic, timeout=10).topics[topic]
            self.partitions += [TopicPartition(topic, p) for p in meta.partitions]

    def total(self) -> int:
        committed = self.reader.committed(self.partitions, timeout=10)
        return sum(max(tp.offset, 0) for tp in committed)

    def close(self) -> None:
        self.reader.close()


def pg_connect(pg: Any) -> Any:
    import psycopg

    return psycopg.connect(
        host="127.0.0.1",
        port=pg.port,
        user=pg.user,
        password=pg.password,
        dbname=pg.database,
        autocommit=True,
    )


def produce_all(settings: Any, records: list[tuple[str, bytes | None, bytes]]) -> float:
    """Produce every record with the project's producer; seconds from first send to flushed."""
    from hosepipe.kafka import make_producer

    producer = make_producer(settings)
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    began = time.perf_counter()
    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(120)
    took = time.perf_counter() - began
    if failed or left:
        raise SystemExit(f"produce failed: {len(failed)} errors ({failed[:3]}), {left} unsent")
    return took


def consume_all(settings: Any, topic: str, expected: int) -> float:
    """Consume ``topic`` from the start to ``expected`` records; seconds taken."""
    from confluent_kafka import Consumer, TopicPartition

    from hosepipe.kafka import consumer_config

    reader = Consumer(consumer_config(settings, f"bench-ceiling-{time.time_ns()}"))
    try:
        meta = reader.list_topics(topic, timeout=10).topics[topic]
        reader.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        seen, began = 0, time.perf_counter()
        deadline = began + 300
        while seen < expected and time.perf_counter() < deadline:
            seen += sum(1 for m in reader.consume(10000, 1.0) if m.error() is None)
        return time.perf_counter() - began
    finally:
        reader.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    settings: Any
    pipeline: Any
    work: Path
    servers: dict[str, Any] = field(default_factory=dict)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    trim_stop: threading.Event = field(default_factory=threading.Event)

    def start_broker_trim(self) -> None:
        """Trim the broker's topics in S3 as ``hosepipe up`` does (s3 storage only): a long
        run without it lists ever more batch objects on every fetch."""
        from hosepipe.localstack.broker_trim import BrokerTrimmer

        every = self.settings.embedded_broker_trim_every
        if self.settings.embedded_broker_storage != "s3" or every <= 0:
            return
        s3 = self.servers["s3"].client()
        trimmer = BrokerTrimmer.for_pipeline(self.settings, self.pipeline, s3, BROKER_BUCKET)
        threading.Thread(
            target=trimmer.run, args=(self.trim_stop, every), name="broker-trim", daemon=True
        ).start()

    def env(self) -> dict[str, str]:
        from hosepipe.localstack.supervisor import settings_env

        base = {k: v for k, v in os.environ.items() if not k.startswith("HOSEPIPE_")}
        return {**base, **settings_env(self.settings), "PYTHONUNBUFFERED": "1"}

    def run_once(self, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "hosepipe", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode:
            raise SystemExit(f"hosepipe {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def start(self, name: str, extra: tuple[str, ...] = ()) -> None:
        log = (self.work / f"{name}.log").open("ab")
        self.children[name] = subprocess.Popen(
            [sys.executable, "-m", "hosepipe", *COMPONENTS[name.split("-")[0]], *extra],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.children.items() if p.poll() is not None}
        if dead:
            raise SystemExit(f"components exited: {dead}; logs in {self.work}")

    def stop(self) -> None:
        self.trim_stop.set()
        for process in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.children.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for name in ("postgres", "broker", "s3"):
            server = self.servers.get(name)
            if server is not None:
                server.stop()


def start_stack(work: Path, config_file: Path, broker_storage: str) -> Stack:
    from pydantic import SecretStr

    from hosepipe.config import load_pipeline
    from hosepipe.localstack.servers import (
        BrokerS3Storage,
        free_port,
        start_broker,
        start_postgres,
        start_s3,
    )
    from hosepipe.settings import Settings
    from hosepipe.topics import ensure_topics

    pipeline = load_pipeline(config_file)
    s3 = start_s3(work / "s3", free_port(), S3_KEY, S3_SECRET, ["lake", BROKER_BUCKET])
    stack = Stack(None, pipeline, work, servers={"s3": s3})
    try:
        storage = None
        if broker_storage == "s3":
            storage = BrokerS3Storage(BROKER_BUCKET, s3.endpoint_url, S3_KEY, S3_SECRET)
        stack.servers["broker"] = broker = start_broker(work / "broker", free_port(), s3=storage)
        stack.servers["postgres"] = pg = start_postgres(work / "postgres", free_port())
        stack.settings = Settings(
            config_file=config_file,
            data_dir=work / "data",
            kafka_bootstrap=broker.bootstrap,
            lake_url="s3://lake/",
            s3_endpoint_url=s3.endpoint_url,
            s3_access_key_id=S3_KEY,
            s3_secret_access_key=SecretStr(S3_SECRET),
            database_url=pg.url,
            metrics_port=0,
            ingest_port=free_port(),
            api_port=free_port(),
            embedded_broker_storage=broker_storage,
        )
        ensure_topics(stack.settings, pipeline)
        from confluent_kafka.admin import NewTopic

        from hosepipe.kafka import make_admin

        admin = make_admin(stack.settings)
        created = admin.create_topics([NewTopic(CEILING_TOPIC, pipeline.topics.partitions, 1)])
        for future in created.values():
            future.result(30)
        stack.run_once("db", "upgrade")
    except BaseException:
        stack.stop()
        raise
    return stack


# --------------------------------------------------------------------------- phases

# The sustained phase keeps up when at its end no more input than this is still on its way:
# the event-to-queryable target.
SUSTAIN_MAX_BACKLOG_S = 10.0


class LoadedRows:
    """Rows the selector reports written to ``events``, from its ``NOTIFY hosepipe_events``.

    Following the load with ``count(*)`` every half second cost PostgreSQL seconds of CPU
    per run (a parallel scan of a table growing to millions of rows, which also sets the
    new rows' hint bits early), taken from the pipeline it measures; the insert counter of
    ``pg_stat_user_tables`` is cheap but lags by up to 10 s (a backend that commits within a
    second of its previous statistics flush and then goes idle defers the next one by
    PGSTAT_IDLE_INTERVAL). The selector's notice arrives at each commit and carries the
    rows it wrote. A row upserted twice (a lake duplicate) counts twice here, so the phases
    confirm the end with one ``count(*)``.
    """

    def __init__(self, pg: Any) -> None:
        from hosepipe.db import NOTIFY_CHANNEL

        self.conn = pg_connect(pg)
        self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self.total = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stop.is_set():
            for notice in self.conn.notifies(timeout=0.2):
                self.total += int(orjson.loads(notice.payload).get("count") or 0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.conn.close()


def follow_to_target(
    conn: Any, loaded: LoadedRows, base: int, target: int, check: Callable[[], None]
) -> int:
    """Wait until ``events`` holds ``target`` rows (``base`` + new); returns the exact count.

    Reported rows reaching the target are confirmed with a ``count(*)``; when that is short
    (rows written twice), it is retried every 2 s. Gives up after 180 s without progress.
    """
    rows, last_change, last_total = base, time.perf_counter(), loaded.total
    while rows < target:
        check()
        if loaded.total != last_total:
            last_total, last_change = loaded.total, time.perf_counter()
        if base + loaded.total >= target:
            counted = conn.execute("select count(*) from events").fetchone()[0]
            if counted != rows:
                last_change = time.perf_counter()
            rows = counted
            if rows >= target:
                break
            time.sleep(1.5)
        if time.perf_counter() - last_change > 180:
            break
        time.sleep(0.5)
    return rows


PGSTAT_IDLE_INTERVAL_S = 10.0  # PostgreSQL 15+: an idle backend's deferred statistics flush

PG_WORK_QUERIES = {
    "wal": "select wal_records, wal_fpi, wal_bytes from pg_stat_wal",
    # bytes written or extended per backend type, object (relation, wal) and context
    # (normal, bulkwrite, init: a new WAL segment zero-filled) from PostgreSQL 18's pg_stat_io
    "io": "select backend_type || ' ' || object || '/' || context,"
    " coalesce(write_bytes, 0) + coalesce(extend_bytes, 0), coalesce(evictions, 0)"
    " from pg_stat_io",
    "vacuum": "select coalesce(sum(autovacuum_count), 0), coalesce(sum(autoanalyze_count), 0),"
    " coalesce(sum(total_autovacuum_time + total_autoanalyze_time), 0) / 1000"
    " from pg_stat_user_tables",
}


def pg_work(conn: Any) -> dict[str, float]:
    """Cumulative PostgreSQL counters: WAL, bytes written per backend type, autovacuum."""
    conn.execute("select pg_stat_force_next_flush()")
    records, fpi, wal_bytes = conn.execute(PG_WORK_QUERIES["wal"]).fetchone()
    work = {"wal_records": float(records), "wal_fpi": float(fpi), "wal_bytes": float(wal_bytes)}
    for backend, written, evictions in conn.execute(PG_WORK_QUERIES["io"]).fetchall():
        work[f"written {backend}"] = float(written)
        work[f"evictions {backend}"] = float(evictions)
    vacuums, analyzes, seconds = conn.execute(PG_WORK_QUERIES["vacuum"]).fetchone()
    work |= {"autovacuums": float(vacuums), "autoanalyzes": float(analyzes)}
    work["autovacuum_s"] = float(seconds)
    return work


def pg_work_line(before: dict[str, float], after: dict[str, float], rows: int) -> str:
    """What PostgreSQL did per loaded row between two ``pg_work`` snapshots."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    per_row = max(rows, 1)
    written = sorted(
        ((k.removeprefix("written "), v) for k, v in delta.items() if k.startswith("written ")),
        key=lambda kv: -kv[1],
    )
    writers = ", ".join(f"{name} {v / 2**20:,.0f}" for name, v in written if v >= 2**20)
    return (
        f"PostgreSQL work: WAL {delta['wal_bytes'] / per_row:,.0f} B/row "
        f"({delta['wal_records'] / per_row:.1f} records, {delta['wal_fpi']:,.0f} full-page "
        f"images in all); MB written by {writers or 'nobody'}; "
        f"{delta['autovacuums']:.0f} autovacuums + {delta['autoanalyzes']:.0f} autoanalyzes "
        f"taking {delta['autovacuum_s']:.1f} s"
    )


def phase_throughput(stack: Stack, load: Workload, resources: Resources) -> dict[str, Any]:
    """Produce the workload; follow each stage until PostgreSQL holds every valid event."""
    settings, pipeline = stack.settings, stack.pipeline
    raw_topics = sorted({t for t, _, _ in load.records})
    conn = pg_connect(stack.servers["postgres"])
    base = conn.execute("select count(*) from events").fetchone()[0]
    loaded = LoadedRows(stack.servers["postgres"])
    canonical = [pipeline.topics.canonical]
    worker_offsets = CommittedOffsets(settings, pipeline.streams.consumer_group, raw_topics)
    sink_offsets = CommittedOffsets(settings, pipeline.sink.consumer_group, canonical)
    raw_base = worker_offsets.total()
    cpu_before = resources.sample()
    pg_before = pg_work(conn)
    timeline: list[tuple[float, int, int, int]] = []  # (t, worker offsets, sink offsets, rows)
    began = time.perf_counter()
    produce_s = produce_all(settings, load.records)
    target = base + load.expected
    deadline, last_change, rows = time.perf_counter() + 900, time.perf_counter(), base
    while True:
        stack.check_alive()
        worker = worker_offsets.total() - raw_base
        sink = sink_offsets.total()
        now_rows = base + loaded.total
        if now_rows >= target:  # confirmed, exactly
            now_rows = follow_to_target(conn, loaded, base, target, stack.check_alive)
        now = time.perf_counter() - began
        if now_rows != rows:
            last_change = time.perf_counter()
        rows = now_rows
        timeline.append((now, worker, sink, rows - base))
        if rows >= target:
            break
        if time.perf_counter() > deadline or time.perf_counter() - last_change > 180:
            break
        time.sleep(0.5)
    cpu_after = resources.sample()
    total = time.perf_counter() - began
    rows_loaded = rows - base
    distinct = conn.execute("select count(distinct event_id) from events").fetchone()[0]
    lake_rows, lake_ids = lake_event_ids(stack)
    # The selector's backend went idle after its last commit: it reports that load's I/O and
    # WAL statistics only at its next flush, up to PGSTAT_IDLE_INTERVAL (10 s) later.
    time.sleep(PGSTAT_IDLE_INTERVAL_S + 0.5)
    pg = pg_work_line(pg_before, pg_work(conn), rows - base)
    conn.close()
    loaded.close()
    worker_offsets.close()
    sink_offsets.close()

    def reached(column: int) -> float:
        final = timeline[-1][column]
        return next(t for t, *values in timeline if values[column - 1] == final)

    def rows_at(share: float) -> float:
        return next(t for t, _, _, loaded in timeline if loaded >= share * load.expected)

    steady = (rows_at(0.9) - rows_at(0.1)) if rows >= target else float("nan")
    return {
        "steady_rate": 0.8 * load.expected / steady if steady > 0 else float("nan"),
        "records": len(load.records),
        "expected": load.expected,
        "duplicates": load.duplicates,
        "malformed": load.malformed,
        "late": load.late,
        "produce_s": produce_s,
        "worker_s": reached(1),
        "worker_offsets": timeline[-1][1],
        "sink_s": reached(2),
        "total_s": total if rows >= target else float("nan"),
        "rows": rows_loaded,
        "distinct_all": distinct,
        "lake_rows": lake_rows,
        "lake_ids": lake_ids,
        "pg_work": pg,
        "lost": load.expected - rows_loaded,
        "cpu": {k: cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_after},
        "cpu_window_s": total,
    }


def phase_sustained(
    stack: Stack, load: Workload, seconds: float, resources: Resources
) -> dict[str, Any]:
    """Pace ``load`` evenly over ``seconds``: does PostgreSQL keep up with the input?

    Each second the backlog is sampled: valid events sent so far (the workload's share of
    valid unique records) minus rows the selector reported written to ``events``. A
    pipeline that keeps up holds it steady (about the event-to-queryable delay times the
    rate); one that does not lets it grow by the deficit every second. After the last send,
    the drain is the time until every valid event is in ``events`` (confirmed with
    ``count(*)``, as in the throughput phase).
    """
    from hosepipe.kafka import make_producer

    settings = stack.settings
    conn = pg_connect(stack.servers["postgres"])
    base = conn.execute("select count(*) from events").fetchone()[0]
    loaded = LoadedRows(stack.servers["postgres"])
    producer = make_producer(settings)
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    records, n = load.records, len(load.records)
    rate, valid_share = n / seconds, load.expected / n
    samples: list[tuple[float, int, int]] = []  # (t, valid events sent, rows inserted)
    cpu_before = resources.sample()
    sent, next_sample = 0, 1.0
    began = time.perf_counter()
    while sent < n:
        elapsed = time.perf_counter() - began
        due = min(n, int(elapsed * rate))
        while sent < due:
            topic, key, value = records[sent]
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
            except BufferError:
                producer.poll(0.05)
                continue
            sent += 1
        producer.poll(0)
        if elapsed >= next_sample:
            samples.append((elapsed, int(sent * valid_share), loaded.total))
            next_sample += 1.0
            stack.check_alive()
        time.sleep(0.02)
    sending_s = time.perf_counter() - began
    left = producer.flush(120)
    if failed or left:
        raise SystemExit(f"produce failed: {len(failed)} errors ({failed[:3]}), {left} unsent")
    target = base + load.expected
    rows = follow_to_target(conn, loaded, base, target, stack.check_alive)
    done_s = time.perf_counter() - began
    cpu_after = resources.sample()
    conn.close()
    loaded.close()

    def backlog_at(share: float) -> float:
        """Backlog in seconds of input at ``share`` of the sending time."""
        _, valid_sent, loaded = min(samples, key=lambda s: abs(s[0] - share * sending_s))
        return max(valid_sent - loaded, 0) / (rate * valid_share)

    half = [s for s in samples if s[0] >= sending_s / 2]
    second_half_rate = (
        (half[-1][2] - half[0][2]) / (half[-1][0] - half[0][0]) if len(half) > 1 else float("nan")
    )
    return {
        "records": n,
        "expected": load.expected,
        "seconds": sending_s,
        "rate": n / sending_s,
        "valid_rate": load.expected / sending_s,
        "backlog_s": {share: backlog_at(share) for share in (0.25, 0.5, 0.75, 1.0)},
        "second_half_rate": second_half_rate,
        "drain_s": done_s - sending_s if rows >= target else float("nan"),
        "lost": target - rows,
        "cpu": {k: cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0) for k in cpu_after},
        "cpu_window_s": done_s,
    }


def phase_latency(
    stack: Stack, rate: float, seconds: float, every: int, seed: int
) -> dict[str, Any]:
    """Paced clickstream events; event-to-queryable latency of every ``every``-th one."""
    from hosepipe.kafka import make_producer

    topic = stack.pipeline.raw_topic("clickstream")
    rng = random.Random(seed)
    producer = make_producer(stack.settings)
    sent_at: dict[str, float] = {}
    visible: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()

    def poll_pg() -> None:
        conn = pg_connect(stack.servers["postgres"])
        try:
            while not done.is_set():
                with lock:
                    pending = [i for i in sent_at if i not in visible]
                if pending:
                    found = conn.execute(
                        "select event_id from events where event_id = any(%s)", (pending,)
                    ).fetchall()
                    seen = time.time()
                    with lock:
                        for (event_id,) in found:
                            visible[event_id] = seen
                time.sleep(0.1)
        finally:
            conn.close()

    canonical_at: dict[str, float] = {}

    def tail_canonical() -> None:
        """When each sampled event reaches the canonical topic (its key is the event id)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from hosepipe.kafka import consumer_config

        topic_name = stack.pipeline.topics.canonical
        reader = Consumer(
            consumer_config(
                stack.settings, f"bench-tail-{time.time_ns()}", **{"fetch.wait.max.ms": 20}
            )
        )
        try:
            meta = reader.list_topics(topic_name, timeout=10).topics[topic_name]
            since = int(time.time() * 1000)
            wanted = [TopicPartition(topic_name, p, since) for p in meta.partitions]
            found = reader.offsets_for_times(wanted, timeout=10)
            # Tansu answers some offset look-ups wrongly: when it finds nothing, read from
            # the start; the message timestamps (not the reading time) give the arrival.
            reader.assign(
                [
                    TopicPartition(
                        topic_name, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    )
                    for tp in found
                ]
            )
            while not done.is_set():
                for message in reader.consume(1000, 0.2):
                    if message.error() is None:
                        key = (message.key() or b"").decode()
                        kind, stamp = message.timestamp()
                        at = stamp / 1000 if kind else time.time()
                        with lock:
                            if key in sent_at and key not in canonical_at:
                                canonical_at[key] = at
        finally:
            reader.close()

    tailer = threading.Thread(target=tail_canonical, daemon=True)
    tailer.start()
    poller = threading.Thread(target=poll_pg, daemon=True)
    poller.start()
    time.sleep(1.0)  # the tailer is positioned before the first send
    tick, sent = 0.05, 0
    began = time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            event_id, value = click(rng)
            producer.produce(topic, value, event_id.encode())
            if sent % every == 0:
                with lock:
                    sent_at[event_id] = time.time()
            sent += 1
        producer.poll(0)
        time.sleep(tick)
    producer.flush(60)
    wait_until(lambda: len(visible) >= len(sent_at), 300, "sampled events in PostgreSQL", 0.5)
    done.set()
    poller.join(5)
    tailer.join(5)
    latencies = [visible[i] - sent_at[i] for i in sent_at]
    to_canonical = [canonical_at[i] - sent_at[i] for i in sent_at if i in canonical_at]
    return {
        "canonical_samples": len(to_canonical),
        "canonical_p50": percentile(to_canonical, 0.50) if to_canonical else float("nan"),
        "canonical_p95": percentile(to_canonical, 0.95) if to_canonical else float("nan"),
        "sent": sent,
        "rate": sent / seconds,
        "samples": len(latencies),
        "p50": percentile(latencies, 0.50),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
    }


def selector_passes(log: Path) -> tuple[int, int, int, float]:
    """(passes, files, events rows, seconds) from the selector's "selection run done" lines."""
    import re

    passes, files, rows, seconds = 0, 0, 0, 0.0
    pattern = re.compile(
        r"selection run done.*files=(\d+) rows=\{'events': (\d+).*seconds=([\d.]+)"
    )
    for line in log.read_text(errors="replace").splitlines():
        match = pattern.search(line)
        if match:
            passes += 1
            files += int(match[1])
            rows += int(match[2])
            seconds += float(match[3])
    return passes, files, rows, seconds


def warm_up(stack: Stack, seed: int) -> tuple[float, int]:
    """100 events; seconds until all are queryable (group joins, first flush, first load)."""
    from hosepipe.kafka import make_producer

    rng = random.Random(seed)
    ids, producer = [], make_producer(stack.settings)
    began = time.perf_counter()
    for _ in range(100):
        event_id, value = click(rng)
        ids.append(event_id)
        producer.produce(stack.pipeline.raw_topic("clickstream"), value, event_id.encode())
    producer.flush(30)
    conn = pg_connect(stack.servers["postgres"])

    def loaded() -> bool:
        stack.check_alive()
        found = conn.execute(
            "select count(*) from events where event_id = any(%s)", (ids,)
        ).fetchone()[0]
        return bool(found == len(ids))

    wait_until(loaded, 300, "warm-up events in PostgreSQL", 0.5)
    conn.close()
    return time.perf_counter() - began, len(ids)


# --------------------------------------------------------------------------- report


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({model}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}"
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(
    args: argparse.Namespace,
    ceilings: tuple[float, float],
    warm: tuple[float, int],
    thr: dict[str, Any],
    lat: dict[str, Any] | None,
    sus: dict[str, Any] | None,
    res: Resources,
    loads: tuple[str, str],
) -> None:
    produce_rate, consume_rate = ceilings
    n, expected = thr["records"], thr["expected"]
    print(f"\nmachine: {machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"load average before / after: {loads[0]} / {loads[1]}")
    print(
        f"config: hosepipe.yaml{' with ' + ', '.join(args.set) if args.set else ''}; "
        f"broker storage: {args.broker_storage}"
    )
    print(f"warm-up: {warm[1]} events queryable {warm[0]:.1f} s after start")
    print(
        f"\nthroughput: {n:,} raw records ({expected:,} valid unique, {thr['duplicates']:,} "
        f"duplicates, {thr['malformed']:,} malformed, {thr['late']:,} late)"
    )
    rows = [
        ("broker produce, plain confluent producer (ceiling)", produce_rate, "-"),
        ("broker consume, plain confluent consumer (ceiling)", consume_rate, "-"),
        ("raw produce in the run (idempotent acks=all)", n / thr["produce_s"], "-"),
        ("worker: raw offsets all committed", n / thr["worker_s"], f"{thr['worker_s']:.1f} s"),
        ("sink: canonical offsets all committed", expected / thr["sink_s"],
         f"{thr['sink_s']:.1f} s"),
        ("end to end: first produce -> all in PostgreSQL", expected / thr["total_s"],
         f"{thr['total_s']:.1f} s"),
        ("PostgreSQL rows/s between 10 % and 90 % loaded", thr["steady_rate"], "-"),
    ]  # fmt: skip
    print(f"| {'stage':<52} | {'events/s':>9} | {'done after':>10} |")
    print(f"|{'-' * 54}|{'-' * 11}|{'-' * 12}|")
    for name, rate, after in rows:
        print(f"| {name:<52} | {rate:>9,.0f} | {after:>10} |")
    print(
        f"rows loaded {thr['rows']:,} of {expected:,} expected (lost {thr['lost']:,}); "
        f"events table count(distinct event_id) = {thr['distinct_all']:,}"
    )
    print(
        f"lake: {thr['lake_rows']:,} rows, {thr['lake_ids']:,} distinct event ids "
        f"({thr['lake_rows'] - thr['lake_ids']:,} duplicates)"
    )
    print(thr["pg_work"])
    print(
        "peer (stream stage, not run here): see docs/benchmarks.md '## Streams' and "
        "LOCAL_SERVICES: quixstreams ~20k/s, plain loop ~85-106k/s"
    )
    if sus:
        backlog = ", ".join(f"{share:.0%} {b:.1f} s" for share, b in sus["backlog_s"].items())
        print(
            f"\nsustained: {sus['records']:,} raw records paced at {sus['rate']:,.0f}/s for "
            f"{sus['seconds']:.0f} s = {sus['valid_rate']:,.0f} valid unique events/s offered; "
            f"rows/s into PostgreSQL over the second half {sus['second_half_rate']:,.0f}; "
            f"backlog (seconds of input not yet in PostgreSQL) at {backlog}; "
            f"all in PostgreSQL {sus['drain_s']:.1f} s after the last send (lost {sus['lost']:,})"
        )
    if lat:
        print(
            f"\nlatency: {lat['sent']:,} events at {lat['rate']:,.0f}/s, {lat['samples']:,} "
            f"sampled: p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s, p99 {lat['p99']:.2f} s, "
            f"max {lat['max']:.2f} s"
        )
        print(
            f"  of which raw -> canonical topic (worker): p50 {lat['canonical_p50']:.2f} s, "
            f"p95 {lat['canonical_p95']:.2f} s ({lat['canonical_samples']:,} samples seen)"
        )
    print(
        "\n| process | CPU s (throughput phase) | CPU s (sustained phase) | CPU s (whole run) "
        "| peak RSS MB |"
    )
    print("|---|---|---|---|---|")
    for name in res.pids:
        during = f"{sus['cpu'].get(name, 0):.1f}" if sus else "-"
        print(
            f"| {name} | {thr['cpu'].get(name, 0):.1f} | {during} | {res.cpu.get(name, 0):.1f} | "
            f"{res.peak_rss.get(name, 0) / 2**20:.0f} |"
        )
    phases = [("throughput", thr)] + ([("sustained", sus)] if sus else [])
    print(
        f"| all | {sum(thr['cpu'].values()):.1f} | "
        + (f"{sum(sus['cpu'].values()):.1f}" if sus else "-")
        + f" | {sum(res.cpu.values()):.1f} | - |"
    )
    cores = len(os.sched_getaffinity(0))  # the cores this process may use (a container's)
    for label, phase in phases:
        print(cpu_use_line(label, phase["cpu"], phase["cpu_window_s"], cores, phase["expected"]))
    ok_rate = expected / thr["total_s"] >= 20_000 if thr["total_s"] == thr["total_s"] else False
    print(
        f"\ntargets: >= 20,000 events/s raw -> PostgreSQL with nothing lost: "
        f"{'MET' if ok_rate and thr['lost'] == 0 else 'NOT MET'}; "
        + (
            f"p95 event-to-queryable < 10 s: {'MET' if lat['p95'] < 10 else 'NOT MET'}"
            if lat
            else "latency not measured"
        )
    )
    if sus:
        kept_up = sus["lost"] == 0 and sus["backlog_s"][1.0] <= SUSTAIN_MAX_BACKLOG_S
        print(
            f"sustained {sus['valid_rate']:,.0f} valid events/s for {sus['seconds']:.0f} s with "
            f"nothing lost and at most {SUSTAIN_MAX_BACKLOG_S:.0f} s of input behind at the end: "
            f"{'MET' if kept_up else 'NOT MET'}"
        )


def override_config(config: Path, work: Path, assignments: list[str]) -> Path:
    """A copy of ``config`` in ``work`` with ``section.key=value`` assignments applied."""
    import yaml

    tree = yaml.safe_load(config.read_text())
    for assignment in assignments:
        path, _, value = assignment.partition("=")
        *sections, key = path.split(".")
        if not sections or not value:
            raise SystemExit(f"--set {assignment!r}: expected SECTION.KEY=VALUE")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = yaml.safe_load(value)
    derived = work / "hosepipe.yaml"
    derived.write_text(yaml.safe_dump(tree, sort_keys=False))
    return derived


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=300_000, help="raw records, throughput")
    parser.add_argument("--rate", type=float, default=2000, help="events/s, latency phase")
    parser.add_argument("--seconds", type=float, default=30, help="length of the latency phase")
    parser.add_argument("--sample-every", type=int, default=10, help="latency sample: every k-th")
    parser.add_argument("--config", type=Path, default=REPO / "hosepipe.yaml")
    parser.add_argument("--broker-storage", choices=("s3", "memory"), default="s3")
    parser.add_argument(
        "--unkeyed",
        action="store_true",
        help="produce the raw records without keys (default: keyed by event id, as ingest does)",
    )
    parser.add_argument("--sink-max-age", help="override sink.max_age of --config, e.g. 2s")
    parser.add_argument("--follow-interval", help="override selection.follow_interval, e.g. 1s")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any key of --config (YAML value), e.g. streams.batch_size=10000",
    )
    parser.add_argument(
        "--selector-shards",
        type=int,
        default=1,
        help="run n `select --follow --shard i/n` processes instead of one",
    )
    parser.add_argument(
        "--sustain",
        type=float,
        default=0,
        metavar="EVENTS_PER_S",
        help="after the throughput phase, pace the demo mix at this many valid unique "
        "events/s (raw records a little faster) and report whether PostgreSQL keeps up",
    )
    parser.add_argument(
        "--sustain-seconds", type=float, default=120, help="length of the sustained phase"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--late-share",
        type=float,
        help="share of events 2-30 h late (demo default 0.02); each late hour is a lake file",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, data)")
    args = parser.parse_args()
    if args.sustain > 0 and args.sustain_seconds < 5:
        parser.error("--sustain-seconds: at least 5 (the backlog is sampled every second)")
    args.config = args.config.resolve()

    loads = [load_average(), ""]
    work = Path(tempfile.mkdtemp(prefix="hosepipe-bench-e2e-"))
    if args.sink_max_age:
        args.set.append(f"sink.max_age={args.sink_max_age}")
    if args.follow_interval:
        args.set.append(f"selection.follow_interval={args.follow_interval}")
    if args.set:
        args.config = override_config(args.config, work, args.set)
    print(f"work dir {work}; starting S3, broker, PostgreSQL ...", flush=True)
    stack = start_stack(work, args.config, args.broker_storage)
    resources = Resources({})
    sampler = threading.Thread(target=resources.run, daemon=True)
    try:
        print(f"generating {args.events:,} demo records ...", flush=True)
        load = demo_workload(
            stack.pipeline, args.events, args.seed, args.late_share, not args.unkeyed
        )
        # Unkeyed, as in every run before keys: the ceilings stay comparable across runs.
        ceiling: list[tuple[str, bytes | None, bytes]] = [
            (CEILING_TOPIC, None, v) for _, _, v in load.records
        ]
        produce_rate = len(ceiling) / produce_all(stack.settings, ceiling)
        consume_rate = len(ceiling) / consume_all(stack.settings, CEILING_TOPIC, len(ceiling))
        del ceiling
        print(f"ceilings: produce {produce_rate:,.0f}/s, consume {consume_rate:,.0f}/s", flush=True)

        for name in COMPONENTS:
            if name == "select" and args.selector_shards > 1:
                for shard in range(args.selector_shards):
                    stack.start(f"select-{shard}", ("--shard", f"{shard}/{args.selector_shards}"))
            else:
                stack.start(name)
        resources.pids = {
            **{name: p.pid for name, p in stack.children.items()},
            **{name: s.server.pid for name, s in stack.servers.items()},
            BENCH_PROCESS: os.getpid(),
        }
        sampler.start()
        stack.start_broker_trim()
        warm = warm_up(stack, args.seed + 1)
        print(f"warm-up done in {warm[0]:.1f} s; throughput phase ...", flush=True)
        thr = phase_throughput(stack, load, resources)
        print(f"throughput phase done in {thr['total_s']:.1f} s", flush=True)
        sus = None
        if args.sustain > 0:
            # raw records per valid unique event in the mix, from a sample of it
            sample = demo_workload(
                stack.pipeline, 100_000, args.seed + 3, args.late_share, not args.unkeyed
            )
            raw_per_valid = len(sample.records) / sample.expected
            records = int(args.sustain * args.sustain_seconds * raw_per_valid)
            print(f"generating {records:,} records for the sustained phase ...", flush=True)
            sustained = demo_workload(
                stack.pipeline, records, args.seed + 3, args.late_share, not args.unkeyed
            )
            sus = phase_sustained(stack, sustained, args.sustain_seconds, resources)
            del sustained
            print(f"sustained phase done; drain {sus['drain_s']:.1f} s", flush=True)
        print("latency phase ...", flush=True)
        lat = (
            phase_latency(stack, args.rate, args.seconds, args.sample_every, args.seed + 2)
            if args.seconds > 0
            else None
        )
        resources.sample()
        loads[1] = load_average()
        report(
            args, (produce_rate, consume_rate), warm, thr, lat, sus, resources, (loads[0], loads[1])
        )
        for log_file in sorted(work.glob("select*.log")):
            passes, files, rows, busy = selector_passes(log_file)
            print(
                f"{log_file.stem} over the whole run: {passes} passes, {files:,} files, "
                f"{rows:,} events rows, {busy:.1f} s inside passes "
                f"({rows / busy if busy else 0:,.0f} rows/s)"
            )
    finally:
        resources.stop.set()
        stack.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
