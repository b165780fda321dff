"""Embedded stack: time until `hosepipe up` is ready, and broker produce/consume rate.

For each broker storage (s3, memory): start the stack twice on the same data directory
(first start initialises PostgreSQL and S3; the second reuses them), servers + topics only,
then produce N records of 300 B into a 6-partition topic and consume them back.

    python bench/localstack_stack.py [--records 300000]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from hosepipe.localstack.servers import free_port
from hosepipe.localstack.supervisor import run_stack
from hosepipe.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def start(settings: Settings) -> tuple[threading.Thread, threading.Event, float]:
    stop = threading.Event()
    ready = threading.Event()
    began = time.monotonic()
    thread = threading.Thread(
        target=run_stack,
        args=(settings, REPO / "hosepipe.yaml"),
        kwargs={"components": [], "stop": stop, "on_ready": lambda _rows: ready.set()},
    )
    thread.start()
    if not ready.wait(120):
        stop.set()
        raise SystemExit("stack not ready in 120 s")
    return thread, stop, time.monotonic() - began


def throughput(bootstrap: str, records: int) -> tuple[float, float]:
    topic = f"bench_{time.time_ns()}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(10)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000, "acks": "all"}
    )
    value = b"x" * 300
    began = time.monotonic()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, value=value, key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    produce_rate = records / (time.monotonic() - began)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    first_batch_at: float | None = None
    deadline = time.monotonic() + 300
    while seen < records and time.monotonic() < deadline:
        batch = consumer.consume(10_000, 1.0)
        if batch and first_batch_at is None:
            first_batch_at = time.monotonic()
        seen += sum(1 for m in batch if not m.error())
    consumer.close()
    consume_rate = seen / (time.monotonic() - (first_batch_at or time.monotonic()))
    return produce_rate, consume_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=300_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for storage in ("s3", "memory"):
        data_dir = Path(tempfile.mkdtemp(prefix=f"hosepipe-bench-{storage}-"))
        try:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                data_dir=data_dir,
                broker_port=free_port(),
                s3_port=free_port(),
                postgres_port=free_port(),
                embedded_broker_storage=storage,  # type: ignore[arg-type]
            )
            times = []
            for _ in range(2):
                thread, stop, seconds = start(settings)
                times.append(seconds)
                if len(times) == 2:
                    bootstrap = f"127.0.0.1:{settings.broker_port}"
                    produce, consume = throughput(bootstrap, args.records)
                stop.set()
                thread.join(60)
            print(
                f"storage={storage:6} ready first={times[0]:.2f}s again={times[1]:.2f}s "
                f"produce={produce:,.0f} msg/s consume={consume:,.0f} msg/s "
                f"({args.records:,} x 300 B, 6 partitions)"
            )
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
