"""/metrics and /healthz of the consumer processes, and the one-line log formats."""

from __future__ import annotations

import logging

import httpx
import orjson
from prometheus_client import CollectorRegistry, Counter

from hosepipe.logs import JsonFormatter, TextFormatter
from hosepipe.observability import serve_metrics


def test_metrics_and_health_endpoints() -> None:
    registry = CollectorRegistry()
    Counter("demo_records", "records seen", registry=registry).inc(3)
    healthy = {"ok": True}
    server = serve_metrics("127.0.0.1", 0, lambda: healthy, registry)
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert "demo_records_total 3.0" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/healthz").json() == {"ok": True}
        healthy["ok"] = False
        assert httpx.get(f"{base}/healthz").status_code == 503
        assert httpx.get(f"{base}/nope").status_code == 404
    finally:
        server.stop()


def test_failing_health_probe_reports_the_error() -> None:
    def broken() -> dict[str, object]:
        raise ConnectionError("broker gone")

    server = serve_metrics("127.0.0.1", 0, broken, CollectorRegistry())
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/healthz")
        assert response.status_code == 503
        assert "ConnectionError: broker gone" in response.json()["error"]
    finally:
        server.stop()


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("sink", logging.INFO, __file__, 1, "flushed %d rows", (5,), None)
    record.__dict__.update(extra)
    return record


def test_log_lines_carry_component_and_kafka_coordinates() -> None:
    record = _record(topic="events.canonical", partition=2)
    line = orjson.loads(JsonFormatter("sink").format(record))
    assert line["component"] == "sink"
    assert line["msg"] == "flushed 5 rows"
    assert (line["topic"], line["partition"]) == ("events.canonical", 2)
    text = TextFormatter("sink").format(_record(offset=42))
    assert "sink" in text and "flushed 5 rows" in text and "offset=42" in text
    assert "\n" not in text
