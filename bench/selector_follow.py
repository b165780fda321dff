"""What one ``select --follow`` pass costs as the lake grows: listing it vs reading the file log.

    .venv/bin/python bench/selector_follow.py        # lakes of 1,000 / 5,000 / 20,000 files
    .venv/bin/python bench/selector_follow.py --sizes 2000,10000 --new 20 --passes 5

Starts the embedded servers as ``hosepipe up`` does (SeaweedFS S3, Tansu with its topics in
S3, PostgreSQL), fills the lake with small files already in the checkpoint (what a stack
that has run for a while holds), then for each lake size writes ``--new`` new files (one
sink flush) and announces them in the file log, and times one follower pass each way, side by
side in the same process and lake:

* ``listing``: the follower as it was: list the whole lake, read the whole checkpoint,
  load what is new;
* ``file log``: read the records after the stored position, load the files they name.

Prints wall seconds per pass and CPU seconds of this process (the selector), SeaweedFS,
Tansu and PostgreSQL (process trees, psutil), as medians over ``--passes`` passes.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import text

from hosepipe.file_log import LandedFile, encode_landed, ensure_file_log_topic
from hosepipe.kafka import make_producer
from hosepipe.lake import (
    data_file_key,
    events_to_table,
    open_lake_store,
    parquet_bytes,
)
from selector.runner import RunOptions
from selector.service import build_selector

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

HOUR_US = 3_600_000_000
BASE_US = 1_763_769_600_000_000  # 2025-11-22T00:00Z


def load_e2e() -> Any:
    spec = importlib.util.spec_from_file_location("bench_e2e", HERE / "e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_e2e"] = module
    spec.loader.exec_module(module)
    return module


def small_file(n: int, rows: int = 20) -> tuple[str, bytes]:
    """Lake key and Parquet bytes of file ``n``: ``rows`` late events in one of 60 hours."""
    hour = n % 60
    source = "orders" if n % 2 else "clickstream"
    events = [
        {
            "event_id": f"f{n}-{i}",
            "source": source,
            "event_type": "created",
            "occurred_at": BASE_US + hour * HOUR_US + i,
            "ingested_at": BASE_US + hour * HOUR_US + i,
            "subject": f"c{i % 7}",
            "payload": f'{{"id": "o{i}", "total": {{"amount": "1.50", "currency": "EUR"}}}}',
            "attributes": {},
        }
        for i in range(rows)
    ]
    at = datetime.fromtimestamp((BASE_US + hour * HOUR_US) / 1e6, UTC)
    directory = f"source={source}/dt={at:%Y-%m-%d}/hour={at:%H}"
    return data_file_key(directory, "events.canonical", n % 4, n), parquet_bytes(
        events_to_table(events)
    )


class Cpu:
    """CPU seconds of this process and of each server's process tree."""

    def __init__(self, servers: dict[str, Any]) -> None:
        self.processes = {name: psutil.Process(s.server.pid) for name, s in servers.items()}

    def sample(self) -> dict[str, float]:
        out = {"selector": sum(psutil.Process().cpu_times()[:2])}
        for name, process in self.processes.items():
            total = 0.0
            for p in [process, *process.children(recursive=True)]:
                try:
                    times = p.cpu_times()
                    total += times.user + times.system
                except psutil.NoSuchProcess:
                    continue
            out[name] = total
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1000,5000,20000", help="lake sizes in files")
    parser.add_argument("--new", type=int, default=60, help="new files per pass (one flush)")
    parser.add_argument("--passes", type=int, default=3, help="passes per variant and size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    e2e = load_e2e()
    work = Path(tempfile.mkdtemp(prefix="hosepipe-bench-follow-"))
    stack = e2e.start_stack(work, REPO / "hosepipe.yaml", "s3")
    try:
        settings, pipeline = stack.settings, stack.pipeline
        ensure_file_log_topic(settings, pipeline.topics.file_log)
        store = open_lake_store(settings)
        producer = make_producer(settings, **{"linger.ms": 0})
        options = RunOptions(progress=False)
        listing = build_selector(settings, pipeline, options)
        following = build_selector(settings, pipeline, options, follow=True)
        cpu = Cpu(stack.servers)
        pool = ThreadPoolExecutor(16)
        written = 0

        def write(count: int, checkpoint: bool) -> list[LandedFile]:
            nonlocal written
            files = list(pool.map(small_file, range(written, written + count)))
            written += count
            list(pool.map(lambda kv: store.put(*kv), files))
            landed = [LandedFile(k, len(v), 20) for k, v in files]
            if checkpoint:
                with listing.engine.begin() as conn:
                    conn.execute(
                        text(
                            "INSERT INTO selector_files (path, partition, size, etag, rows)"
                            " SELECT p, regexp_replace(p, '/[^/]*$', ''), s, NULL, 20"
                            " FROM unnest(CAST(:p AS text[]), CAST(:s AS bigint[])) AS t(p, s)"
                        ),
                        {"p": [f.path for f in landed], "s": [f.bytes for f in landed]},
                    )
            return landed

        def announce(files: list[LandedFile]) -> None:
            producer.produce(pipeline.topics.file_log, encode_landed("events.canonical", {}, files))
            assert producer.flush(30) == 0

        following.run_once()  # takes the log's position; the next listing is an hour away
        results: list[tuple[int, str, float, dict[str, float]]] = []
        for size in sizes:
            if written < size:
                started = time.monotonic()
                write(size - written, checkpoint=True)
                print(f"lake at {size:,} files ({time.monotonic() - started:.0f} s)", flush=True)
            for variant, selector in (("listing", listing), ("file log", following)):
                for _ in range(args.passes):
                    announce(write(args.new, checkpoint=False))
                    before, started = cpu.sample(), time.monotonic()
                    summary = selector.run_once()
                    wall = time.monotonic() - started
                    after = cpu.sample()
                    assert summary.files == args.new, (variant, summary.files)
                    if variant == "listing":
                        following.run_once()  # moves its log position on; not measured
                    results.append((size, variant, wall, {k: after[k] - before[k] for k in after}))
        print()
        print(
            f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
            f"Python {platform.python_version()}"
        )
        print(
            f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.new} new files per pass, "
            f"median of {args.passes} passes"
        )
        print(
            "| lake files | discovery | wall s | selector CPU s | SeaweedFS CPU s "
            "| Tansu CPU s | PostgreSQL CPU s |"
        )
        print("|---|---|---|---|---|---|---|")
        for size in sizes:
            for variant in ("listing", "file log"):
                rows = [r for r in results if r[0] == size and r[1] == variant]
                med = {k: statistics.median(r[3][k] for r in rows) for k in rows[0][3]}
                wall = statistics.median(r[2] for r in rows)
                print(
                    f"| {size:,} | {variant} | {wall:.3f} | {med['selector']:.3f} | "
                    f"{med['s3']:.3f} | {med['broker']:.3f} | {med['postgres']:.3f} |"
                )
        listing.engine.dispose()
        following.engine.dispose()
        if following.file_log is not None:
            following.file_log.close()
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
