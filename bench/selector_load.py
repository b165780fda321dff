"""Selector throughput: N lake events into PostgreSQL, beside a plain COPY of the same rows.

    .venv/bin/python bench/selector_load.py                 # 1,000,000 events, embedded PostgreSQL
    .venv/bin/python bench/selector_load.py -n 200000 --insert-rows 50000
    .venv/bin/python bench/selector_load.py --scenario small --lake s3   # 2,000 files of ~200 rows

Two lakes (``--scenario``):

* ``large`` (default): N events in files of ~50k rows, one hour per file;
* ``small``: what the sink writes with late events: ``--small-files`` files (2,000) of
  ``--small-rows`` rows (200) spread over 60 ``source=/dt=/hour=`` partitions and 4 Kafka
  partitions, so the selector's cost per file (listing, GET, Parquet open, checkpoint)
  shows beside its cost per row.

``--lake s3`` puts the lake in an embedded SeaweedFS (as ``hosepipe up`` does) instead of a
file:// directory.

Writes N canonical events (orders-like JSON payloads of ~200 B, two attributes) as Parquet
in the lake layout (``source=/dt=/hour=``, ~50k rows per file) under a temporary file://
lake, starts an embedded PostgreSQL (or uses ``--database-url``, each variant in a fresh
database), and runs each variant in its own child process so that its peak RSS is its own:

* ``copy``      — ``hosepipe select`` as shipped: CSV → COPY straight into ``events`` (with
                  its indexes) inside a savepoint, falling back to the merge on a conflict;
                  checkpoint rows in the same transaction;
* ``copy-1conn``— the same on one connection (``load_connections: 1``; the default splits
                  each group's ``events`` rows over two);
* ``copy+rule`` — the same plus the example ``orders`` projection rule (typed table);
* ``merge``     — the selector always going through the temp table + merge (what a reload
                  or a batch with replayed events does);
* ``insert``    — the selector with ``executemany`` INSERT ... ON CONFLICT (on fewer rows);
* ``plain-copy``— the ceiling: the same Parquet rows as CSV COPYed straight into a table of
                  the same shape and indexes (jsonb parsed by COPY), one transaction per
                  file, no savepoint, no checkpoint, no NOTIFY.

Prints rows/s, files/s, seconds, CPU seconds of the selector process and of PostgreSQL (its
whole process tree, exited backends included), both also per 1,000 rows, and peak RSS per
variant. CPU seconds are steadier than wall time on a shared machine. ``plain-copy`` runs
first and last: the first run on a new server also pays for creating WAL segments (later
runs recycle them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROWS_PER_FILE = 50_000
SMALL_HOURS = 30  # x 2 sources = 60 partitions, like a flush with late events
BASE_US = 1_763_769_600_000_000  # 2025-11-22T00:00Z
ORDERS_RULE = {
    "name": "orders",
    "table": "orders",
    "sources": ["orders"],
    "columns": {
        "order_id": {"path": "$.payload.id", "type": "text", "nullable": False},
        "customer_id": {"path": "$.payload.customer.id"},
        "status": {"path": "event_type"},
        "amount": {
            "path": "$.payload.total.amount",
            "type": "numeric",
            "precision": 12,
            "scale": 2,
        },
        "currency": {"path": "$.payload.total.currency"},
        "occurred_at": {"path": "occurred_at", "type": "timestamptz", "nullable": False},
    },
    "key": ["order_id"],
}


def events_table(start: int, count: int, source: str, hour: int) -> Any:
    """``count`` canonical events with ids from ``start``, in hour ``hour`` after BASE_US."""
    import pyarrow as pa

    from hosepipe.lake import canonical_arrow_schema

    occurred = [BASE_US + hour * 3_600_000_000 + (i * 10_000) % 3_600_000_000 for i in range(count)]
    ids = range(start, start + count)
    payloads = [
        json.dumps(
            {
                "id": f"o{i}",
                "status": "paid",
                "customer": {"id": f"c{i % 5000}", "tier": "gold"},
                "total": {"amount": f"{(i % 100000) / 100:.2f}", "currency": "EUR"},
                "items": [{"sku": f"sku-{i % 300}", "qty": 1 + i % 3}],
            },
            separators=(",", ":"),
        )
        for i in ids
    ]
    return pa.Table.from_arrays(
        [
            pa.array([f"evt-{i:012d}" for i in ids]),
            pa.array([source] * count),
            pa.array(["order_paid" if source == "orders" else "page_view"] * count),
            pa.array(occurred, pa.timestamp("us", tz="UTC")),
            pa.array([t + 1500 for t in occurred], pa.timestamp("us", tz="UTC")),
            pa.array([f"c{i % 5000}" for i in ids]),
            pa.array(payloads),
            pa.array(
                [[("channel", "web"), ("app_version", "1.4.2")]] * count,
                pa.map_(pa.string(), pa.string()),
            ),
        ],
        schema=canonical_arrow_schema(),
    )


def write_lake(store: Any, scenario: str, n: int, small_files: int, small_rows: int) -> int:
    """The scenario's events in the lake layout; returns the number of files.

    ``large``: ``n`` events, 50k rows per file, one hour per file, the sources alternating.
    ``small``: ``small_files`` files of ``small_rows`` rows like the sink's flushes with late
    events: file i in source ``orders``/``clickstream`` (alternating), one of 30 hours (so
    60 partitions), Kafka partition 0-3, offsets growing.
    """
    from hosepipe.lake import data_file_key, parquet_bytes, partition_path

    files = 0
    if scenario == "large":
        for start in range(0, n, ROWS_PER_FILE):
            count = min(ROWS_PER_FILE, n - start)
            source = "orders" if files % 2 else "clickstream"
            hour = files // 2
            table = events_table(start, count, source, hour)
            occurred = BASE_US + hour * 3_600_000_000
            directory = partition_path({"source": source, "occurred_at": occurred}, ["source"])
            store.put(data_file_key(directory, "events.canonical", 0, start), parquet_bytes(table))
            files += 1
        return files
    for i in range(small_files):
        source = "orders" if i % 2 else "clickstream"
        hour = (i // 2) % SMALL_HOURS
        partition = (i // (2 * SMALL_HOURS)) % 4
        start = i * small_rows
        table = events_table(start, small_rows, source, hour)
        occurred = BASE_US + hour * 3_600_000_000
        directory = partition_path({"source": source, "occurred_at": occurred}, ["source"])
        key = data_file_key(directory, "events.canonical", partition, start)
        store.put(key, parquet_bytes(table))
        files += 1
    return files


def fresh_database(admin_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def lake_settings(lake: dict[str, str], database_url: str = "") -> Any:
    """Settings for a lake described by ``lake`` (``lake_url`` and, for S3, its server)."""
    from hosepipe.settings import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url or "postgresql+psycopg://unused@127.0.0.1/unused",
        **lake,  # type: ignore[arg-type]
    )


def cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of ``pid`` and its process tree, children that exited included."""
    if pid is None:
        return None
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    except psutil.Error:
        return None
    return total


