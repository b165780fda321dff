"""Selector throughput: N lake events into PostgreSQL, beside a plain COPY of the same rows.

    .venv/bin/python bench/selector.py                 # 1,000,000 events, embedded PostgreSQL
    .venv/bin/python bench/selector.py -n 200000 --insert-rows 50000

Writes N canonical events (orders-like JSON payloads of ~200 B, two attributes) as Parquet
in the lake layout (``source=/dt=/hour=``, ~50k rows per file) under a temporary file://
lake, starts an embedded PostgreSQL (or uses ``--database-url``, each variant in a fresh
database), and runs each variant in its own child process so that its peak RSS is its own:

* ``copy``      — ``hosepipe select`` as shipped: CSV → COPY straight into ``events`` (with
                  its indexes) inside a savepoint, falling back to the merge on a conflict;
                  checkpoint rows in the same transaction;
* ``copy+rule`` — the same plus the example ``orders`` projection rule (typed table);
* ``merge``     — the selector always going through the temp table + merge (what a reload
                  or a batch with replayed events does);
* ``insert``    — the selector with ``executemany`` INSERT ... ON CONFLICT (on fewer rows);
* ``plain-copy``— the ceiling: the same Parquet rows as CSV COPYed straight into a table of
                  the same shape and indexes (jsonb parsed by COPY), one transaction per
                  file, no savepoint, no checkpoint, no NOTIFY.

Prints rows/s, seconds and peak RSS per variant. ``plain-copy`` runs first and last: the
first run on a new server also pays for creating WAL segments (later runs recycle them).
"""

from __future__ import annotations

import argparse
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


def write_lake(lake_dir: Path, n: int) -> int:
    """N events in the lake layout; returns the number of files."""
    import pyarrow as pa

    from hosepipe.lake import (
        LakeLocation,
        LocalLakeStore,
        canonical_arrow_schema,
        data_file_key,
        parquet_bytes,
        partition_path,
    )

    store = LocalLakeStore(LakeLocation.parse(lake_dir.as_uri()))
    schema = canonical_arrow_schema()
    files = 0
    for start in range(0, n, ROWS_PER_FILE):
        count = min(ROWS_PER_FILE, n - start)
        source = "orders" if files % 2 else "clickstream"
        hour = files // 2
        occurred = [BASE_US + hour * 3_600_000_000 + i * 10_000 for i in range(count)]
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
        table = pa.Table.from_arrays(
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
            schema=schema,
        )
        directory = partition_path({"source": source, "occurred_at": occurred[0]}, ["source"])
        store.put(data_file_key(directory, "events.canonical", 0, start), parquet_bytes(table))
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


def run_variant(
    variant: str, lake_dir: Path, database_url: str, limit: int | None
) -> dict[str, Any]:
    """In a child process: load the lake with one variant; returns figures."""
    import pyarrow.dataset as ds
    import yaml

    from hosepipe.config import PipelineConfig
    from hosepipe.db import sync_engine
    from hosepipe.settings import Settings
    from selector.lakefiles import Lake
    from selector.runner import RunOptions, Selector
    from selector.schema import upgrade

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        lake_url=lake_dir.as_uri(),
        database_url=database_url,
    )
    rules = [ORDERS_RULE] if variant == "copy+rule" else []
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
                    "selection": {"rules": rules},
                }
            )
        )
    )
    engine = sync_engine(settings)
    upgrade(engine, pipeline.selection)
    lake = Lake.open(settings, ["source"])
    started = time.perf_counter()
    rows = 0
    if variant == "plain-copy":
        from selector.load import EVENT_COLUMNS, csv_chunks

        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE plain (LIKE events INCLUDING ALL)")
        for file in lake.list_files():
            for _, table in lake.read([file.path]):
                with engine.begin() as conn:
                    raw = conn.connection.dbapi_connection
                    with (
                        raw.cursor() as cur,
                        cur.copy(  # type: ignore[union-attr]
                            f"COPY plain ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT csv)"
                        ) as copy,
                    ):
                        for chunk in csv_chunks(table):
                            copy.write(chunk)
                rows += table.num_rows
    else:
        method = variant if variant in ("insert", "merge") else "copy"
        selector = Selector(
            engine,
            pipeline,
            lake,
            RunOptions(method=method, progress=False),  # type: ignore[arg-type]
        )
        if limit is not None:
            files = lake.list_files()
            keep = {f.path for f in sorted(files)[: max(1, limit // ROWS_PER_FILE)]}
            original = selector.plan
            selector.plan = lambda: [f for f in original() if f.path in keep]  # type: ignore[method-assign]
        summary = selector.run_once()
        rows = summary.rows.get("events", 0)
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        table = "plain" if variant == "plain-copy" else "events"
        stored = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
    engine.dispose()
    del ds
    return {
        "variant": variant,
        "rows": rows,
        "stored": stored,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds) if seconds else 0,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--events", type=int, default=1_000_000)
    parser.add_argument(
        "--insert-rows", type=int, default=200_000, help="rows for the slow executemany variant"
    )
    parser.add_argument("--database-url", help="an existing server (default: embedded PG)")
    parser.add_argument(
        "--variants",
        default="plain-copy,copy,merge,copy+rule,insert,plain-copy",
        help="comma separated",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("VARIANT", "LAKE", "URL"), help=argparse.SUPPRESS
    )
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, lake, url = args.child
        print(json.dumps(run_variant(variant, Path(lake), url, args.limit)))
        return

    with tempfile.TemporaryDirectory(prefix="hosepipe-bench-selector-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        files = write_lake(work / "lake", args.events)
        print(
            f"lake: {args.events:,} events in {files} files "
            f"({time.perf_counter() - started:.1f}s to write)",
            flush=True,
        )
        server = None
        admin_url = args.database_url
        if admin_url is None:
            from hosepipe.localstack.servers import free_port, start_postgres

            server = start_postgres(work / "pg", free_port(), durable=True)
            admin_url = server.url
        try:
            results = []
            for variant in args.variants.split(","):
                url = fresh_database(admin_url)
                command = [sys.executable, __file__, "--child", variant, str(work / "lake"), url]
                if variant == "insert":
                    command += ["--limit", str(args.insert_rows)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{variant}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                results.append(result)
                print(
                    f"{result['variant']:<11} {result['rows']:>10,} rows"
                    f"  {result['seconds']:>7.2f} s"
                    f"  {result['rows_per_s']:>9,} rows/s  peak RSS {result['peak_rss_mb']:>5} MB"
                    f"  (rows in table: {result['stored']:,})",
                    flush=True,
                )
        finally:
            if server is not None:
                server.stop()
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, date {time.strftime('%Y-%m-%d')}"
        )


if __name__ == "__main__":
    # This file is named like the `selector` package; as a script its directory comes first
    # on sys.path and would shadow the package.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    main()
