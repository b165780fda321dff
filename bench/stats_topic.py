"""How long `hosepipe stats` takes on a stats topic of N snapshots, before and after the
embedded broker's trim compacts it.

Starts SeaweedFS and Tansu with ``s3://`` storage (the embedded default) on free loopback
ports; for each N, writes N worker snapshots to a fresh stats topic one batch each (as a
busy worker does, one every 2 s: a day is ~43,000), times :func:`streams.stats.read_totals`
(what `hosepipe stats` runs) with the S3 server's CPU, runs one trim pass as if the
snapshots were old enough, and times the read again. Tansu lists every batch object of the
partition on each fetch, so the read grows faster than N (hosepipe/localstack/broker_trim.py).

    .venv/bin/python bench/stats_topic.py --snapshots 2000,10000
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil

BUCKET = "tansu"
KEY, SECRET = "bench", "bench-secret-key"


def cpu_seconds(pid: int) -> float:
    process = psutil.Process(pid)
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        times = member.cpu_times()
        total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshots", default="2000,10000", help="comma-separated N")
    parser.add_argument("--workers", type=int, default=3, help="instances the snapshots cycle over")
    args = parser.parse_args()

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from hosepipe.localstack.broker_trim import SNAPSHOT_KEEP_S, TIME_ONLY_CHECK_S, BrokerTrimmer
    from hosepipe.localstack.servers import BrokerS3Storage, free_port, start_broker, start_s3
    from hosepipe.settings import Settings
    from streams.metrics import STATS_TOPIC_CONFIG, stats_topic
    from streams.stats import read_totals

    cores, python = psutil.cpu_count(), platform.python_version()
    print(f"machine: {platform.machine()}, {cores} cores, Python {python}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory(prefix="hp-stats-") as work_dir:
        work = Path(work_dir)
        s3 = start_s3(work / "s3", free_port(), KEY, SECRET, [BUCKET])
        try:
            storage = BrokerS3Storage(BUCKET, s3.endpoint_url, KEY, SECRET)
            broker = start_broker(work / "broker", free_port(), s3=storage)
            try:
                settings = Settings(
                    _env_file=None,  # type: ignore[call-arg]
                    kafka_bootstrap=broker.bootstrap,
                )
                admin = AdminClient({"bootstrap.servers": broker.bootstrap})
                s3_client = s3.client()
                print(
                    "| snapshots | write | read before, s | S3 CPU s | objects deleted"
                    " | read after, s | S3 CPU s | totals equal |"
                )
                print("|---|---|---|---|---|---|---|---|")
                for index, n in enumerate(int(x) for x in args.snapshots.split(",")):
                    group = f"bench{index}"
                    topic = stats_topic(group)
                    admin.create_topics([NewTopic(topic, 1, 1, config=STATS_TOPIC_CONFIG)])[
                        topic
                    ].result(30)
                    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
                    began = time.perf_counter()
                    for seq in range(1, n + 1):
                        worker = f"w{seq % args.workers}"
                        value = {"worker": worker, "seq": seq, "sources": {"s": {"received": seq}}}
                        producer.produce(topic, orjson.dumps(value), worker.encode(), partition=0)
                        producer.flush(10)  # one batch, one S3 object, per snapshot
                    wrote_s = time.perf_counter() - began

                    def timed_read(group: str = group) -> tuple[float, float, dict[str, object]]:
                        cpu, began = cpu_seconds(s3.server.process.pid), time.perf_counter()
                        totals = read_totals(settings, group)
                        return (
                            time.perf_counter() - began,
                            cpu_seconds(s3.server.process.pid) - cpu,
                            {k: v.received for k, v in totals.items()},
                        )

                    before_s, before_cpu, before = timed_read()
                    trimmer = BrokerTrimmer(
                        settings,
                        s3_client,
                        BUCKET,
                        data_topics=[],
                        file_log="-",
                        snapshot_topics=[topic],
                    )
                    later = time.time() + SNAPSHOT_KEEP_S + TIME_ONLY_CHECK_S + 1
                    deleted = trimmer.trim_once(now=later).deleted.get(topic, 0)
                    after_s, after_cpu, after = timed_read()
                    print(
                        f"| {n:,} | {wrote_s:.1f} s | {before_s:.1f} | {before_cpu:.1f} | "
                        f"{deleted:,} | {after_s:.2f} | {after_cpu:.2f} | {before == after} |"
                    )
            finally:
                broker.stop()
        finally:
            s3.stop()


if __name__ == "__main__":
    main()
