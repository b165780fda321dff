"""The embedded broker's trim against a real Tansu keeping its topics in a real SeaweedFS.

Every test produces one batch per record (so each record is one S3 object), lets consumer
groups commit, runs one pass and checks both the bucket and what consumers can still read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from hosepipe.localstack.broker_trim import TIME_ONLY_CHECK_S, BrokerTrimmer, group_by_partition
from hosepipe.settings import Settings
from tests.conftest import S3Endpoint


@pytest.fixture
def trim_kit(
    s3_broker: tuple[str, str], s3_server: S3Endpoint, unique_name: Callable[..., str]
) -> TrimKit:
    bootstrap, bucket = s3_broker
    return TrimKit(bootstrap, bucket, s3_server.client(), unique_name)


class TrimKit:
    def __init__(self, bootstrap: str, bucket: str, s3: Any, name: Callable[..., str]) -> None:
        self.bootstrap = bootstrap
        self.bucket = bucket
        self.s3 = s3
        self.name = name

    def settings(self, keep: float = 0.0) -> Settings:
        return Settings(
            _env_file=None,  # type: ignore[call-arg]
            kafka_bootstrap=self.bootstrap,
            embedded_broker_keep=keep,
        )

    def trimmer(
        self,
        data_topics: list[str],
        file_log: str = "no-file-log",
        keep: float = 0.0,
        required_groups: dict[str, str] | None = None,
        snapshot_topics: tuple[str, ...] = (),
    ) -> BrokerTrimmer:
        return BrokerTrimmer(
            self.settings(keep),
            self.s3,
            self.bucket,
            data_topics=data_topics,
            file_log=file_log,
            required_groups=required_groups,
            snapshot_topics=snapshot_topics,
        )

    def topic(self, prefix: str, **configs: str) -> str:
        from confluent_kafka.admin import AdminClient, NewTopic

        topic = self.name(prefix)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        config = {"retention.ms": "604800000", "retention.bytes": "-1", **configs}
        admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(30)
        return topic

    def produce(self, topic: str, values: range) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 0})
        for value in values:
            producer.produce(topic, str(value).encode(), partition=0)
            producer.flush(10)  # one batch, so one object, per record

    def commit(self, group: str, topic: str, offset: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        try:
            consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        finally:
            consumer.close()

    def read(self, topic: str, group: str, start: int | None = None) -> list[int]:
        """Every value from ``start`` (None: earliest) to the end, as a new consumer sees it."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            }
        )
        values: list[int] = []
        try:
            offset = OFFSET_BEGINNING if start is None else start
            consumer.assign([TopicPartition(topic, 0, offset)])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error() is not None:
                    if message.error().code() == -191:  # _PARTITION_EOF
                        return values
                    continue
                values.append(int(message.value()))
            raise AssertionError(f"no end of {topic} in 30 s; read {values}")
        finally:
            consumer.close()

    def offsets(self, topic: str) -> list[int]:
        listing = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            listing += [(o["Key"], o["LastModified"].timestamp()) for o in page.get("Contents", [])]
        return sorted(o.offset for o in group_by_partition(listing).get((topic, 0), []))


def test_consumed_records_go_only_below_every_group(trim_kit: TrimKit) -> None:
    raw = trim_kit.topic("raw")
    trim_kit.produce(raw, range(30))
    assert trim_kit.offsets(raw) == list(range(30))
    trim_kit.commit("worker-" + raw, raw, 20)
    trim_kit.commit("yours-" + raw, raw, 12)  # a slower group holds the trim back

    report = trim_kit.trimmer([raw]).trim_once()

    assert report.deleted.get(raw) == 12
    assert trim_kit.offsets(raw) == list(range(12, 30))
    # both groups still read everything from where they are; a new group starts at 12
    assert trim_kit.read(raw, "worker-" + raw, start=20) == list(range(20, 30))
    assert trim_kit.read(raw, "yours-" + raw, start=12) == list(range(12, 30))
    assert trim_kit.read(raw, trim_kit.name("new")) == list(range(12, 30))
    # the broker keeps taking and serving records after the trim
    trim_kit.produce(raw, range(30, 33))
    assert trim_kit.read(raw, "worker-" + raw, start=20) == list(range(20, 33))


