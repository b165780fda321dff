"""The live stage table folds each component's Prometheus counters into readable rows."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from hosepipe.localstack.dashboard import parse_samples, stage_rows, total


def _exposition() -> str:
    registry = CollectorRegistry()
    records = Counter("hosepipe_streams_records", "r", ["source", "outcome"], registry=registry)
    for source, received, out, dup, dlq in [("orders", 100, 90, 8, 2), ("clicks", 50, 50, 0, 0)]:
        records.labels(source, "received").inc(received)
        records.labels(source, "out").inc(out)
        records.labels(source, "duplicates").inc(dup)
        records.labels(source, "dead_lettered").inc(dlq)
    return generate_latest(registry).decode()


def test_totals_sum_over_label_values() -> None:
    samples = parse_samples(_exposition())
    assert total(samples, "hosepipe_streams_records_total", outcome="received") == 150
    assert total(samples, "hosepipe_streams_records_total", source="orders", outcome="out") == 90


def test_stage_rows_name_every_stage_and_who_is_silent() -> None:
    rows = {row.stage: row.figures for row in stage_rows({"worker": parse_samples(_exposition())})}
    assert rows["worker (normalize, dedupe)"] == (
        "150 in → 140 canonical, 8 duplicates, 0 dropped, 2 to DLQ"
    )
    assert rows["sink (Parquet lake)"] == "not reporting"
    assert len(rows) == 6
