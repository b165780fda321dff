"""Reading lake files: one GET each, conformed to the lake's schema, in order, read ahead."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hosepipe.lake import events_to_table, parquet_bytes
from selector.lakefiles import Lake
from selector.load import EVENT_COLUMNS
from selector.plan import LakeFile, parse_instant
from selector.runner import time_filter

HOUR_US = 3_600_000_000
BASE_US = 1_763_769_600_000_000  # 2025-11-22T00:00:00Z


def event(i: int) -> dict[str, object]:
    return {
        "event_id": f"e{i}",
        "source": "orders",
        "event_type": "created",
        "occurred_at": BASE_US + i * HOUR_US // 10,
        "ingested_at": BASE_US + i * HOUR_US // 10 + 5,
        "subject": f"s{i}",
        "payload": "{}",
        "attributes": {"k": str(i)},
    }


def write(base: Path, relative: str, data: bytes) -> LakeFile:
    path = base / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return LakeFile(relative, len(data))


def test_files_come_back_in_order_with_the_lakes_schema(tmp_path: Path) -> None:
    lake = Lake(pafs.LocalFileSystem(), str(tmp_path), ("source",))
    files = [
        write(
            tmp_path,
            f"source=orders/dt=2025-11-22/hour={n:02d}/events.canonical+0+{n}.parquet",
            parquet_bytes(events_to_table([event(10 * n + k) for k in range(n + 1)])),
        )
        for n in range(12)
    ]
    # A tiny read-ahead still keeps the order and hands out every file.
    got = list(lake.read(files, ahead_bytes=1, threads=3))
    assert [path for path, _ in got] == [f.path for f in files]
    assert [t.num_rows for _, t in got] == [n + 1 for n in range(12)]
    assert all(t.schema == lake.schema for _, t in got)
    assert lake.schema.names == list(EVENT_COLUMNS)
    start = parse_instant("2025-11-22T00:30", "--from")
    filtered = dict(lake.read([f.path for f in files[:2]], time_filter(start, None)))
    assert filtered[files[0].path].num_rows == 0
    assert filtered[files[1].path]["event_id"].to_pylist() == ["e10", "e11"]


def test_an_older_file_is_conformed(tmp_path: Path) -> None:
    lake = Lake(pafs.LocalFileSystem(), str(tmp_path))
    table = events_to_table([event(1), event(2)])
    older = table.drop_columns(["subject"]).set_column(
        0, "event_id", pa.array(["e1", "e2"], pa.large_string())
    )
    sink = pa.BufferOutputStream()
    pq.write_table(older, sink)
    file = write(tmp_path, "dt=2025-11-22/hour=00/t+0+0.parquet", sink.getvalue().to_pybytes())
    [(path, read)] = list(lake.read([file]))
    assert path == file.path
    assert read.schema == lake.schema
    assert read["subject"].to_pylist() == [None, None]
    assert read["event_id"].to_pylist() == ["e1", "e2"]


def test_closing_the_reader_early_stops_it(tmp_path: Path) -> None:
    lake = Lake(pafs.LocalFileSystem(), str(tmp_path))
    files = [
        write(
            tmp_path,
            f"dt=2025-11-22/hour=00/t+0+{n}.parquet",
            parquet_bytes(events_to_table([event(n)])),
        )
        for n in range(30)
    ]
    reader = lake.read(files)
    assert next(reader)[0] == files[0].path
    reader.close()
    assert list(reader) == []
