"""Raw records as they arrive: parsing request bodies, applying limits, choosing Kafka keys.

Pure functions only; the HTTP handlers, pollers and the bulk loader call them and do the I/O.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from streams.mapping import compile_event_id, json_text, loads_exact

if TYPE_CHECKING:
    from hosepipe.config import SourceConfig

MAX_KEY_BYTES = 256
"""A longer key is replaced by its SHA-256 (hex): equal ids still make equal keys, and a
record near the size limit is not pushed over the broker's by its key."""

_SEGMENT = re.compile(r"\.([A-Za-z0-9_@-]+)|\[(\d+)\]")


class BodyError(ValueError):
    """A request body that cannot be split into records; the message says where and why."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record ready to produce to ``raw.<source>``: its bytes and its Kafka key."""

    value: bytes
    key: bytes | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record refused before reaching Kafka, with a machine code and a human reason."""

    code: str
    reason: str


@functools.lru_cache(maxsize=4096)
def compile_path(path: str) -> tuple[str | int, ...]:
    """``$.a.b[0]`` → ``("a", "b", 0)``; raises ValueError for anything else."""
    if not path.startswith("$"):
        raise ValueError(f"path {path!r} must start with '$'")
    steps: list[str | int] = []
    position = 1
    for match in _SEGMENT.finditer(path, 1):
        if match.start() != position:
            raise ValueError(f"path {path!r} is malformed at character {position}")
        position = match.end()
        name, index = match.groups()
        steps.append(name if name is not None else int(index))
    if position != len(path):
        raise ValueError(f"path {path!r} is malformed at character {position}")
    return tuple(steps)


def lookup(document: Any, path: str) -> Any:
    """Value at ``$.a.b[0]`` in ``document``; ``None`` when any step is missing."""
    current = document
    for step in compile_path(path):
        if isinstance(step, str):
            if not isinstance(current, dict):
                return None
            current = current.get(step)
            if current is None:
                return None
        else:
            if not isinstance(current, list) or step >= len(current):
                return None
            current = current[step]
    return current


def key_of(document: Any, key_path: str | None) -> bytes | None:
    """Kafka key for a parsed record: the value at ``key_path`` as UTF-8 text, else ``None``."""
    if key_path is None:
        return None
    value = lookup(document, key_path)
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()


RecordKey = Callable[[Any], bytes | None]
"""A parsed raw record's Kafka key (``None``: unkeyed), see :func:`record_key`."""


def unkeyed(document: Any) -> None:
    """The :data:`RecordKey` of a source whose records cannot be keyed by their id."""
    return None


def bounded_key(key: bytes | None) -> bytes | None:
    """``key``, or its SHA-256 (hex) when it is longer than :data:`MAX_KEY_BYTES`."""
    if key is None or len(key) <= MAX_KEY_BYTES:
        return key
    return hashlib.sha256(key).hexdigest().encode()


def key_at(key_path: str) -> RecordKey:
    """The :data:`RecordKey` that reads the value at ``key_path`` (see :func:`key_of`)."""
    compile_path(key_path)  # a malformed path fails here, not per record

    def at_path(document: Any) -> bytes | None:
        return bounded_key(key_of(document, key_path))

    return at_path


def record_key(source: str, config: SourceConfig) -> RecordKey:
    """How ingest and pollers key ``source``'s raw records.

    The worker drops duplicates per raw partition, so every copy of an event must land in
    the same one (docs/streams.md, co-partitioning). ``key_path`` names the id when it is
    set. Otherwise a JSON source without a ``transform`` is keyed by the very ``event_id``
    its mapping gives the record (a field, or the hash of fields), so equal events get equal
    keys; a record without an id stays unkeyed (the worker dead-letters it). A ``transform``
    may change the fields the id is made of, and an Avro record is not parsed here: such a
    source is keyed only by its ``key_path``.
    """
    if config.key_path is not None:
        return key_at(config.key_path)
    if config.format != "json" or config.transform is not None:
        return unkeyed
    event_id = compile_event_id(source, config.mapping)

    def by_event_id(document: Any) -> bytes | None:
        if not isinstance(document, dict):
            return None
        try:
            value = event_id(document)
        except Exception:  # no id, or none that can be made: the worker decides
            return None
        return None if value is None else bounded_key(value.encode())

    return by_event_id


def key_of_bytes(data: bytes, key: RecordKey) -> bytes | None:
    """Kafka key for an opaque record (Firehose ``Data``): parsed as JSON when it is JSON."""
    if key is unkeyed:
        return None
    try:
        document = loads_exact(data)  # as the worker reads it: integers beyond 64 bits exact
    except orjson.JSONDecodeError:
        return None
    return key(document)


def split_body(
    body: bytes, content_type: str | None, key: RecordKey = unkeyed
) -> list[RawRecord | Rejected]:
    """Split a plain-endpoint body into per-record JSON texts.

    A body whose first non-blank byte is ``[`` is one JSON array (invalid JSON fails the whole
    request). Anything else is NDJSON: one JSON object per non-blank line; a bad line is
    rejected on its own so the good lines still go through.
    """
    stripped = body.lstrip()
    if not stripped:
        raise BodyError("the body is empty: send a JSON array or NDJSON lines")
    media = (content_type or "").split(";")[0].strip().lower()
    if stripped[:1] == b"[" and media != "application/x-ndjson":
        try:
            # Exact: orjson alone reads an integer beyond 64 bits as a float, and the
            # record written back would carry the rounded number (two ids, one event).
            parsed = loads_exact(body)
        except orjson.JSONDecodeError as exc:
            raise BodyError(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(parsed, list):
            raise BodyError("a JSON body must be an array of records")
        return [_array_item(item, i, key) for i, item in enumerate(parsed)]
    return [_checked_line(line, i, key) for i, line in enumerate(_lines(body))]


def _array_item(item: Any, index: int, key: RecordKey) -> RawRecord | Rejected:
    """One record of a JSON array body, written back as JSON text."""
    if not isinstance(item, dict):
        return Rejected("InvalidRecord", f"record {index} is not a JSON object")
    try:
        value = orjson.dumps(item)
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits, or nesting deeper than orjson writes (255 levels).
        try:
            value = json_text(item).encode()
        except RecursionError:
            return Rejected(
                "InvalidRecord",
                f"record {index} is nested too deeply to be written back; send it as an "
                "NDJSON line, which is kept byte for byte",
            )
    return RawRecord(value, key(item))


def _lines(body: bytes) -> Iterator[bytes]:
    for line in body.split(b"\n"):
        line = line.strip()
        if line:
            yield line


def _checked_line(line: bytes, index: int, key: RecordKey) -> RawRecord | Rejected:
    try:
        parsed = loads_exact(line) if key is not unkeyed else orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Rejected("InvalidRecord", f"line {index + 1} is not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        return Rejected("InvalidRecord", f"line {index + 1} is not a JSON object")
    return RawRecord(line, key(parsed))


def apply_record_limit(
    records: Iterable[RawRecord | Rejected], max_record_bytes: int
) -> list[RawRecord | Rejected]:
    """Reject records larger than ``max_record_bytes`` (each one on its own)."""
    return [
        Rejected(
            "RecordTooLarge",
            f"record {i} has {len(r.value)} bytes, more than the limit of {max_record_bytes}",
        )
        if isinstance(r, RawRecord) and len(r.value) > max_record_bytes
        else r
        for i, r in enumerate(records)
    ]


def source_allowed(allowed: Iterable[str], source: str) -> bool:
    """Whether a key's ``sources`` list (``*`` = all) admits ``source``."""
    return any(a == "*" or a == source for a in allowed)
