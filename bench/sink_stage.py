"""Sink benchmark: N canonical events over 48 hours → Parquet lake on the local S3.

Starts its own embedded broker (Tansu, memory) and S3 (SeaweedFS) on free loopback ports,
produces N events (4 partitions) spread over 48 event hours, then in the same run measures:

1. raw consume rate of the topic (plain confluent-kafka loop, no decoding): the ceiling;
2. pyarrow writing the same rows from memory (dicts → Arrow → zstd Parquet per hour → S3);
3. ``hosepipe sink`` as a child process until every offset is committed: MB/s of Parquet,
   peak RSS (sampled with psutil), files per event hour, and three rates, each saying what
   it spans:

   - from process start to the last commit (Python start-up, the group join, everything);
   - from the first consumed record to the last commit (the sink logs ``first records
     consumed`` once it has its partitions; the join is left out, nothing else): the
     figure the 150,000 rows/s target is read against;
   - from the first to the last commit (leaves out the first batch too).

   And the sink's CPU seconds per row (all threads, and its main thread), steadier than
   wall time when the machine is shared. The group join on Tansu takes about half of
   ``session.timeout.ms`` (3 s with the default 6 s), which is why it is reported apart.

    .venv/bin/python bench/sink_stage.py --events 1000000
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import psutil
import yaml

HOUR = 3_600_000_000
T0 = 1_763_791_200_000_000


def events(count: int, hours: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"ev-{n:09d}",
            "source": ("web", "app", "pos")[n % 3],
            "event_type": ("click", "view", "order")[n % 3],
            "occurred_at": T0 + (n * hours * HOUR) // count,
            "ingested_at": T0 + 48 * HOUR,
            "subject": f"user-{n % 5000}",
            "payload": f'{{"n": {n}, "page": "/p/{n % 100}", "amount": {n % 997}.5}}',
            "attributes": {"ingest": "bench", "raw_offset": str(n)},
        }
        for n in range(count)
    ]


def sink_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the sink process so far: all threads, and its main thread."""
    process = psutil.Process(pid)
    cpu = process.cpu_times()
    main = next((t for t in process.threads() if t.id == pid), None)
    return cpu.user + cpu.system, (main.user_time + main.system_time) if main else 0.0


