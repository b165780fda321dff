"""The selector against a real S3 lake and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

from hosepipe.config import PipelineConfig
from hosepipe.db import NOTIFY_CHANNEL, check_schema_version
from hosepipe.settings import Settings
from selector.metrics import SelectorMetrics
from selector.plan import Shard, parse_instant
from selector.runner import RunOptions, Selector
from selector.schema import upgrade
from selector.service import build_selector

pytestmark = pytest.mark.integration


def selector_for(settings: Settings, pipeline: PipelineConfig, **options: Any) -> Selector:
    engine_ = build_selector(settings, pipeline, RunOptions(progress=False, **options)).engine
    upgrade(engine_, pipeline.selection)
    return build_selector(settings, pipeline, RunOptions(progress=False, **options))


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def test_incremental_runs_load_only_new_files_including_a_late_file(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    pipeline = write_pipeline()
    write_lake([make_event(i, hour=i % 3) for i in range(300)])
    selector = selector_for(selector_settings, pipeline)

    first = selector.run_once()
    assert first.files == 3
    assert first.rows == {"events": 300, "orders": 300}
    assert scalar(engine, "SELECT count(*) FROM events") == 300

    again = selector.run_once()
    assert again.files == 0 and again.rows == {}

    # A late event lands in the oldest hour as a new file (a later Kafka offset).
    late = make_event(1000, hour=0)
    written = write_lake([late], first_offset=500)
    assert written[0].startswith("source=orders/dt=2025-11-22/hour=00/")
    third = selector.run_once()
    assert third.files == 1
    assert third.rows == {"events": 1, "orders": 1}
    assert scalar(engine, "SELECT count(*) FROM events") == 301
    assert scalar(engine, "SELECT count(*) FROM selector_files") == 4
    assert scalar(engine, "SELECT count(*) FROM orders WHERE order_id = 'o1000'") == 1


def test_older_event_never_overwrites_newer_rule_row(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    pipeline = write_pipeline()
    selector = selector_for(selector_settings, pipeline)
    write_lake([make_event(1, hour=5, order="A", amount="20.00", event_id="new")])
    selector.run_once()
    # A late file with an older state of order A arrives afterwards.
    write_lake([make_event(2, hour=1, order="A", amount="10.00", event_id="old")], first_offset=9)
    selector.run_once()
    assert scalar(engine, "SELECT amount FROM orders WHERE order_id = 'A'") == Decimal("20.00")
    assert scalar(engine, "SELECT count(*) FROM events") == 2


def test_kill_9_mid_load_then_rerun_loads_everything_exactly_once(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    pipeline = write_pipeline(batch_rows=100)
    files, per_file = 120, 400
    events = []
    for f in range(files):
        # One partition per file: hour f (5 days of hours) x source.
        events += [make_event(f * per_file + i, hour=f) for i in range(per_file)]
    write_lake(events)
    total = files * per_file
    upgrade(engine, pipeline.selection)

    env = {
        **os.environ,
        "HOSEPIPE_CONFIG_FILE": str(selector_settings.config_file),
        "HOSEPIPE_DATABASE_URL": selector_settings.database_url,
        "HOSEPIPE_LAKE_URL": selector_settings.lake_url,
        "HOSEPIPE_S3_ENDPOINT_URL": selector_settings.s3_endpoint_url or "",
        "HOSEPIPE_S3_ACCESS_KEY_ID": selector_settings.s3_access_key_id or "",
        "HOSEPIPE_S3_SECRET_ACCESS_KEY": selector_settings.s3_secret_access_key.get_secret_value()
        if selector_settings.s3_secret_access_key
        else "",
        "HOSEPIPE_METRICS_PORT": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "hosepipe", "select", "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    loaded = 0
    try:
        while time.monotonic() < deadline and process.poll() is None:
            loaded = scalar(engine, "SELECT count(*) FROM selector_files")
            if loaded >= 3:
                break
            time.sleep(0.005)
        assert process.poll() is None, process.communicate()[0].decode()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    # What was committed is exactly the checkpointed files' rows: nothing half-loaded.
    checkpointed = scalar(engine, "SELECT coalesce(sum(rows), 0) FROM selector_files")
    partial = scalar(engine, "SELECT count(*) FROM events")
    assert 0 < partial < total
    assert partial == checkpointed
    assert scalar(engine, "SELECT count(*) FROM orders") == checkpointed

    committed_files = scalar(engine, "SELECT count(*) FROM selector_files")
    summary = selector_for(selector_settings, pipeline).run_once()
    assert summary.files == files - committed_files  # only what the killed run had not committed
    assert summary.rows["events"] == total - partial
    assert scalar(engine, "SELECT count(*) FROM events") == total
    assert scalar(engine, "SELECT count(DISTINCT event_id) FROM events") == total
    assert scalar(engine, "SELECT count(*) FROM orders") == total
    assert scalar(engine, "SELECT count(*) FROM selector_files") == files
    assert scalar(engine, "SELECT sum(rows) FROM selector_files") == total


def test_shards_do_not_overlap_and_cover_everything(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    pipeline = write_pipeline()
    events = [make_event(i, hour=i % 24, source=("orders", "clicks")[i % 2]) for i in range(960)]
    all_files = set(write_lake(events))
    assert len(all_files) == 24
    upgrade(engine, pipeline.selection)

    seen: list[set[str]] = []
    for index in range(3):
        selector = selector_for(selector_settings, pipeline, shard=Shard(index, 3))
        planned = {f.path for f in selector.plan()}
        summary = selector.run_once()
        assert summary.files == len(planned)
        seen.append(planned)
    assert all(part for part in seen), "each shard should get some of 24 partitions"
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert seen[0] | seen[1] | seen[2] == all_files
    assert scalar(engine, "SELECT count(*) FROM events") == 960
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT path, partition FROM selector_files")).all()
    assert {p for p, _ in rows} == all_files
    for index, planned in enumerate(seen):
        assert all(Shard(index, 3).owns(path.rsplit("/", 1)[0]) for path in planned)


@pytest.mark.parametrize("where", [True, False], ids=["per-row", "columnar"])
def test_projections_produce_declared_types_and_rejects_bad_rows(
    make_event, selector_settings, write_pipeline, write_lake, engine, where
):
    # With a `where` predicate the rule runs per row; without, over Arrow columns.
    rule: dict[str, Any] = {
        "name": "typed",
        "table": "typed_orders",
        "sources": ["orders"],
        "where": [{"path": "$.payload.kind", "equals": "shop"}],
        "columns": {
            "order_id": {"path": "$.payload.id", "nullable": False},
            "amount": {"path": "$.payload.amount", "type": "numeric", "precision": 12, "scale": 2},
            "qty": {"path": "$.payload.qty", "type": "integer"},
            "big": {"path": "$.payload.big", "type": "bigint"},
            "ratio": {"path": "$.payload.ratio", "type": "double"},
            "paid": {"path": "$.payload.paid", "type": "boolean"},
            "at": {"path": "$.payload.at", "type": "timestamptz"},
            "day": {"path": "$.payload.day", "type": "date"},
            "extra": {"path": "$.payload.extra", "type": "jsonb"},
            "channel": {"path": "$.attributes.channel"},
            "occurred": {"path": "occurred_at", "type": "timestamptz"},
        },
        "key": ["order_id"],
    }
    if not where:
        del rule["where"]
    pipeline = write_pipeline(rules=[rule])
    good = {
        "kind": "shop",
        "id": "A1",
        "amount": "12.345",
        "qty": 3,
        "big": 9_000_000_000,
        "ratio": "0.25",
        "paid": "true",
        "at": "2025-11-22T10:00:00+01:00",
        "day": "2025-11-21",
        "extra": {"x": [1, 2]},
    }
    bad_amount = {**good, "id": "A2", "amount": "twelve"}
    bad_qty = {**good, "id": "A3", "qty": 2**40}
    missing_key = {k: v for k, v in good.items() if k != "id"}
    other_kind = {**good, "id": "A4", "kind": "marketplace"}
    events = [
        make_event(i, payload=json.dumps(body), event_id=f"t{i}")
        for i, body in enumerate([good, bad_amount, bad_qty, missing_key, other_kind], start=1)
    ]
    events.append(make_event(9, payload="{not json", event_id="t9"))
    write_lake(events)
    summary = selector_for(selector_settings, pipeline).run_once()
    assert summary.rows["typed_orders"] == (1 if where else 2)  # A4 is not "shop"
    assert summary.rejected == {"typed": 4, "events": 1}  # t9 breaks the rule as well
    # The events table gets every event whose payload is JSON.
    assert scalar(engine, "SELECT count(*) FROM events") == 5

    with engine.connect() as conn:
        types = dict(
            conn.execute(
                text(
                    "SELECT column_name, format_type(atttypid, atttypmod) FROM"
                    " information_schema.columns c JOIN pg_attribute a ON"
                    " a.attrelid = 'typed_orders'::regclass AND a.attname = c.column_name"
                    " WHERE c.table_name = 'typed_orders'"
                )
            ).all()
        )
        row = (
            conn.execute(text("SELECT * FROM typed_orders WHERE order_id = 'A1'")).mappings().one()
        )
        rejected = dict(
            conn.execute(
                text("SELECT event_id, reason FROM rejected_rows WHERE rule = 'typed'")
            ).all()
        )
    assert types["amount"] == "numeric(12,2)"
    assert types["qty"] == "integer"
    assert types["big"] == "bigint"
    assert types["ratio"] == "double precision"
    assert types["paid"] == "boolean"
    assert types["at"] == "timestamp with time zone"
    assert types["day"] == "date"
    assert types["extra"] == "jsonb"
    assert row["amount"] == Decimal("12.35")
    assert row["qty"] == 3 and row["big"] == 9_000_000_000 and row["ratio"] == 0.25
    assert row["paid"] is True
    assert row["at"].isoformat() == "2025-11-22T09:00:00+00:00"
    assert str(row["day"]) == "2025-11-21"
    assert row["extra"] == {"x": [1, 2]}
    assert row["channel"] == "test"  # event 1 is odd: attributes {"channel": "test"}
    assert row["_event_id"] == "t1"
    assert "amount" in rejected["t2"] and "'twelve' is not numeric(12,2)" in rejected["t2"]
    assert "qty" in rejected["t3"] and "out of range for integer" in rejected["t3"]
    assert "order_id" in rejected["t4"] and "required" in rejected["t4"]
    assert "not valid JSON" in rejected["t9"]


def test_reload_range_restores_rows_without_touching_the_checkpoint(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    pipeline = write_pipeline(rules=[])
    write_lake([make_event(i, hour=i % 4) for i in range(400)])
    selector_for(selector_settings, pipeline).run_once()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM events"))
        before = conn.execute(text("SELECT max(loaded_at) FROM selector_files")).scalar()
    start = parse_instant("2025-11-22T01", "--from")
    end = parse_instant("2025-11-22T03:00:00Z", "--to")
    summary = selector_for(selector_settings, pipeline, start=start, end=end).run_once()
    assert summary.files == 2  # hours 01 and 02 only: partitions pruned
    assert scalar(engine, "SELECT count(*) FROM events") == 200
    assert scalar(engine, "SELECT min(occurred_at) >= '2025-11-22T01:00Z' FROM events")
    assert scalar(engine, "SELECT max(loaded_at) FROM selector_files") == before


def test_notify_after_load_and_metrics(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    pipeline = write_pipeline()
    write_lake([make_event(i, hour=2) for i in range(10)])
    selector = selector_for(selector_settings, pipeline)
    registry = CollectorRegistry()
    selector.metrics = SelectorMetrics.create(registry)
    url = selector_settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        selector.run_once()
        notices = list(listener.notifies(timeout=5, stop_after=1))
    assert len(notices) == 1
    payload = json.loads(notices[0].payload)
    assert payload["count"] == 10
    assert payload["tables"] == {"events": 10, "orders": 10}
    assert payload["files"] == 1
    assert payload["max_occurred_at"].startswith("2025-11-22T02:")
    assert payload["shard"] == "0/1"
    assert registry.get_sample_value("hosepipe_selector_files_loaded_total") == 1
    assert (
        registry.get_sample_value("hosepipe_selector_rows_loaded_total", {"table": "events"}) == 10
    )
    assert registry.get_sample_value("hosepipe_selector_run_duration_seconds_count") == 1


def test_schema_check_and_upgrade_from_the_first_revision(
    orders_rule, selector_settings, write_pipeline, engine
):
    from hosepipe.db import SchemaBehindError

    pipeline = write_pipeline()
    with pytest.raises(SchemaBehindError, match="run `hosepipe db upgrade`"):
        check_schema_version(engine)
    upgrade(engine, None, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO selector_files (path, size, rows) VALUES"
                " ('source=orders/dt=2025-11-22/hour=01/x+0+1.parquet', 10, 5)"
            )
        )
    with pytest.raises(SchemaBehindError, match="revision 0001"):
        check_schema_version(engine)
    report = upgrade(engine, pipeline.selection)
    assert (report.revision_before, report.revision_after) == ("0001", "0004")
    check_schema_version(engine, pipeline.selection)
    assert scalar(engine, "SELECT partition FROM selector_files") == (
        "source=orders/dt=2025-11-22/hour=01"
    )
    assert scalar(engine, "SELECT to_regclass('rejected_rows') IS NOT NULL")

    # The rule changes: a new column and a wider amount; upgrade alters the table in place.
    changed = orders_rule
    changed["columns"]["amount"]["precision"] = 14
    changed["columns"]["note"] = {"path": "$.payload.note"}
    pipeline = write_pipeline(rules=[changed])
    report = upgrade(engine, pipeline.selection)
    assert any('ADD COLUMN "note"' in s for s in report.statements)
    assert any("NUMERIC(14, 2)" in s for s in report.statements)
    assert upgrade(engine, pipeline.selection).statements == []


def test_cli_select_once(make_event, selector_settings, write_pipeline, write_lake, engine):
    write_pipeline()
    write_lake([make_event(i) for i in range(5)])
    env = {
        **os.environ,
        "HOSEPIPE_CONFIG_FILE": str(selector_settings.config_file),
        "HOSEPIPE_DATABASE_URL": selector_settings.database_url,
        "HOSEPIPE_LAKE_URL": selector_settings.lake_url,
        "HOSEPIPE_S3_ENDPOINT_URL": selector_settings.s3_endpoint_url or "",
        "HOSEPIPE_S3_ACCESS_KEY_ID": selector_settings.s3_access_key_id or "",
        "HOSEPIPE_S3_SECRET_ACCESS_KEY": selector_settings.s3_secret_access_key.get_secret_value()
        if selector_settings.s3_secret_access_key
        else "",
    }
    behind = subprocess.run(
        [sys.executable, "-m", "hosepipe", "select"], env=env, capture_output=True, text=True
    )
    assert behind.returncode != 0 and "hosepipe db upgrade" in " ".join(behind.stderr.split())
    current = subprocess.run(
        [sys.executable, "-m", "hosepipe", "db", "current"], env=env, capture_output=True, text=True
    )
    assert current.returncode == 1 and "no hosepipe schema" in " ".join(current.stderr.split())
    up = subprocess.run(
        [sys.executable, "-m", "hosepipe", "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr
    current = subprocess.run(
        [sys.executable, "-m", "hosepipe", "db", "current"], env=env, capture_output=True, text=True
    )
    assert current.returncode == 0, current.stderr
    done = subprocess.run(
        [sys.executable, "-m", "hosepipe", "select"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "loaded 1 file(s): events=5, orders=5" in done.stdout
    assert scalar(engine, "SELECT count(*) FROM events") == 5


def test_replayed_file_and_duplicate_events_are_upserted_not_duplicated(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    pipeline = write_pipeline()
    selector = selector_for(selector_settings, pipeline)
    write_lake([make_event(i, hour=1) for i in range(50)])
    assert selector.run_once().rows == {"events": 50, "orders": 50}
    # The dedupe window missed some: a later file repeats ten event ids (direct COPY
    # conflicts, the batch is merged instead).
    write_lake([make_event(i, hour=1) for i in range(40, 60)], first_offset=100)
    assert selector.run_once().files == 1
    # A replay rewrites the first file under the same name with other content.
    write_lake([make_event(i, hour=1, amount="99.00") for i in range(50)], first_offset=0)
    assert selector.run_once().files == 1
    assert scalar(engine, "SELECT count(*) FROM events") == 60
    assert scalar(engine, "SELECT count(*) FROM orders") == 60
    assert scalar(engine, "SELECT count(*) FROM orders WHERE amount = 99") == 50
    assert scalar(engine, "SELECT count(*) FROM selector_files") == 2


def test_follow_loads_new_files_and_one_follower_per_shard(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    import threading

    pipeline = write_pipeline(follow_interval="0.2s")
    first = selector_for(selector_settings, pipeline)
    second = selector_for(selector_settings, pipeline)
    errors: list[Exception] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=s.follow, args=(stop, errors.append), daemon=True)
        for s in (first, second)
    ]
    for thread in threads:
        thread.start()
    try:
        write_lake([make_event(i, hour=3) for i in range(20)])
        deadline = time.monotonic() + 20
        while scalar(engine, "SELECT count(*) FROM events") < 20:
            assert time.monotonic() < deadline, "follower did not load the new file"
            time.sleep(0.1)
        write_lake([make_event(i, hour=4) for i in range(20, 30)], first_offset=7)
        while scalar(engine, "SELECT count(*) FROM events") < 30:
            assert time.monotonic() < deadline, "follower did not load the second file"
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert errors == []
    runs = [s.last_run for s in (first, second)]
    assert sum(r is not None for r in runs) == 1, "only the lock holder may run"


def test_cli_follow_with_upgrade_serves_metrics_and_stops_on_sigterm(
    make_event, selector_settings, write_pipeline, write_lake, engine
):
    import httpx

    from hosepipe.localstack.servers import free_port

    write_pipeline(follow_interval="0.3s")
    port = free_port()
    env = {
        **os.environ,
        "HOSEPIPE_CONFIG_FILE": str(selector_settings.config_file),
        "HOSEPIPE_DATABASE_URL": selector_settings.database_url,
        "HOSEPIPE_LAKE_URL": selector_settings.lake_url,
        "HOSEPIPE_S3_ENDPOINT_URL": selector_settings.s3_endpoint_url or "",
        "HOSEPIPE_S3_ACCESS_KEY_ID": selector_settings.s3_access_key_id or "",
        "HOSEPIPE_S3_SECRET_ACCESS_KEY": selector_settings.s3_secret_access_key.get_secret_value()
        if selector_settings.s3_secret_access_key
        else "",
        "HOSEPIPE_METRICS_PORT": str(port),
        "HOSEPIPE_BIND_HOST": "127.0.0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "hosepipe", "select", "--follow", "--upgrade", "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        write_lake([make_event(i, hour=6) for i in range(25)])
        deadline = time.monotonic() + 30
        metrics = ""
        while "hosepipe_selector_files_loaded_total 1.0" not in metrics:
            assert process.poll() is None, process.communicate()[0].decode()[-2000:]
            assert time.monotonic() < deadline, f"no load seen in /metrics:\n{metrics[-1500:]}"
            time.sleep(0.2)
            try:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                continue
        assert 'hosepipe_selector_rows_loaded_total{table="events"} 25.0' in metrics
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        assert health.status_code == 200 and health.json()["ok"] is True
        assert scalar(engine, "SELECT count(*) FROM events") == 25
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, process.communicate()[0].decode()[-2000:]
