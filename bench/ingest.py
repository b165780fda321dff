"""Ingest benchmark: boto3 Firehose clients → one `hosepipe ingest` process → Kafka.

Starts its own Tansu broker (memory) on a free loopback port unless --bootstrap is given,
runs `python -m hosepipe ingest` as a child process with SigV4 verification on, then in the
same run measures:

1. the raw confluent-kafka producer rate of the same records to the same topic (the ceiling);
2. N client threads, each an unmodified boto3 `firehose` client, doing PutRecordBatch of
   500 x 300-byte records for --seconds: records/s, MB/s, p50/p99 batch latency.

    .venv/bin/python bench/ingest.py --concurrency 8 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

ACCESS_KEY = "AKIDBENCHMARK"
SECRET_KEY = "bench-secret-key"


def record(n: int, size: int) -> bytes:
    head = f'{{"id": "r{n:012d}", "ts": {1_763_791_200_000 + n}, "pad": "'.encode()
    return head + b"x" * (size - len(head) - 3) + b'"}\n'


def raw_producer_rate(bootstrap: str, topic: str, payloads: list[bytes], total: int) -> float:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
    )
    started = time.perf_counter()
    for n in range(total):
        while True:
            try:
                producer.produce(topic, payloads[n % len(payloads)], f"r{n}".encode())
                break
            except BufferError:
                producer.poll(0.01)
        if n % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", help="Use this broker instead of starting Tansu.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--record-bytes", type=int, default=300)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    import boto3
    from botocore.config import Config

    from hosepipe.localstack.servers import free_port, start_broker

    workdir = Path(tempfile.mkdtemp(prefix="hosepipe-bench-ingest-"))
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = start_broker(workdir / "broker", free_port())
        bootstrap = broker.bootstrap
    port = free_port()
    pipeline = {
        "version": 1,
        "topics": {"partitions": args.partitions},
        "sources": {
            "bench": {
                "kind": "push",
                "key_path": "$.id",
                "mapping": {
                    "event_id": "$.id",
                    "occurred_at": {"path": "$.ts", "format": "epoch_ms"},
                    "event_type": {"const": "bench"},
                },
            },
        },
        "ingest": {
            "auth": True,
            "firehose_keys": [{"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}],
        },
    }
    config = workdir / "hosepipe.yaml"
    config.write_text(yaml.safe_dump(pipeline))
    env = {
        **os.environ,
        "HOSEPIPE_CONFIG_FILE": str(config),
        "HOSEPIPE_KAFKA_BOOTSTRAP": bootstrap,
        "HOSEPIPE_INGEST_PORT": str(port),
        "HOSEPIPE_BIND_HOST": "127.0.0.1",
        "HOSEPIPE_LOG_LEVEL": "WARNING",
    }
    ingest = subprocess.Popen([sys.executable, "-m", "hosepipe", "ingest"], env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if ingest.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("ingest did not start")
            time.sleep(0.1)

        payloads = [record(n, args.record_bytes) for n in range(args.batch * 4)]
        ceiling_records = 300_000
        ceiling = raw_producer_rate(bootstrap, "raw.bench", payloads, ceiling_records)

        latencies: list[float] = []
        counts = [0] * args.concurrency
        failures = [0] * args.concurrency
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def client_loop(index: int) -> None:
            client = boto3.client(
                "firehose",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=Config(
                    retries={"max_attempts": 10, "mode": "standard"}, max_pool_connections=2
                ),
            )
            n = 0
            while time.monotonic() < stop_at:
                batch: list[Any] = [
                    {"Data": payloads[(n + i) % len(payloads)]} for i in range(args.batch)
                ]
                started = time.perf_counter()
                answer = client.put_record_batch(DeliveryStreamName="bench", Records=batch)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                counts[index] += args.batch - answer["FailedPutCount"]
                failures[index] += answer["FailedPutCount"]
                n += args.batch

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.concurrency)]
        server = psutil.Process(ingest.pid)
        server_cpu_before = sum(server.cpu_times()[:2])
        me = psutil.Process()
        client_cpu_before = sum(me.cpu_times()[:2])
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        server_cpu = sum(server.cpu_times()[:2]) - server_cpu_before
        client_cpu = sum(me.cpu_times()[:2]) - client_cpu_before
        total = sum(counts)
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        python = platform.python_version()
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {python}")
        print(f"broker: {'Tansu (memory)' if broker else bootstrap}, {args.partitions} partitions")
        print(
            f"raw confluent-kafka producer (ceiling): {ceiling:,.0f} records/s "
            f"({ceiling * args.record_bytes / 1e6:.1f} MB/s)"
        )
        print(
            f"boto3 Firehose PutRecordBatch {args.batch} x {args.record_bytes} B, "
            f"concurrency {args.concurrency}, {wall:.1f} s: {total / wall:,.0f} records/s, "
            f"{total * args.record_bytes / wall / 1e6:.1f} MB/s, {len(latencies)} batches, "
            f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, failed records {sum(failures)}"
        )
        print(
            f"CPU during the run: ingest process {server_cpu:.1f} s "
            f"({server_cpu / max(total, 1) * 1e6:.1f} us/record), boto3 clients {client_cpu:.1f} s "
            f"({client_cpu / max(total, 1) * 1e6:.1f} us/record); load average "
            f"{os.getloadavg()[0]:.1f}"
        )
    finally:
        ingest.terminate()
        try:
            ingest.wait(30)
        except subprocess.TimeoutExpired:
            ingest.kill()
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