def test_consumed_records_stay_for_the_keep_horizon(trim_kit: TrimKit) -> None:
    raw = trim_kit.topic("raw")
    trim_kit.produce(raw, range(5))
    trim_kit.commit("worker-" + raw, raw, 5)

    assert trim_kit.trimmer([raw], keep=3600).trim_once().deleted.get(raw) is None
    assert trim_kit.offsets(raw) == list(range(5))
    # an hour later they may go (all but the last object)
    later = time.time() + 3601
    assert trim_kit.trimmer([raw], keep=3600).trim_once(now=later).deleted.get(raw) == 4


def test_without_a_commit_or_outside_the_data_topics_only_retention_counts(
    trim_kit: TrimKit,
) -> None:
    # a data topic is never trimmed by time, even past a short retention.ms
    uncommitted = trim_kit.topic("raw", **{"retention.ms": "60000"})
    other = trim_kit.topic("changelog", **{"retention.ms": "60000"})
    for topic in (uncommitted, other):
        trim_kit.produce(topic, range(4))
    trim_kit.commit("worker-" + other, other, 4)  # not a data topic: the commit is ignored

    report = trim_kit.trimmer([uncommitted]).trim_once()
    assert report.deleted.get(uncommitted) is None and report.deleted.get(other) is None
    a_minute_later = time.time() + 61
    report = trim_kit.trimmer([uncommitted]).trim_once(now=a_minute_later)
    assert report.deleted.get(other) == 3  # its retention.ms
    assert report.deleted.get(uncommitted) is None
    assert trim_kit.offsets(uncommitted) == list(range(4))
    assert trim_kit.read(other, trim_kit.name("new")) == [3]


def test_compacted_and_forever_topics_are_never_trimmed(trim_kit: TrimKit) -> None:
    """Compaction wins even on a data topic; retention.ms=-1 keeps any other topic."""
    compacted = trim_kit.topic("cursors", **{"cleanup.policy": "compact"})
    forever = trim_kit.topic("stats", **{"retention.ms": "-1"})
    for topic in (compacted, forever):
        trim_kit.produce(topic, range(3))
        trim_kit.commit("g-" + topic, topic, 3)

    next_year = time.time() + 366 * 86_400
    report = trim_kit.trimmer([compacted]).trim_once(now=next_year)
    assert report.deleted.get(compacted) is None and report.deleted.get(forever) is None
    assert trim_kit.offsets(compacted) == trim_kit.offsets(forever) == [0, 1, 2]


def test_the_file_log_keeps_only_the_horizon(trim_kit: TrimKit) -> None:
    file_log = trim_kit.topic("lake-files")
    trim_kit.produce(file_log, range(6))
    trimmer = trim_kit.trimmer([], file_log=file_log, keep=60)  # at least an hour for it

    assert trimmer.trim_once(now=time.time() + 61).deleted.get(file_log) is None
    assert trimmer.trim_once(now=time.time() + 3601).deleted.get(file_log) == 5
    assert trim_kit.read(file_log, trim_kit.name("selector")) == [5]


def test_a_selector_behind_a_trimmed_file_log_lists_the_lake_once(trim_kit: TrimKit) -> None:
    """Tansu fetches past removed records without an "out of range" answer: the reader must
    see the gap itself, or the files announced in it would wait for the hourly rescan."""
    from confluent_kafka import Producer

    from hosepipe.file_log import LandedFile, encode_landed
    from selector.filelog import FileLogReader

    file_log = trim_kit.topic("lake-files")
    producer = Producer({"bootstrap.servers": trim_kit.bootstrap, "linger.ms": 0})
    for i in range(6):
        announcement = encode_landed("events.canonical", {0: i}, [LandedFile(f"f{i}", 1, 0)])
        producer.produce(file_log, announcement, partition=0)
        producer.flush(10)
    trimmer = trim_kit.trimmer([], file_log=file_log)
    assert trimmer.trim_once(now=time.time() + 3601).deleted.get(file_log) == 5

    reader = FileLogReader(trim_kit.settings(), file_log)
    try:
        assert reader.read({0: 1}) is None  # its position lies in the removed records
        caught_up = reader.read({0: 5})
        assert caught_up is not None
        assert [f.path for f in caught_up.files] == ["f5"]
        assert caught_up.positions == {0: 6}
    finally:
        reader.close()


