"""Prometheus metrics of the sink (``hosepipe_sink_*``), created once per registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_BY_REGISTRY: dict[int, SinkMetrics] = {}


@dataclass(frozen=True)
class SinkMetrics:
    """Every metric the sink exports."""

    files: Counter
    rows: Counter
    bytes: Counter
    flushes: Counter
    late_events: Counter
    invalid_time_events: Counter
    dropped_rows: Counter
    skipped_rows: Counter
    dead_letters: Counter
    write_failures: Counter
    open_partitions: Gauge
    buffered_rows: Gauge
    lake_healthy: Gauge
    consumer_lag: Gauge
    consume_to_commit: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> SinkMetrics:
        """The sink's metrics in ``registry`` (registered on first use, then reused)."""
        found = _BY_REGISTRY.get(id(registry))
        if found is not None:
            return found
        metrics = cls(
            files=Counter(
                "hosepipe_sink_files_written", "Parquet files made durable.", registry=registry
            ),
            rows=Counter(
                "hosepipe_sink_rows_written", "Rows written to the lake.", registry=registry
            ),
            bytes=Counter(
                "hosepipe_sink_bytes_written", "Parquet bytes written.", registry=registry
            ),
            flushes=Counter(
                "hosepipe_sink_flushes",
                "Batches flushed and committed, by reason.",
                ["reason"],
                registry=registry,
            ),
            late_events=Counter(
                "hosepipe_sink_late_events",
                "Events older than the newest hour already seen on their Kafka partition.",
                registry=registry,
            ),
            invalid_time_events=Counter(
                "hosepipe_sink_invalid_time_events",
                "Events whose occurred_at lies outside years 1..9999, landed under dt=invalid.",
                registry=registry,
            ),
            dropped_rows=Counter(
                "hosepipe_sink_dropped_rows",
                "Uncommitted buffered rows dropped on a rebalance or commit failure "
                "(they are read again from the committed offset, not lost).",
                registry=registry,
            ),
            skipped_rows=Counter(
                "hosepipe_sink_skipped_rows",
                "Rows read again after a restart or rebalance that their lane's stored cursor "
                "shows durable already (late lane), so not written twice.",
                registry=registry,
            ),
            dead_letters=Counter(
                "hosepipe_sink_dead_letters",
                "Undecodable records sent to the DLQ.",
                registry=registry,
            ),
            write_failures=Counter(
                "hosepipe_sink_write_failures",
                "Failed attempts to make a batch durable.",
                registry=registry,
            ),
            open_partitions=Gauge(
                "hosepipe_sink_open_partitions",
                "Open files (time partitions) in the batch.",
                registry=registry,
            ),
            buffered_rows=Gauge(
                "hosepipe_sink_buffered_rows", "Rows in the batch.", registry=registry
            ),
            lake_healthy=Gauge(
                "hosepipe_sink_lake_healthy",
                "1 when the last lake write succeeded.",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "hosepipe_sink_consumer_lag",
                "High-water mark minus committed offset, after each commit.",
                ["topic", "partition"],
                registry=registry,
            ),
            consume_to_commit=Histogram(
                "hosepipe_sink_consume_to_commit_seconds",
                "From consuming a batch's oldest record to committing its offsets.",
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800),
                registry=registry,
            ),
        )
        metrics.lake_healthy.set(1)
        _BY_REGISTRY[id(registry)] = metrics
        return metrics
