"""What the embedded broker's S3 storage costs per producer setting.

Tansu with ``s3://`` storage (the embedded default, so topics survive restarts) turns every
produce request into S3 writes in SeaweedFS. A producer that trickles events therefore keeps
SeaweedFS busy in proportion to how often it sends, not to how much. This starts SeaweedFS and
Tansu on free loopback ports, produces paced 300-byte records to a 4-partition topic for each
``linger.ms`` (idempotent, acks=all, lz4, as hosepipe's producers) and prints the CPU seconds
SeaweedFS and Tansu used, per second of traffic and per record, plus the produce-to-consume
latency a tailing consumer saw.

    python bench/broker_s3.py                          # 2,000 records/s, linger 5/20/100/250 ms
    python bench/broker_s3.py --rate 20000 --seconds 20 --linger 5 100
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hosepipe.localstack.servers import (  # noqa: E402
    BrokerS3Storage,
    free_port,
    start_broker,
    start_s3,
)

PARTITIONS = 4
ACCESS_KEY, SECRET_KEY = "bench", "bench-secret"


@dataclass
class Result:
    linger_ms: int
    records: int
    seconds: float
    s3_cpu: float
    broker_cpu: float
    latencies: list[float]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run_one(
    bootstrap: str, linger_ms: int, rate: int, seconds: float, servers: dict[str, psutil.Process]
) -> Result:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-linger-{linger_ms}-{time.time_ns()}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    latencies: list[float] = []
    stop = threading.Event()
    joined = threading.Event()

    def tail() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": topic,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
            }
        )
        consumer.subscribe([topic], on_assign=lambda *_: joined.set())
        while not stop.is_set():
            for message in consumer.consume(1000, 0.2):
                if message.error() is None and message.value():
                    sent = float(message.value()[:20])
                    latencies.append(time.time() - sent)
        consumer.close()

    reader = threading.Thread(target=tail, daemon=True)
    reader.start()
    joined.wait(30)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": linger_ms,
        }
    )
    before = {name: cpu_seconds(p) for name, p in servers.items()}
    began = time.perf_counter()
    sent = 0
    padding = b"x" * 280
    while (elapsed := time.perf_counter() - began) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            producer.produce(topic, f"{time.time():20.6f}".encode() + padding, str(sent).encode())
            sent += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(30)
    time.sleep(1.0)
    after = {name: cpu_seconds(p) for name, p in servers.items()}
    stop.set()
    reader.join(10)
    return Result(
        linger_ms,
        sent,
        seconds,
        after["s3"] - before["s3"],
        after["broker"] - before["broker"],
        latencies,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="records/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="per linger setting")
    parser.add_argument("--linger", type=int, nargs="+", default=[5, 20, 100, 250])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hosepipe-bench-broker-s3-"))
    s3 = start_s3(work / "s3", free_port(), ACCESS_KEY, SECRET_KEY, ["broker"])
    broker = None
    try:
        broker = start_broker(
            work / "tansu",
            free_port(),
            s3=BrokerS3Storage("broker", s3.endpoint_url, ACCESS_KEY, SECRET_KEY),
        )
        servers = {
            "s3": psutil.Process(s3.server.pid),
            "broker": psutil.Process(broker.server.pid),
        }
        print(
            f"machine={platform.machine()} cpus={os.cpu_count()} "
            f"python={platform.python_version()} "
            f"date={time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
            f"load={' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        print(
            f"{args.rate:,} records/s of 300 B for {args.seconds:.0f} s per setting, "
            f"{PARTITIONS} partitions"
        )
        print(
            "linger ms  S3 CPU % of a core  S3 CPU us/record  broker CPU %  latency p50 ms  p95 ms"
        )
        for linger in args.linger:
            r = run_one(broker.bootstrap, linger, args.rate, args.seconds, servers)
            lat = sorted(r.latencies) or [float("nan")]
            p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
            print(
                f"{r.linger_ms:9d}  {r.s3_cpu / r.seconds * 100:18.0f}  "
                f"{r.s3_cpu / max(r.records, 1) * 1e6:16.0f}  "
                f"{r.broker_cpu / r.seconds * 100:12.0f}  "
                f"{statistics.median(lat) * 1000:14.0f}  {p95 * 1000:6.0f}",
                flush=True,
            )
    finally:
        if broker is not None:
            broker.stop()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