def first_consumed_after(log: Path, started_wall: float) -> float | None:
    """Seconds from process start to the sink's ``first records consumed`` log line."""
    import json
    from datetime import datetime

    for line in log.read_text(errors="replace").splitlines():
        if '"first records consumed"' not in line:
            continue
        try:
            stamp = json.loads(line)["ts"]
        except (ValueError, KeyError):
            continue
        when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return when.timestamp() - started_wall
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hours", type=int, default=48)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    from hosepipe.avro import make_encoder
    from hosepipe.config import PipelineConfig
    from hosepipe.kafka import make_consumer, make_producer
    from hosepipe.lake import (
        events_to_table,
        open_lake_store,
        parquet_bytes,
        partition_path,
    )
    from hosepipe.localstack.servers import free_port, start_broker, start_s3
    from hosepipe.settings import Settings
    from hosepipe.topics import ensure_topics

    work = Path(tempfile.mkdtemp(prefix="hosepipe-bench-sink-"))
    s3 = start_s3(work / "s3", free_port(), "bench", "bench-secret-key", ["lake"])
    broker = start_broker(work / "broker", free_port())
    try:
        pipeline_doc = {
            "topics": {"partitions": args.partitions},
            "sources": {
                "web": {
                    "kind": "push",
                    "mapping": {"event_id": "$.id", "occurred_at": "$.ts", "event_type": "x"},
                }
            },
            "sink": {"max_rows": 100_000, "max_age": "900s", "max_open_partitions": 500},
        }
        config = work / "hosepipe.yaml"
        config.write_text(yaml.safe_dump(pipeline_doc))
        pipeline = PipelineConfig.model_validate(pipeline_doc)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            kafka_bootstrap=f"127.0.0.1:{broker.port}",
            lake_url="s3://lake/bench",
            s3_endpoint_url=s3.endpoint_url,
            s3_access_key_id="bench",
            s3_secret_access_key="bench-secret-key",  # type: ignore[arg-type]
            config_file=config,
        )
        ensure_topics(settings, pipeline)
        topic = pipeline.topics.canonical

        rows = events(args.events, args.hours)
        encoder = make_encoder(settings, topic)
        values = encoder.encode_many(rows)
        avro_bytes = sum(len(v) for v in values)
        producer = make_producer(settings, **{"linger.ms": 20})
        started = time.perf_counter()
        for row, value in zip(rows, values, strict=True):
            while True:
                try:
                    producer.produce(topic, value, row["event_id"].encode())
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(120)
        produce_s = time.perf_counter() - started
        del values

        # 1. raw consume rate (the ceiling)
        consumer = make_consumer(  # the sink's fetch settings (sink/runner.py)
            settings,
            f"bench-raw-{os.getpid()}",
            **{"queued.max.messages.kbytes": 32 * 1024, "fetch.queue.backoff.ms": 20},
        )
        consumer.subscribe([topic])
        seen, first = 0, None
        raw_cpu = time.process_time()
        while seen < args.events:
            batch = consumer.consume(10_000, 1.0)
            if batch and first is None:
                first = time.perf_counter()
            seen += sum(1 for m in batch if m.error() is None)
        raw_s = time.perf_counter() - (first or time.perf_counter())
        raw_cpu = time.process_time() - raw_cpu
        consumer.close()

        # 2. pyarrow from memory: dicts → Arrow → Parquet per hour → S3
        store = open_lake_store(settings.model_copy(update={"lake_url": "s3://lake/pyarrow"}))
        started = time.perf_counter()
        by_hour: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_hour.setdefault(partition_path(row), []).append(row)
        pyarrow_bytes = 0
        for directory, hour_rows in by_hour.items():
            data = parquet_bytes(events_to_table(hour_rows))
            pyarrow_bytes += len(data)
            store.put(f"{directory}/mem.parquet", data)
        pyarrow_s = time.perf_counter() - started
        del by_hour, rows

        # 3. the sink as a process
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOSEPIPE_")}
        env.update(
            HOSEPIPE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
            HOSEPIPE_LAKE_URL=settings.lake_url,
            HOSEPIPE_S3_ENDPOINT_URL=s3.endpoint_url,
            HOSEPIPE_S3_ACCESS_KEY_ID="bench",
            HOSEPIPE_S3_SECRET_ACCESS_KEY="bench-secret-key",
            HOSEPIPE_CONFIG_FILE=str(config),
            HOSEPIPE_LOG_LEVEL="INFO",
            HOSEPIPE_LOG_FORMAT="json",
        )
        sink_log = work / "sink.log"
        started_wall = time.time()
        started = time.perf_counter()
        with sink_log.open("wb") as log_handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "hosepipe", "sink"],
                env=env,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
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
                time.sleep(0.1)

        threading.Thread(target=sample, daemon=True).start()
        from confluent_kafka import TopicPartition

        watcher = make_consumer(settings, pipeline.sink.consumer_group)
        parts = [TopicPartition(topic, p) for p in range(args.partitions)]
        first_commit, first_committed = None, 0
        cpu_at_first_commit = (0.0, 0.0)
        while True:
            committed = sum(max(0, tp.offset) for tp in watcher.committed(parts, timeout=10))
            if committed and first_commit is None:
                first_commit, first_committed = time.perf_counter(), committed
                cpu_at_first_commit = sink_cpu(process.pid)
            if committed >= args.events:
                break
            if process.poll() is not None:
                raise SystemExit(f"sink exited with {process.returncode}: {sink_log.read_text()}")
            time.sleep(0.05)
        finished = time.perf_counter()
        sink_s = finished - started
        first_record_s = first_consumed_after(sink_log, started_wall)
        # CPU seconds are steadier than wall time on a shared machine
        sink_cpu_s, main_cpu_s = sink_cpu(process.pid)
        steady_rows = args.events - first_committed
        steady_cpu_s = sink_cpu_s - cpu_at_first_commit[0]
        steady_main_s = main_cpu_s - cpu_at_first_commit[1]
        steady = (args.events - first_committed) / max(1e-9, finished - (first_commit or started))
        watcher.close()
        done.set()
        process.terminate()
        process.wait(30)
        sink_store = open_lake_store(settings)
        keys = sink_store.list()
        client: Any = sink_store.client  # type: ignore[attr-defined]
        lake_bytes = 0
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket="lake", Prefix="bench/"
        ):
            lake_bytes += sum(item["Size"] for item in page.get("Contents", []))
        hours = {k.rsplit("/", 1)[0] for k in keys}
    finally:
        broker.stop()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)

    mb = 1024 * 1024
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"events: {args.events:,} over {args.hours} h, {args.partitions} partitions, "
        f"Avro {avro_bytes / mb:.1f} MB (produced at {args.events / produce_s:,.0f}/s)"
    )
    print(
        f"raw consume (ceiling):   {args.events / raw_s:>10,.0f} rows/s  "
        f"CPU {raw_cpu / args.events * 1e6:.1f} µs per row (all threads)"
    )
    print(
        f"pyarrow from memory:     {args.events / pyarrow_s:>10,.0f} rows/s  "
        f"{pyarrow_bytes / mb / pyarrow_s:6.1f} MB/s Parquet"
    )
    print(
        f"hosepipe sink:           {args.events / sink_s:>10,.0f} rows/s  "
        f"{lake_bytes / mb / sink_s:6.1f} MB/s Parquet "
        f"({avro_bytes / mb / sink_s:.1f} MB/s Avro in), "
        f"{sink_s:.1f} s, from process start to last commit"
    )
    if first_record_s is not None:
        print(
            f"  from first consumed record to last commit: "
            f"{args.events / (sink_s - first_record_s):>10,.0f} rows/s "
            f"(first record {first_record_s:.1f} s after process start: start-up + group join)"
        )
    print(f"  from first to last commit:                 {steady:>10,.0f} rows/s")
    print(
        f"  CPU from first to last commit: {steady_cpu_s / steady_rows * 1e6:.2f} µs per row "
        f"(all threads), {steady_main_s / steady_rows * 1e6:.2f} µs per row (main thread)"
    )
    print(
        f"  CPU from process start: {sink_cpu_s:.1f} s ({sink_cpu_s / args.events * 1e6:.1f} µs "
        f"per row incl. start-up), main thread {main_cpu_s:.1f} s; "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"  peak RSS {peak[0] / mb:.0f} MB, {len(keys)} files in {len(hours)} hour dirs "
        f"({len(keys) / max(1, len(hours)):.1f} files per hour), lake {lake_bytes / mb:.1f} MB"
    )


if __name__ == "__main__":
    main()