def test_topics_trimmed_by_time_only_are_checked_every_five_minutes(trim_kit: TrimKit) -> None:
    dlq = trim_kit.topic("dlq", **{"retention.ms": "60000"})
    trim_kit.produce(dlq, range(3))
    trimmer = trim_kit.trimmer([])
    began = time.time()

    assert trimmer.trim_once(now=began).deleted.get(dlq) is None  # listed: nothing expired
    assert trimmer.trim_once(now=began + 61).deleted.get(dlq) is None  # expired, not listed
    assert trimmer.trim_once(now=began + 301).deleted.get(dlq) == 2


def test_a_group_of_yours_cannot_trim_what_the_sink_has_not_read(trim_kit: TrimKit) -> None:
    canonical = trim_kit.topic("canonical")
    trim_kit.produce(canonical, range(10))
    trim_kit.commit("yours-" + canonical, canonical, 10)
    sink = "sink-" + canonical
    trimmer = trim_kit.trimmer([canonical], required_groups={canonical: sink})

    assert trimmer.trim_once().deleted.get(canonical) is None  # the sink never committed
    trim_kit.commit(sink, canonical, 4)
    assert trimmer.trim_once().deleted.get(canonical) == 4
    assert trim_kit.read(canonical, sink, start=4) == list(range(4, 10))


def test_reading_a_trimmed_topic_from_the_start_yields_each_record_once(
    trim_kit: TrimKit,
) -> None:
    """``hosepipe dlq list`` and ``hosepipe stats`` read from the beginning: after a trim they
    start at the oldest kept record and see each record once."""
    from streams.dlq import read_topic

    dlq = trim_kit.topic("dlq", **{"retention.ms": "60000"})
    trim_kit.produce(dlq, range(8))
    assert trim_kit.trimmer([]).trim_once(now=time.time() + 61).deleted.get(dlq) == 7

    entries = list(read_topic(trim_kit.settings(), dlq))
    assert [(e.offset, int(e.value)) for e in entries] == [(7, 7)]


