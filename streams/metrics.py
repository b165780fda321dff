"""Per-source counters: Prometheus metrics and snapshots for ``hosepipe stats``.

A worker keeps running totals per source (:class:`StageCounters`). After every committed batch
they go to Prometheus (``hosepipe_streams_records_total{source, outcome}``) and, at most every
few seconds and at shutdown *when they changed*, as a JSON snapshot keyed by the worker's
instance id to the stats topic; ``hosepipe stats`` adds up the latest snapshot of every
worker instance that ever ran. Each snapshot carries a sequence number of its instance, and
the highest wins (:func:`latest_snapshots`), not the last in the topic: the embedded
broker's trim compacts the topic by appending copies of old snapshots again
(``hosepipe/localstack/broker_trim.py``), and such a copy must never hide a newer one.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any, NamedTuple

import orjson
from prometheus_client import Counter, Gauge

from streams.core import SourceCounts

OUTCOMES = ("received", "out", "duplicates", "dropped", "dead_lettered")
# Compacted: Kafka keeps the latest snapshot per worker instance, which is all that
# `hosepipe stats` reads; with retention alone the topic would grow by a record every few
# seconds per busy worker, forever, and `hosepipe stats` reads it whole.
STATS_TOPIC_CONFIG = {"cleanup.policy": "compact"}
# An unchanged snapshot is still published this often: a snapshot lost in delivery (a broker
# restart) is then repaired within minutes also for a worker whose counts stay put.
STATS_HEARTBEAT_S = 300.0


def stats_topic(group: str) -> str:
    """Topic of the workers' counter snapshots for consumer group ``group``."""
    return f"{group}.stats"


def instance_id() -> str:
    """A unique id of this worker process (host name + random suffix)."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"


class StageCounters:
    """Running per-source totals of one worker process, mirrored to Prometheus."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY

        registry = registry if registry is not None else REGISTRY
        self.totals: dict[str, SourceCounts] = {}
        self._records = _get_or_make(
            registry,
            "hosepipe_streams_records",
            lambda: Counter(
                "hosepipe_streams_records",
                "Records handled by the stream stage, by source and outcome "
                "(received = out + duplicates + dropped + dead_lettered).",
                ["source", "outcome"],
                registry=registry,
            ),
        )
        self._lag = _get_or_make(
            registry,
            "hosepipe_streams_consumer_lag",
            lambda: Gauge(
                "hosepipe_streams_consumer_lag",
                "Messages behind the high-water mark, by raw topic partition.",
                ["topic", "partition"],
                registry=registry,
            ),
        )
        self.lag: dict[tuple[str, int], int] = {}
        self._seq = 0
        self._published: tuple[dict[str, Any], dict[str, int]] | None = None
        self._published_at = 0.0  # time.monotonic()

    def add(self, counts: Mapping[str, SourceCounts]) -> None:
        for source, delta in counts.items():
            total = self.totals.setdefault(source, SourceCounts())
            total.add(delta)
            for outcome in OUTCOMES:
                value = getattr(delta, outcome)
                if value:
                    self._records.labels(source, outcome).inc(value)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag[(topic, partition)] = lag
        self._lag.labels(topic, str(partition)).set(lag)

    def snapshot_if_changed(self, worker: str, now: float | None = None) -> bytes | None:
        """The next snapshot of ``worker`` to publish, or None when its totals and lag are
        what the last one said less than ``STATS_HEARTBEAT_S`` ago (an idle worker would
        otherwise add a record every few seconds, forever). ``now``: ``time.monotonic()``."""
        moment = time.monotonic() if now is None else now
        sources = {s: asdict(c) for s, c in self.totals.items()}
        lag = {f"{t}:{p}": n for (t, p), n in self.lag.items()}
        if self._published == (sources, lag) and moment - self._published_at < STATS_HEARTBEAT_S:
            return None
        self._published = (sources, lag)
        self._published_at = moment
        self._seq += 1
        return orjson.dumps(
            {
                "worker": worker,
                "seq": self._seq,
                "updated_at": time.time(),
                "sources": sources,
                "lag": lag,
            }
        )


def _get_or_make(registry: Any, name: str, make: Any) -> Any:
    # Prometheus forbids registering a name twice; tests build several workers per process.
    existing = getattr(registry, "_names_to_collectors", {}).get(name) or getattr(
        registry, "_names_to_collectors", {}
    ).get(name + "_total")
    return existing if existing is not None else make()


class Snapshot(NamedTuple):
    """One worker instance's published counters, where it was read from."""

    offset: int
    seq: int  # -1: published before snapshots carried a sequence number
    data: dict[str, Any]
    raw: bytes


def latest_snapshots(records: Iterable[tuple[int, bytes | None]]) -> dict[str, Snapshot]:
    """The winning snapshot of each worker instance among ``(offset, value)`` records: the
    highest ``seq``, and of equal ``seq`` the higher offset. Values that are not snapshots
    are skipped."""
    latest: dict[str, Snapshot] = {}
    for offset, value in records:
        try:
            data = orjson.loads(value or b"")
            worker = str(data["worker"])
            seq = int(data.get("seq", -1))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            continue
        current = latest.get(worker)
        if current is None or (seq, offset) >= (current.seq, current.offset):
            latest[worker] = Snapshot(offset, seq, data, value or b"")
    return latest


def merge_snapshots(snapshots: Iterable[bytes]) -> dict[str, SourceCounts]:
    """Sum the winning snapshot of each worker instance (``snapshots`` in topic order)."""
    latest = latest_snapshots(enumerate(snapshots))
    totals: dict[str, SourceCounts] = {}
    for data in (snapshot.data for snapshot in latest.values()):
        for source, counts in data.get("sources", {}).items():
            totals.setdefault(source, SourceCounts()).add(SourceCounts(**counts))
    return totals
