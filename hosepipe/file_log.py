"""The lake's file log: the sink announces each flush's files, the selector follows them.

Listing an S3 lake costs the server tens of microseconds per key, so a selector that lists
the whole lake on every pass gets dearer as the lake grows. Instead, once a flush's files
are durable and before its offsets are committed, the sink produces one record to the
single-partition topic ``topics.file_log`` naming them; ``select --follow`` reads the
records after its stored position and loads just those files (a full listing only at start
and every ``selection.rescan_interval``).

A crash between the announcement and the commit replays the batch: the same files are
rewritten (deterministic names) and announced again, and the selector loads them again
(upserts, so PostgreSQL still holds each event once). Nothing is announced before it is
durable, so a file named in the log can be read.

A flush is announced in one record (several for more than 1,000 files), produced and
waited for before the commit. Readers take the log's end from fetch responses, never from
ListOffsets, which Tansu answers wrong on S3 storage (see LOCAL_SERVICES.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from hosepipe.settings import Settings

FORMAT_VERSION = 1


class FileLogError(Exception):
    """A file-log record cannot be decoded or the topic cannot be created; says which."""


@dataclass(frozen=True)
class LandedFile:
    """A lake file announced in the log (path relative to the lake root)."""

    path: str
    bytes: int
    rows: int


def encode_landed(topic: str, offsets: Mapping[int, int], files: Sequence[LandedFile]) -> bytes:
    """The log record of one flush: the canonical topic, next offsets, the durable files."""
    return orjson.dumps(
        {
            "v": FORMAT_VERSION,
            "topic": topic,
            "offsets": {str(partition): offset for partition, offset in sorted(offsets.items())},
            "files": [{"path": f.path, "bytes": f.bytes, "rows": f.rows} for f in files],
        }
    )


def decode_landed(value: bytes | None, where: str) -> list[LandedFile]:
    """The files of a log record; :class:`FileLogError` names ``where`` and what is wrong."""
    if not value:
        raise FileLogError(f"{where}: empty record")
    try:
        record: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise FileLogError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(record, dict) or record.get("v") != FORMAT_VERSION:
        version = record.get("v") if isinstance(record, dict) else None
        raise FileLogError(f"{where}: unknown format version {version!r}")
    files = record.get("files")
    if not isinstance(files, list):
        raise FileLogError(f"{where}: 'files' is not a list")
    landed = []
    for index, item in enumerate(files):
        path = item.get("path") if isinstance(item, dict) else None
        size = item.get("bytes") if isinstance(item, dict) else None
        rows = item.get("rows", 0) if isinstance(item, dict) else None
        if not isinstance(path, str) or not path or not isinstance(size, int):
            raise FileLogError(f"{where}: files[{index}] needs a 'path' and integer 'bytes'")
        landed.append(LandedFile(path, size, rows if isinstance(rows, int) else 0))
    return landed


def ensure_file_log_topic(settings: Settings, topic: str, replication_factor: int = 1) -> None:
    """Create the single-partition file-log topic unless it exists (7 days' retention)."""
    from confluent_kafka import KafkaException

    from hosepipe.kafka import ensure_single_partition_topic

    config = {"retention.ms": "604800000", "retention.bytes": "-1"}
    try:
        ensure_single_partition_topic(settings, topic, config, replication_factor)
    except KafkaException as exc:
        raise FileLogError(f"creating file-log topic {topic!r}: {exc.args[0]}") from exc
