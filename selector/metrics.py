"""Prometheus metrics of ``hosepipe select`` (created per process, not at import)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class SelectorMetrics:
    files_loaded: Counter
    rows_loaded: Counter
    rows_rejected: Counter
    run_seconds: Histogram
    last_success: Gauge
    pending_files: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> SelectorMetrics:
        return cls(
            files_loaded=Counter(
                "hosepipe_selector_files_loaded",
                "Lake files loaded into PostgreSQL (checkpointed).",
                registry=registry,
            ),
            rows_loaded=Counter(
                "hosepipe_selector_rows_loaded",
                "Rows upserted, by target table.",
                ["table"],
                registry=registry,
            ),
            rows_rejected=Counter(
                "hosepipe_selector_rows_rejected",
                "Rows a selection rule could not type (see table rejected_rows), by rule.",
                ["rule"],
                registry=registry,
            ),
            run_seconds=Histogram(
                "hosepipe_selector_run_duration_seconds",
                "Duration of one selection run (list, read, load).",
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
                registry=registry,
            ),
            last_success=Gauge(
                "hosepipe_selector_last_success_timestamp_seconds",
                "Unix time the last selection run finished without error.",
                registry=registry,
            ),
            pending_files=Gauge(
                "hosepipe_selector_pending_files",
                "Files found not yet loaded at the start of the last run.",
                registry=registry,
            ),
        )