def run_variant(
    variant: str, lake: dict[str, str], database_url: str, limit: int | None
) -> dict[str, Any]:
    """In a child process: load the lake with one variant; returns figures."""
    import yaml

    from hosepipe.config import PipelineConfig
    from hosepipe.db import sync_engine
    from hosepipe.runtime import settle_garbage_collector
    from selector.lakefiles import Lake
    from selector.runner import RunOptions, Selector
    from selector.schema import upgrade

    settings = lake_settings(lake, database_url)
    rules = [ORDERS_RULE] if variant == "copy+rule" else []
    connections = {"load_connections": 1} if variant == "copy-1conn" else {}
    pipeline = PipelineConfig.model_validate(
        yaml.safe_load(
            yaml.safe_dump(
                {
                    "version": 1,
                    "sources": {
                        "orders": {
                            "kind": "push",
                            "mapping": {
                                "event_id": "$.id",
                                "occurred_at": "$.at",
                                "event_type": "$.type",
                            },
                        }
                    },
                    "sink": {"partition_keys": ["source"]},
                    "selection": {"rules": rules, **connections},
                }
            )
        )
    )
    engine = sync_engine(settings)
    upgrade(engine, pipeline.selection)
    lake_view = Lake.open(settings, ["source"])
    settle_garbage_collector(100_000, 50, 100)  # as `hosepipe select` does
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    rows = 0
    files = 0
    if variant == "plain-copy":
        from selector.load import EVENT_COLUMNS, csv_chunks

        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE plain (LIKE events INCLUDING ALL)")
        for file in lake_view.list_files():
            for _, table in lake_view.read([file.path]):
                assert table is not None  # None only with missing_ok
                with engine.begin() as conn:
                    raw: Any = conn.connection.dbapi_connection
                    with (
                        raw.cursor() as cur,
                        cur.copy(
                            f"COPY plain ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT csv)"
                        ) as copy,
                    ):
                        for chunk in csv_chunks(table):
                            copy.write(chunk)
                rows += table.num_rows
                files += 1
    else:
        method = variant if variant in ("insert", "merge") else "copy"
        selector = Selector(
            engine,
            pipeline,
            lake_view,
            RunOptions(method=method, progress=False),  # type: ignore[arg-type]
        )
        if limit is not None:
            listed = sorted(lake_view.list_files())
            keep = {f.path for f in listed[:limit]}
            original = selector.plan
            selector.plan = lambda: [f for f in original() if f.path in keep]  # type: ignore[method-assign]
        summary = selector.run_once()
        rows = summary.rows.get("events", 0)
        files = summary.files
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    with engine.connect() as conn:
        table = "plain" if variant == "plain-copy" else "events"
        stored = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
    engine.dispose()
    return {
        "variant": variant,
        "rows": rows,
        "files": files,
        "stored": stored,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds) if seconds else 0,
        "files_per_s": round(files / seconds, 1) if seconds else 0,
        "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--events", type=int, default=1_000_000, help="large scenario")
    parser.add_argument("--scenario", choices=("large", "small"), default="large")
    parser.add_argument("--small-files", type=int, default=2_000, help="small scenario: files")
    parser.add_argument("--small-rows", type=int, default=200, help="small scenario: rows/file")
    parser.add_argument("--lake", choices=("file", "s3"), default="file")
    parser.add_argument(
        "--insert-rows", type=int, default=200_000, help="rows for the slow executemany variant"
    )
    parser.add_argument("--database-url", help="an existing server (default: embedded PG)")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma separated (default: plain-copy,copy,merge,copy+rule,insert,plain-copy for "
        "large, copy,copy+rule for small)",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("VARIANT", "LAKE", "URL"), help=argparse.SUPPRESS
    )
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, lake, url = args.child
        print(json.dumps(run_variant(variant, json.loads(lake), url, args.limit)))
        return
    variants = args.variants or (
        "plain-copy,copy,merge,copy+rule,insert,plain-copy"
        if args.scenario == "large"
        else "copy,copy+rule"
    )

    with tempfile.TemporaryDirectory(prefix="hosepipe-bench-selector-") as tmp:
        work = Path(tmp)
        s3 = None
        server = None
        try:
            if args.lake == "s3":
                from hosepipe.localstack.servers import free_port, start_s3

                s3 = start_s3(work / "s3", free_port(), "bench", "bench-secret", ["lake"])
                lake = {
                    "lake_url": f"s3://{s3.bucket}/lake",
                    "s3_endpoint_url": s3.endpoint_url,
                    "s3_access_key_id": s3.access_key,
                    "s3_secret_access_key": s3.secret_key,
                    "s3_region": s3.region,
                }
            else:
                lake = {"lake_url": (work / "lake").as_uri()}
            from hosepipe.lake import open_lake_store

            started = time.perf_counter()
            files = write_lake(
                open_lake_store(lake_settings(lake)),
                args.scenario,
                args.events,
                args.small_files,
                args.small_rows,
            )
            events = args.events if args.scenario == "large" else args.small_files * args.small_rows
            rows_per_file = events / max(files, 1)
            print(
                f"lake ({args.lake}, {args.scenario}): {events:,} events in {files:,} files "
                f"({time.perf_counter() - started:.1f}s to write)",
                flush=True,
            )
            admin_url = args.database_url
            if admin_url is None:
                from hosepipe.localstack.servers import free_port, start_postgres

                server = start_postgres(work / "pg", free_port(), durable=True)
                admin_url = server.url
            pg_pid = server.server.pid if server is not None else None
            s3_pid = s3.server.pid if s3 is not None else None
            for variant in variants.split(","):
                url = fresh_database(admin_url)
                command = [sys.executable, __file__, "--child", variant, json.dumps(lake), url]
                if variant == "insert":
                    command += ["--limit", str(max(1, round(args.insert_rows / rows_per_file)))]
                pg_before, s3_before = cpu_seconds(pg_pid), cpu_seconds(s3_pid)
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                time.sleep(1.0)  # the postmaster reaps the child's backend (its CPU time)
                pg_after, s3_after = cpu_seconds(pg_pid), cpu_seconds(s3_pid)
                if done.returncode != 0:
                    print(f"{variant}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                per_k = 1000 / max(result["rows"], 1)
                cpu = result["cpu_s"]
                figures = f"select {cpu:.2f} CPU s ({cpu * per_k * 1000:.0f} µs/row)"
                if pg_before is not None and pg_after is not None:
                    pg = pg_after - pg_before
                    figures += f", PostgreSQL {pg:.2f} CPU s ({pg * per_k * 1000:.0f} µs/row)"
                if s3_before is not None and s3_after is not None:
                    figures += f", S3 {s3_after - s3_before:.2f} CPU s"
                print(
                    f"{result['variant']:<11} {result['rows']:>10,} rows"
                    f" {result['files']:>6,} files"
                    f"  {result['seconds']:>7.2f} s  {result['rows_per_s']:>9,} rows/s"
                    f"  {result['files_per_s']:>8,} files/s  peak RSS {result['peak_rss_mb']:>5} MB"
                    f"  (rows in table: {result['stored']:,})\n            {figures}",
                    flush=True,
                )
        finally:
            if server is not None:
                server.stop()
            if s3 is not None:
                s3.stop()
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, date {time.strftime('%Y-%m-%d')}, load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )


if __name__ == "__main__":
    main()
