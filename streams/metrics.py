"""Per-source counters: Prometheus metrics and snapshots for ``hosepipe stats``.

A worker keeps running totals per source (:class:`StageCounters`). After every committed batch
they go to Prometheus (``hosepipe_streams_records_total{source, outcome}``) and, at most every
few seconds and at shutdown, as a JSON snapshot keyed by the worker's instance id to the stats
topic; ``hosepipe stats`` adds up the latest snapshot of every worker instance that ever ran.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from streams.core import SourceCounts

OUTCOMES = ("received", "out", "duplicates", "dropped", "dead_lettered")


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

    def snapshot(self, worker: str) -> bytes:
        return orjson.dumps(
            {
                "worker": worker,
                "updated_at": time.time(),
                "sources": {s: asdict(c) for s, c in self.totals.items()},
                "lag": {f"{t}:{p}": n for (t, p), n in self.lag.items()},
            }
        )


def _get_or_make(registry: Any, name: str, make: Any) -> Any:
    # Prometheus forbids registering a name twice; tests build several workers per process.
    existing = getattr(registry, "_names_to_collectors", {}).get(name) or getattr(
        registry, "_names_to_collectors", {}
    ).get(name + "_total")
    return existing if existing is not None else make()


def merge_snapshots(snapshots: Iterable[bytes]) -> dict[str, SourceCounts]:
    """Sum the latest snapshot of each worker instance (later snapshots replace earlier)."""
    latest: dict[str, dict[str, Any]] = {}
    for value in snapshots:
        try:
            data = orjson.loads(value)
            latest[str(data["worker"])] = data
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    totals: dict[str, SourceCounts] = {}
    for data in latest.values():
        for source, counts in data.get("sources", {}).items():
            totals.setdefault(source, SourceCounts()).add(SourceCounts(**counts))
    return totals
