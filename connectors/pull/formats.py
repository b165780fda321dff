"""Read records from JSONL or CSV files, gzip or not, as a stream (never the whole file)."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from typing import IO, Any, Literal

import orjson

FileFormat = Literal["jsonl", "csv", "auto"]
GZIP_MAGIC = b"\x1f\x8b"


class FormatError(ValueError):
    """A file cannot be read as the format it claims; the message names file and line."""


def format_of(name: str, configured: str = "auto") -> Literal["jsonl", "csv"]:
    """The record format of a file: the configured one, else by suffix (``.csv[.gz]`` → csv)."""
    if configured in ("jsonl", "csv"):
        return configured  # type: ignore[return-value]
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".csv"):
        return "csv"
    if base.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise FormatError(f"{name}: cannot tell the format from the name; set format: jsonl or csv")


def open_text(raw: IO[bytes]) -> io.TextIOWrapper:
    """Text stream over ``raw``, decompressing when it starts with the gzip magic number."""
    buffered: Any = raw if hasattr(raw, "peek") else io.BufferedReader(raw)  # type: ignore[arg-type]
    head = buffered.peek(2)[:2]
    stream: Any = gzip.GzipFile(fileobj=buffered) if head == GZIP_MAGIC else buffered
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")


def iter_records(raw: IO[bytes], name: str, configured: str = "auto") -> Iterator[dict[str, Any]]:
    """Records of one file in order. Blank JSONL lines are skipped; CSV rows become dicts of
    strings keyed by the header row."""
    kind = format_of(name, configured)
    text = open_text(raw)
    if kind == "csv":
        yield from csv.DictReader(text)
        return
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise FormatError(f"{name}: line {number} is not valid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise FormatError(f"{name}: line {number} is not a JSON object")
        yield record
