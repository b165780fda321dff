"""Prometheus metrics of the connectors (ingest, pollers, bulk load).

Defined once per process on the default registry, which ``/metrics`` serves.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "hosepipe_ingest_requests_total",
    "HTTP ingest requests by API, operation and status code.",
    ["api", "operation", "status"],
)
RECORDS = Counter(
    "hosepipe_connector_records_total",
    "Records acknowledged by Kafka, by source and connector (http, firehose, poll, bulk).",
    ["source", "connector"],
)
BYTES = Counter(
    "hosepipe_connector_bytes_total",
    "Bytes of records acknowledged by Kafka, by source and connector.",
    ["source", "connector"],
)
REJECTS = Counter(
    "hosepipe_ingest_rejects_total",
    "Records or requests refused, by source and reason.",
    ["source", "reason"],
)
PRODUCE_SECONDS = Histogram(
    "hosepipe_connector_produce_seconds",
    "Time from handing a batch to the producer until every record in it is acknowledged.",
    ["connector"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
POLL_LAG = Gauge(
    "hosepipe_poll_lag_seconds",
    "Seconds since the poller of a source last completed a sweep (caught up).",
    ["source"],
)
POLL_ERRORS = Counter(
    "hosepipe_poll_errors_total",
    "Poll attempts that failed, by source and reason.",
    ["source", "reason"],
)
