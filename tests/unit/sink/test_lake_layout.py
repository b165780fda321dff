"""hosepipe.lake: layout, names, schema, Parquet and durable local writes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hosepipe import lake
from hosepipe.settings import Settings

T0 = 1_763_791_200_000_000  # 2025-11-22T06:00:00Z


def ev(n: int, occurred_at: int = T0, source: str = "web", etype: str = "click") -> dict:
    return {
        "event_id": f"e{n}",
        "source": source,
        "event_type": etype,
        "occurred_at": occurred_at,
        "ingested_at": T0,
        "subject": None if n % 2 else f"user{n}",
        "payload": f'{{"n": {n}}}',
        "attributes": {"k": str(n)} if n % 3 else {},
    }


def test_partition_path_and_keys() -> None:
    assert lake.partition_path(ev(1)) == "dt=2025-11-22/hour=06"
    assert (
        lake.partition_path(ev(1, source="a b", etype="x/y"), ["source", "event_type"])
        == "source=a%20b/event_type=x%2Fy/dt=2025-11-22/hour=06"
    )
    assert lake.partition_path(ev(1, occurred_at=-1)) == "dt=1969-12-31/hour=23"
    with pytest.raises(lake.LakeError, match="unknown lake partition key"):
        lake.check_partition_keys(["payload"])


@settings(deadline=None)  # a shared 2-core machine can stall one example past 200 ms
@given(st.integers(min_value=-(6 * 10**16), max_value=253_402_300_799_999_999))
def test_partition_path_matches_datetime(micros: int) -> None:
    when = datetime.fromtimestamp(micros // 1_000_000, tz=UTC)
    expected = f"dt={when.year:04d}-{when:%m-%d}/hour={when:%H}"  # years < 1000 zero-padded
    assert lake.partition_path({"occurred_at": micros}) == expected


@pytest.mark.parametrize(
    "micros",
    [
        -62_135_596_800_000_001,  # 1 µs before 0001-01-01
        253_402_300_800_000_000,  # 10000-01-01
        -(2**63),
        2**63 - 1,
    ],
)
def test_occurred_at_outside_years_1_to_9999_lands_in_dt_invalid(micros: int) -> None:
    assert lake.partition_path({"occurred_at": micros}) == lake.INVALID_TIME_PARTITION
    assert lake.INVALID_TIME_PARTITION == "dt=invalid/hour=00"


def test_first_and_last_valid_hours() -> None:
    assert lake.partition_path({"occurred_at": -62_135_596_800_000_000}) == "dt=0001-01-01/hour=00"
    assert lake.partition_path({"occurred_at": 253_402_300_799_999_999}) == "dt=9999-12-31/hour=23"


def test_stale_temp_files_removed_fresh_ones_kept(tmp_path: Path) -> None:
    import os

    store = lake.LocalLakeStore(lake.LakeLocation.parse(tmp_path.as_uri()))
    store.put("dt=2025-11-22/hour=06/t+0+00000000000000000001.parquet", b"x")
    hour = tmp_path / "dt=2025-11-22" / "hour=06"
    stale = hour / ".t+0+00000000000000000005.parquet.tmp-abc"
    fresh = hour / ".t+0+00000000000000000009.parquet.tmp-def"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (1, 1))
    assert store.remove_stale_temp_files(older_than=600) == 1
    assert not stale.exists() and fresh.exists()
    assert store.list() == ["dt=2025-11-22/hour=06/t+0+00000000000000000001.parquet"]


@given(
    st.from_regex(r"[a-zA-Z0-9._-]{1,249}", fullmatch=True),
    st.integers(0, 2**31),
    st.integers(0, 2**62),
)
def test_file_names_round_trip(topic: str, partition: int, offset: int) -> None:
    name = lake.data_file_name(topic, partition, offset)
    assert lake.parse_data_file_name(f"dt=x/hour=1/{name}") == (topic, partition, offset)


def test_file_names_sort_by_offset() -> None:
    names = [lake.data_file_name("t", 0, o) for o in (9, 10, 100)]
    assert names == sorted(names)


def test_schema_derived_from_avro() -> None:
    schema = lake.canonical_arrow_schema()
    assert schema.field("occurred_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("attributes").type == pa.map_(pa.string(), pa.string())
    assert schema.field("payload").type == pa.string()
    assert schema.field("subject").nullable and not schema.field("event_id").nullable
    with pytest.raises(lake.LakeError, match=r"R\.x"):
        lake.arrow_schema_from_avro({"name": "R", "fields": [{"name": "x", "type": "fixed"}]})


def test_parquet_bytes_compression_and_statistics() -> None:
    table = lake.events_to_table([ev(n) for n in range(5000)])
    for codec, expected in [("zstd", "ZSTD"), ("snappy", "SNAPPY"), ("none", "UNCOMPRESSED")]:
        import pyarrow.parquet as pq

        data = lake.parquet_bytes(table, codec, row_group_rows=2000)  # type: ignore[arg-type]
        meta = pq.ParquetFile(pa.BufferReader(data)).metadata
        assert meta.num_row_groups == 3
        column = meta.row_group(0).column(3)
        assert column.compression == expected
        assert column.statistics.has_min_max
        assert pq.read_table(pa.BufferReader(data)).equals(table)


def test_local_store_is_atomic_and_readable_with_pruning(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, lake_url=(tmp_path / "lake").as_uri())  # type: ignore[call-arg]
    store = lake.open_lake_store(settings)
    keys = ["source"]
    for hour in range(3):
        events = [
            ev(n, T0 + hour * 3_600_000_000, source="web" if n % 2 else "app") for n in range(10)
        ]
        by_dir: dict[str, list[dict]] = {}
        for e in events:
            by_dir.setdefault(lake.partition_path(e, keys), []).append(e)
        for directory, rows in by_dir.items():
            store.put(
                lake.data_file_key(directory, "events.canonical", 0, hour * 100),
                lake.parquet_bytes(lake.events_to_table(rows)),
            )
    listed = store.list()
    assert len(listed) == 6 and all(k.endswith(".parquet") for k in listed)
    assert not [p for p in (tmp_path / "lake").rglob("*") if ".tmp-" in p.name]
    # a leftover temp file (crash mid-write) is invisible to readers
    (
        tmp_path / "lake" / "source=web" / "dt=2025-11-22" / "hour=06" / ".x.parquet.tmp-1"
    ).write_bytes(b"junk")
    dataset = lake.lake_dataset(settings, keys)
    assert dataset.count_rows() == 30
    pruned = dataset.to_table(filter=(ds.field("hour") == 7) & (ds.field("source") == "web"))
    assert pruned.num_rows == 5 and set(pruned["hour"].to_pylist()) == {7}
    fragments = list(dataset.get_fragments(filter=ds.field("hour") == 7))
    assert len(fragments) == 2  # pruning by directory, not by scanning
    sql = lake.duckdb_read_parquet_sql(str(tmp_path / "lake" / "**" / "*.parquet"), keys)
    con = duckdb.connect()
    counts = con.execute(
        f"select count(*), count(distinct event_id) from {sql} where hour = 8 and dt = '2025-11-22'"
    ).fetchone()
    assert counts == (10, 10)
    typed = con.execute(
        f"select typeof(hour), typeof(dt), typeof(occurred_at) from {sql} limit 1"
    ).fetchone()
    assert typed == ("INTEGER", "VARCHAR", "TIMESTAMP WITH TIME ZONE")


def test_empty_lake_is_an_empty_dataset(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, lake_url=(tmp_path / "nothing").as_uri())  # type: ignore[call-arg]
    assert lake.lake_dataset(settings).count_rows() == 0


def test_location_parsing() -> None:
    loc = lake.LakeLocation.parse("s3://bucket/a/b/")
    assert (loc.bucket, loc.root, loc.path("dt=x/f.parquet")) == (
        "bucket",
        "a/b",
        "a/b/dt=x/f.parquet",
    )
    assert lake.LakeLocation.parse("s3://bucket").path("k") == "k"
    assert lake.LakeLocation.parse("file:///srv/lake").path("x") == "/srv/lake/x"
    with pytest.raises(lake.LakeError, match="no bucket"):
        lake.LakeLocation.parse("s3:///x")


def test_local_probe_creates_the_lake_directory_and_fails_on_a_file(tmp_path: Path) -> None:
    store = lake.LocalLakeStore(lake.LakeLocation.parse((tmp_path / "lake").as_uri()))
    store.probe()
    assert (tmp_path / "lake").is_dir()
    (tmp_path / "file").write_text("x")
    blocked = lake.LocalLakeStore(lake.LakeLocation.parse((tmp_path / "file" / "lake").as_uri()))
    with pytest.raises(lake.LakeError):
        blocked.probe()
