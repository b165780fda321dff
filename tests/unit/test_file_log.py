"""The file-log record: what the sink announces and the selector reads."""

from __future__ import annotations

import orjson
import pytest

from hosepipe.file_log import FileLogError, LandedFile, decode_landed, encode_landed


def test_a_record_names_its_files_in_order() -> None:
    files = [
        LandedFile("source=web/dt=2026-11-22/hour=07/events.canonical+0+10.parquet", 6144, 120),
        LandedFile("source=web/dt=2026-11-21/hour=23/events.canonical+1+4.parquet", 900, 3),
    ]
    value = encode_landed("events.canonical", {1: 40, 0: 130}, files)
    assert decode_landed(value, "here") == files
    record = orjson.loads(value)
    assert record["topic"] == "events.canonical"
    assert record["offsets"] == {"0": 130, "1": 40}


def test_rows_are_optional_when_reading() -> None:
    value = orjson.dumps({"v": 1, "files": [{"path": "a/b.parquet", "bytes": 5}]})
    assert decode_landed(value, "here") == [LandedFile("a/b.parquet", 5, 0)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "here: empty record"),
        (None, "here: empty record"),
        (b"{not json", "here: not JSON"),
        (b"[]", "here: unknown format version None"),
        (b'{"v": 2, "files": []}', "here: unknown format version 2"),
        (b'{"v": 1}', "here: 'files' is not a list"),
        (b'{"v": 1, "files": [{"path": "a"}]}', "here: files[0] needs a 'path' and integer"),
        (b'{"v": 1, "files": [{"path": "", "bytes": 1}]}', "files[0] needs a 'path'"),
        (b'{"v": 1, "files": ["a/b.parquet"]}', "files[0] needs a 'path'"),
    ],
)
def test_a_bad_record_names_where_and_what(value: bytes | None, message: str) -> None:
    with pytest.raises(FileLogError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_landed(value, "here")
