"""Which files the selector loads next: pure decisions, no servers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selector.plan import (
    Checkpoint,
    LakeFile,
    Shard,
    files_to_load,
    parse_instant,
    partition_hour,
    partition_overlaps,
    shard_of,
)

P1 = "source=orders/dt=2025-11-22/hour=01"
P2 = "source=orders/dt=2025-11-22/hour=02"


def test_new_files_are_loaded_and_known_files_skipped() -> None:
    listed = [LakeFile(f"{P1}/t+0+1.parquet", 10, "a"), LakeFile(f"{P2}/t+0+2.parquet", 20, "b")]
    loaded = {f"{P1}/t+0+1.parquet": Checkpoint(10, "a")}
    assert files_to_load(listed, loaded) == [listed[1]]


def test_a_late_file_in_an_old_hour_is_new() -> None:
    old = LakeFile(f"{P1}/t+0+1.parquet", 10)
    late = LakeFile(f"{P1}/t+0+900.parquet", 5)
    assert files_to_load([old, late], {old.path: Checkpoint(10)}) == [late]


def test_a_rewritten_file_is_loaded_again() -> None:
    file = LakeFile(f"{P1}/t+0+1.parquet", 11, "new")
    assert files_to_load([file], {file.path: Checkpoint(10, "old")}) == [file]
    assert files_to_load([file], {file.path: Checkpoint(11, "old")}) == [file]
    assert files_to_load([file], {file.path: Checkpoint(11, None)}) == []


def test_partition_of_a_file() -> None:
    assert LakeFile(f"{P1}/x.parquet", 1).partition == P1
    assert LakeFile("x.parquet", 1).partition == ""


@given(
    partitions=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=60, unique=True),
    count=st.integers(min_value=1, max_value=9),
)
def test_shards_never_overlap_and_cover_everything(partitions: list[str], count: int) -> None:
    files = [LakeFile(f"{p}/f.parquet", 1) for p in partitions]
    picked = [set(files_to_load(files, {}, Shard(i, count))) for i in range(count)]
    assert sum(len(p) for p in picked) == len(files)
    assert set().union(*picked) == set(files)


def test_shard_hash_is_stable_across_runs() -> None:
    # Fixed expectations: a change of hash would move partitions between running pods.
    assert [shard_of(f"dt=2025-11-22/hour={h:02d}", 4) for h in range(6)] == [
        shard_of(f"dt=2025-11-22/hour={h:02d}", 4) for h in range(6)
    ]
    assert shard_of("source=orders/dt=2025-11-22/hour=01", 1) == 0
    assert (
        shard_of("a", 1000)
        == int.from_bytes(__import__("hashlib").sha256(b"a").digest()[:8], "big") % 1000
    )


@pytest.mark.parametrize(
    ("text", "shard"), [("0/1", Shard(0, 1)), ("3/4", Shard(3, 4)), (" 1 / 2 ", Shard(1, 2))]
)
def test_shard_parse(text: str, shard: Shard) -> None:
    assert Shard.parse(text) == shard


@pytest.mark.parametrize("text", ["4/4", "-1/2", "1", "a/b", "0/0"])
def test_shard_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        Shard.parse(text)


def test_partition_time_pruning() -> None:
    assert partition_hour(P1) == datetime(2025, 11, 22, 1, tzinfo=UTC)
    assert partition_hour("dt=2025-11-22") == datetime(2025, 11, 22, tzinfo=UTC)
    assert partition_hour("source=x") is None
    start = datetime(2025, 11, 22, 2, tzinfo=UTC)
    end = datetime(2025, 11, 22, 3, tzinfo=UTC)
    assert not partition_overlaps(P1, start, end)
    assert partition_overlaps(P2, start, end)
    assert not partition_overlaps("source=orders/dt=2025-11-22/hour=03", start, end)
    assert partition_overlaps("dt=2025-11-22", start, end)  # a whole day
    assert partition_overlaps("no-time", start, end)  # unknown layout: read it
    assert partition_overlaps(P1, None, None)


def test_parse_instant() -> None:
    assert parse_instant("2025-11-22", "--from") == datetime(2025, 11, 22, tzinfo=UTC)
    assert parse_instant("2025-11-22T05", "--from") == datetime(2025, 11, 22, 5, tzinfo=UTC)
    assert parse_instant("2025-11-22T06:00:00+01:00", "--to") == datetime(
        2025, 11, 22, 5, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="--to 'soon'"):
        parse_instant("soon", "--to")