def test_the_stats_topic_is_compacted_to_every_instance_s_latest_snapshot(
    trim_kit: TrimKit,
) -> None:
    """A stats topic keeps growing by a snapshot per change and busy worker. The trim
    deletes its old objects once there are enough of them, after appending again the winning
    snapshot of each instance that lies among them: ``hosepipe stats`` adds up the same
    totals before and after, including an instance that stopped long ago."""
    from confluent_kafka import Producer

    from hosepipe.localstack.broker_trim import SNAPSHOT_COMPACT_MIN, SNAPSHOT_KEEP_S
    from streams.dlq import read_topic
    from streams.metrics import STATS_TOPIC_CONFIG, latest_snapshots, merge_snapshots

    stats = trim_kit.topic("stats", **STATS_TOPIC_CONFIG)
    producer = Producer({"bootstrap.servers": trim_kit.bootstrap, "linger.ms": 0})

    def publish(worker: str, seq: int) -> None:
        value = {"worker": worker, "seq": seq, "sources": {"orders": {"received": seq}}}
        producer.produce(stats, orjson.dumps(value), worker.encode(), partition=0)
        producer.flush(10)  # one object per snapshot, as a worker's every 2 s

    for seq in (1, 2, 3):
        publish("gone", seq)  # an instance that stopped: its last word is old
    busy = SNAPSHOT_COMPACT_MIN + 5
    for seq in range(1, busy + 1):
        publish("busy", seq)

    def snapshots() -> list[tuple[int, bytes | None]]:
        return [(e.offset, e.value) for e in read_topic(trim_kit.settings(), stats)]

    before = merge_snapshots(value or b"" for _, value in snapshots())
    assert before["orders"].received == 3 + busy
    trimmer = trim_kit.trimmer([], snapshot_topics=(stats,))

    assert trimmer.trim_once().deleted.get(stats) is None  # nothing is old enough yet
    later = time.time() + SNAPSHOT_KEEP_S + 1
    report = trimmer.trim_once(now=later + TIME_ONLY_CHECK_S)
    assert report.deleted.get(stats) == 3 + busy - 1  # all but the last object

    after = snapshots()
    assert merge_snapshots(value or b"" for _, value in after) == before
    winners = latest_snapshots(after)
    assert winners["gone"].seq == 3 and winners["busy"].seq == busy
    # the copy of "gone" went after the kept object, the busy winner stayed where it was
    assert [offset for offset, _ in after] == [3 + busy - 1, 3 + busy]
    assert trim_kit.offsets(stats) == [3 + busy - 1, 3 + busy]

    publish("busy", busy + 1)  # the instance goes on; its newer snapshot wins
    assert merge_snapshots(v or b"" for _, v in snapshots())["orders"].received == 3 + busy + 1
    # fewer old objects than the minimum: the next pass leaves the topic alone
    assert trimmer.trim_once(now=later + 3 * TIME_ONLY_CHECK_S).deleted.get(stats) is None


def test_the_pipeline_s_trimmer_compacts_its_worker_group_s_stats_topic(
    trim_kit: TrimKit,
) -> None:
    from pathlib import Path

    from hosepipe.config import load_pipeline
    from streams.metrics import stats_topic

    pipeline = load_pipeline(Path(__file__).parents[2] / "hosepipe.yaml")
    trimmer = BrokerTrimmer.for_pipeline(trim_kit.settings(), pipeline, trim_kit.s3, "b")
    assert trimmer.snapshot_topics == {stats_topic(pipeline.streams.consumer_group)}


def test_stats_read_to_the_end_on_a_broker_in_s3(trim_kit: TrimKit) -> None:
    """``hosepipe stats`` reads to partition-EOF: Tansu with S3 storage answers ListOffsets
    with a mark that trails the records just written (1 for 5 records), and a read that
    stopped there showed an old snapshot's totals."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from streams.metrics import STATS_TOPIC_CONFIG, stats_topic
    from streams.stats import read_totals

    group = trim_kit.name("workers")
    topic = stats_topic(group)
    admin = AdminClient({"bootstrap.servers": trim_kit.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=STATS_TOPIC_CONFIG)])[topic].result(30)
    producer = Producer({"bootstrap.servers": trim_kit.bootstrap, "linger.ms": 0})
    for seq in range(1, 31):
        value = {"worker": "w1", "seq": seq, "sources": {"orders": {"received": seq}}}
        producer.produce(topic, orjson.dumps(value), b"w1", partition=0)
        producer.flush(10)
    assert read_totals(trim_kit.settings(), group)["orders"].received == 30


def test_a_failed_stats_compaction_leaves_the_other_topics_trimmed(
    trim_kit: TrimKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hosepipe.localstack.broker_trim import BrokerTrimError

    raw, stats = trim_kit.topic("raw"), trim_kit.topic("stats", **{"cleanup.policy": "compact"})
    trim_kit.produce(raw, range(5))
    trim_kit.produce(stats, range(3))
    trim_kit.commit("workers", raw, 5)
    trimmer = trim_kit.trimmer([raw], snapshot_topics=(stats,))

    def broken(*_args: Any) -> list[Any]:
        raise BrokerTrimError("reading the stats topic timed out")

    monkeypatch.setattr(trimmer, "_compact_snapshots", broken)
    report = trimmer.trim_once()
    assert report.deleted.get(raw) == 4 and report.deleted.get(stats) is None
    assert trim_kit.offsets(stats) == [0, 1, 2]
