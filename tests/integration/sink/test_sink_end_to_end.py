"""The sink against a real broker and S3: layout, reads, flush triggers, late events."""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import pyarrow.dataset as ds
import pytest

from hosepipe.config import PipelineConfig
from hosepipe.lake import (
    duckdb_read_parquet_sql,
    lake_dataset,
    open_lake_store,
    parse_data_file_name,
)
from hosepipe.settings import Settings
from sink.metrics import SinkMetrics

pytestmark = pytest.mark.integration


def test_lands_partitioned_parquet_readable_by_duckdb_and_pyarrow(
    settings: Settings,
    canonical: Callable[..., PipelineConfig],
    run_sink_thread,
    kit,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sink.runner.FILES_PER_ANNOUNCEMENT", 2)  # flushes span records
    pipeline = canonical(partition_keys=["source"], max_age="0.5s")
    events = kit.make_events(600, hours=3)
    kit.produce(settings, pipeline.topics.canonical, events)
    running = run_sink_thread(settings, pipeline)
    kit.wait_committed(settings, pipeline, 600)
    running.stop()

    store = open_lake_store(settings)
    keys = store.list()
    assert keys, "no files"
    for key in keys:
        directory, name = key.rsplit("/", 1)
        assert directory.split("/")[0] in {"source=web", "source=app"}
        assert directory.split("/")[1] == "dt=2025-11-22"
        topic, _, _ = parse_data_file_name(name)
        assert topic == pipeline.topics.canonical
    assert kit.lake_counts(settings, ["source"]) == (600, 600)
    # Every flush named its files in the file log, each once (no crash, no replay).
    assert sorted(kit.announced(settings, pipeline)) == sorted(keys)

    dataset = lake_dataset(settings, ["source"])
    hour7 = dataset.to_table(filter=(ds.field("hour") == 7) & (ds.field("source") == "web"))
    assert hour7.num_rows == len(
        [e for e in events if (e["occurred_at"] - kit.T0) // kit.HOUR == 1 and e["source"] == "web"]
    )
    assert all(k for k in dataset.get_fragments(filter=ds.field("hour") == 7))
    assert len(list(dataset.get_fragments(filter=ds.field("hour") == 7))) < len(keys)

    con = duckdb.connect()
    con.register("lake", dataset)  # a pyarrow dataset scan pushes filters down
    assert con.execute(
        "select count(*), count(distinct event_id) from lake where hour = 6"
    ).fetchall() == [(200, 200)]
    import s3fs

    fs = s3fs.S3FileSystem(**settings.storage_options())
    con.register_filesystem(fs)
    glob = settings.lake_url.rstrip("/") + "/**/*.parquet"
    row = con.execute(
        f"select count(*), min(hour), max(hour), any_value(typeof(occurred_at)) "
        f"from {duckdb_read_parquet_sql(glob, ['source'])} where dt = '2025-11-22' and hour >= 7"
    ).fetchall()
    assert row == [(400, 7, 8, "TIMESTAMP WITH TIME ZONE")]


@pytest.mark.parametrize(
    ("sink_options", "reason"),
    [
        ({"max_rows": 50, "max_age": "900s"}, "rows"),
        ({"max_bytes": 4096, "max_age": "900s"}, "bytes"),
        ({"max_open_partitions": 2, "max_age": "900s"}, "partitions"),
        ({"max_age": "0.5s"}, "age"),
    ],
)
def test_each_flush_trigger(
    settings: Settings,
    canonical: Callable[..., PipelineConfig],
    run_sink_thread,
    kit,
    sink_options,
    reason,
) -> None:
    from prometheus_client import CollectorRegistry

    pipeline = canonical(**sink_options)
    metrics = SinkMetrics.create(CollectorRegistry())
    kit.produce(settings, pipeline.topics.canonical, kit.make_events(200, hours=4))
    running = run_sink_thread(settings, pipeline, metrics=metrics)
    kit.wait_committed(settings, pipeline, 100)  # the trigger flushed before the end
    running.stop()
    assert metrics.flushes.labels(reason)._value.get() >= 1
    assert kit.committed_total(settings, pipeline) == 200  # the rest flushed on shutdown
    assert metrics.rows._value.get() == 200
    assert kit.lake_counts(settings) == (200, 200)


def test_late_events_land_in_their_hour_and_are_counted(
    settings: Settings, canonical: Callable[..., PipelineConfig], run_sink_thread, kit
) -> None:
    from prometheus_client import CollectorRegistry

    pipeline = canonical(max_age="0.5s")
    newest = kit.make_events(10, hours=1, start=0)
    for e in newest:
        e["occurred_at"] += 5 * kit.HOUR
    late = kit.make_events(4, hours=1, start=100, prefix="late")
    # one Kafka partition so "newer first, then older" holds within it
    from confluent_kafka import Producer

    from hosepipe.avro import make_encoder
    from hosepipe.kafka import producer_config

    encoder = make_encoder(settings, pipeline.topics.canonical)
    producer = Producer(producer_config(settings))
    for e in newest + late:
        producer.produce(pipeline.topics.canonical, encoder.encode(e), partition=0)
    producer.flush(30)
    metrics = SinkMetrics.create(CollectorRegistry())
    running = run_sink_thread(settings, pipeline, metrics=metrics)
    kit.wait_committed(settings, pipeline, 14)
    running.stop()
    assert metrics.late_events._value.get() == 4
    table = lake_dataset(settings).to_table(filter=ds.field("hour") == 6)
    assert sorted(table["event_id"].to_pylist()) == [f"late{n}" for n in range(100, 104)]
