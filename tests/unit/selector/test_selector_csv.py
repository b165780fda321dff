"""The Arrow → CSV path used for COPY: attributes as JSON, timestamps PostgreSQL can read."""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from hypothesis import given
from hypothesis import strategies as st

from hosepipe.lake import events_to_table
from selector.load import (
    _attributes_json_slow,
    _origins_in,
    attributes_json,
    csv_events,
    event_id_shares,
    timestamp_text,
)

MAP = pa.map_(pa.string(), pa.string())
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@given(st.lists(st.dictionaries(text, text, max_size=4), max_size=30))
def test_attributes_json_matches_orjson(maps: list[dict[str, str]]) -> None:
    array = pa.array([list(m.items()) for m in maps], MAP)
    fast = attributes_json(array).to_pylist()
    assert [json.loads(s) for s in fast] == maps
    assert [json.loads(s) for s in _attributes_json_slow(array).to_pylist()] == maps


def test_attributes_json_of_a_slice_and_nulls() -> None:
    array = pa.array([[("a", "1")], None, [("b", 'x"\\')], []], MAP)
    assert [json.loads(s) for s in attributes_json(array.slice(1, 3)).to_pylist()] == [
        {},
        {"b": 'x"\\'},
        {},
    ]


def test_csv_events_round_trip() -> None:
    table = events_to_table(
        [
            {
                "event_id": "e,1",
                "source": "s",
                "event_type": 't"q',
                "occurred_at": 1_763_769_600_000_001,
                "ingested_at": 1_763_769_600_000_002,
                "subject": None,
                "payload": '{"a": "line\\nbreak"}',
                "attributes": {"k": "v"},
            }
        ]
    )
    rows = list(csv.reader(io.StringIO(csv_events(table).decode())))
    assert rows == [
        [
            "e,1",
            "s",
            't"q',
            "2025-11-22 00:00:00.000001Z",
            "2025-11-22 00:00:00.000002Z",
            "",
            '{"a": "line\\nbreak"}',
            '{"k":"v"}',
        ]
    ]
    assert b',,"{' in csv_events(table)  # a null subject is an unquoted empty field (NULL)


@given(
    st.lists(
        st.integers(min_value=0, max_value=253_402_300_799_999_999) | st.sampled_from([0, 1]),
        min_size=1,
        max_size=40,
    )
)
def test_timestamp_text_is_the_csv_writers_text(micros: list[int]) -> None:
    column = pa.array(micros, pa.timestamp("us", tz="UTC"))
    sink = io.BytesIO()
    pacsv.write_csv(pa.table({"t": column}), sink, pacsv.WriteOptions(include_header=False))
    expected = sink.getvalue().decode().splitlines()
    fast = timestamp_text(column)
    assert fast is not None
    assert fast.to_pylist() == expected


def test_timestamp_text_leaves_nulls_and_old_times_to_the_writer() -> None:
    assert timestamp_text(pa.array([1, None], pa.timestamp("us", tz="UTC"))) is None
    assert timestamp_text(pa.array([-1], pa.timestamp("us", tz="UTC"))) is None
    assert timestamp_text(pa.array([1], pa.timestamp("ms", tz="UTC"))) is None


def test_attributes_json_of_copy_chunks_of_a_bigger_batch() -> None:
    maps = [[("k", str(i)), ("j", "x")] if i % 3 else [] for i in range(50)]
    array = pa.array(maps, MAP)
    for start in (0, 7, 31):
        fast = attributes_json(array.slice(start, 13)).to_pylist()
        assert [json.loads(s) for s in fast] == [dict(m) for m in maps[start : start + 13]]


def slices(ids: pa.Array, parts: int) -> list[list[int]]:
    """The row numbers of each share."""
    return [pc.indices_nonzero(mask).to_pylist() for mask in event_id_shares(ids, parts)]


@given(
    st.lists(st.one_of(st.none(), st.text(max_size=4)), max_size=300),
    st.integers(min_value=1, max_value=8),
)
def test_event_id_shares_cover_every_row_once_and_keep_an_id_together(
    ids: list[str | None], parts: int
) -> None:
    shares = slices(pa.array(ids, pa.string()), parts)
    assert sorted(row for rows in shares for row in rows) == list(range(len(ids)))
    assert all(shares) and len(shares) <= parts
    home: dict[str | None, int] = {}
    for number, rows in enumerate(shares):
        for row in rows:
            assert home.setdefault(ids[row], number) == number


def test_event_id_shares_are_about_equal_also_from_a_sample() -> None:
    ids = pa.array([f"{n * 7919 % 100_003:06d}" for n in range(100_000)])
    sizes = [len(rows) for rows in slices(ids, 4)]
    assert len(sizes) == 4 and max(sizes) - min(sizes) <= 4_000  # bounds from ~2,000 ids
    assert [len(rows) for rows in slices(pa.array(["a"] * 9 + ["b"]), 2)] == [10]
    assert slices(pa.array([], pa.string()), 2) == []


def test_event_id_shares_from_a_sample_still_cover_every_row_once() -> None:
    # Past SPLIT_SAMPLE ids the bounds come from a sample: repeats and nulls stay correct.
    ids = [None if n % 97 == 0 else f"id{n * 31 % 1_500}" for n in range(10_000)]
    shares = slices(pa.array(ids, pa.string()), 3)
    assert len(shares) == 3
    assert sorted(row for rows in shares for row in rows) == list(range(len(ids)))
    home: dict[str | None, int] = {}
    for number, rows in enumerate(shares):
        for row in rows:
            assert home.setdefault(ids[row], number) == number


@given(st.lists(st.integers(0, 6), min_size=1, max_size=6), st.data())
def test_origins_of_kept_rows_follow_the_files_in_order(
    sizes: list[int], data: st.DataObject
) -> None:
    """The rows a mask keeps, counted per lake file (a file left empty is dropped): what
    names the file of a reject in a share or a rule's subset of the group."""
    origins = [(f"f{i}", size) for i, size in enumerate(sizes)]
    files = [path for path, size in origins for _ in range(size)]
    keep = data.draw(st.lists(st.booleans(), min_size=len(files), max_size=len(files)))
    expected: dict[str, int] = {}
    for path, kept in zip(files, keep, strict=True):
        if kept:
            expected[path] = expected.get(path, 0) + 1
    assert _origins_in(origins, pa.array(keep, pa.bool_())) == list(expected.items())
