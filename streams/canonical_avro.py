"""A fast Avro writer for the canonical event, byte-for-byte what fastavro writes.

fastavro's ``schemaless_writer`` spends ~7 µs per canonical event on generic dispatch (schema
walk, union resolution, per-call setup), a third of the worker's whole budget per event.
The canonical schema is small and fixed, so this module writes its binary encoding directly
(Avro spec: zig-zag varint longs, length-prefixed UTF-8 strings, a union index, one map
block). It is used only when the encoder's schema has exactly the layout below
(:func:`fast_writer_for`); any other schema, and any event this writer refuses, goes through
fastavro. Unit tests compare both writers byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hosepipe.avro import AvroEncoder

EventWriter = Callable[[Sequence[Mapping[str, Any]]], list[bytes]]

# (field name, Avro type without logical types) of the layout this writer produces.
LAYOUT: tuple[tuple[str, Any], ...] = (
    ("event_id", "string"),
    ("source", "string"),
    ("event_type", "string"),
    ("occurred_at", "long"),
    ("ingested_at", "long"),
    ("subject", ["null", "string"]),
    ("payload", "string"),
    ("attributes", {"type": "map", "values": "string"}),
)

_LONG_MIN = -(1 << 63)
_LONG_MAX = (1 << 63) - 1


def _varint(zigzagged: int) -> bytes:
    out = bytearray()
    while zigzagged > 0x7F:
        out.append((zigzagged & 0x7F) | 0x80)
        zigzagged >>= 7
    out.append(zigzagged)
    return bytes(out)


# Encoded lengths/counts below 16 KiB come from a table (one list index instead of a loop).
_SMALL = [_varint(n << 1) for n in range(1 << 14)]
# Varints 14 bits at a time: _LAST[z] ends a varint, _MIDDLE[z] is two continuation bytes.
_LAST = [_varint(z) for z in range(1 << 14)]
_MIDDLE = [bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(1 << 14)]


def encode_long(value: int) -> bytes:
    """An Avro ``long`` (zig-zag varint); ValueError outside 64 bits, TypeError for non-ints."""
    if type(value) is not int:
        raise TypeError(f"expected an int, got {type(value).__name__}")
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise ValueError(f"{value} does not fit an Avro long (64 bits)")
    zigzagged = (value << 1) ^ (value >> 63)
    if zigzagged < 16384:
        return _LAST[zigzagged]
    middle = _MIDDLE
    parts = []
    while zigzagged >= 16384:
        parts.append(middle[zigzagged & 0x3FFF])
        zigzagged >>= 14
    parts.append(_LAST[zigzagged])
    return b"".join(parts)


def _plain_type(avro_type: Any) -> Any:
    if isinstance(avro_type, dict):
        plain = {k: _plain_type(v) for k, v in avro_type.items() if k != "logicalType"}
        return plain["type"] if set(plain) == {"type"} else plain
    if isinstance(avro_type, list):
        return [_plain_type(t) for t in avro_type]
    return avro_type


def has_canonical_layout(schema: Mapping[str, Any]) -> bool:
    """Whether ``schema``'s binary encoding is exactly :data:`LAYOUT` (defaults and docs aside)."""
    fields = schema.get("fields")
    if schema.get("type") != "record" or not isinstance(fields, list):
        return False
    layout = tuple((f.get("name"), _plain_type(f.get("type"))) for f in fields)
    return layout == LAYOUT


def write_events(
    header: bytes, events: Sequence[Mapping[str, Any]], texts: dict[str, bytes] | None = None
) -> list[bytes]:
    """``header`` + the Avro body of each event; raises TypeError/ValueError/KeyError when an
    event does not fit the layout (the caller then lets fastavro find and explain it).

    ``texts`` caches the encodings of short repeated strings (source, event type, attribute
    names and values); ids and payloads are never cached.
    """
    small = _SMALL
    last = _LAST
    middle = _MIDDLE
    cache: dict[str, bytes] = {} if texts is None else texts
    cached = cache.get

    def text(value: str) -> bytes:
        data = value.encode()
        size = len(data)
        encoded = (small[size] if size < 16384 else _varint(size << 1)) + data
        if size <= 64 and len(cache) < 4096:
            cache[value] = encoded
        return encoded

    def long(value: int) -> bytes:
        if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
            return encode_long(value)  # raises with the reason
        zigzagged = (value << 1) ^ (value >> 63)
        if zigzagged < 1 << 56:  # every time in µs up to year 3000: no loop, no list
            if zigzagged < 1 << 42:
                if zigzagged < 16384:
                    return last[zigzagged]
                if zigzagged < 1 << 28:
                    return middle[zigzagged & 0x3FFF] + last[zigzagged >> 14]
                return (
                    middle[zigzagged & 0x3FFF]
                    + middle[(zigzagged >> 14) & 0x3FFF]
                    + last[zigzagged >> 28]
                )
            return (
                middle[zigzagged & 0x3FFF]
                + middle[(zigzagged >> 14) & 0x3FFF]
                + middle[(zigzagged >> 28) & 0x3FFF]
                + last[zigzagged >> 42]
            )
        parts = []
        while zigzagged >= 16384:
            parts.append(middle[zigzagged & 0x3FFF])
            zigzagged >>= 14
        parts.append(last[zigzagged])
        return b"".join(parts)

    out: list[bytes] = []
    append = out.append
    join = b"".join
    # ingested_at repeats within a producer batch (record timestamps are in ms): one cache.
    last_ingested: Any = None
    last_ingested_bytes = b""
    for event in events:
        event_id = event["event_id"].encode()
        size = len(event_id)
        source = event["source"]
        event_type = event["event_type"]
        occurred_at = event["occurred_at"]
        ingested_at = event["ingested_at"]
        if ingested_at != last_ingested or type(ingested_at) is not int:
            last_ingested_bytes = long(ingested_at)
            last_ingested = ingested_at
        subject = event["subject"]
        if subject is None:
            subject_bytes = b"\x00"
        else:
            data = subject.encode()
            subject_size = len(data)
            subject_bytes = (
                b"\x02"
                + (small[subject_size] if subject_size < 16384 else _varint(subject_size << 1))
                + data
            )
        payload = event["payload"].encode()
        payload_size = len(payload)
        attributes = event["attributes"]
        if attributes:
            count = len(attributes)
            parts = [small[count] if count < 16384 else _varint(count << 1)]
            add = parts.append
            for key, value in attributes.items():
                add(cached(key) or text(key))
                add(cached(value) or text(value))
            add(b"\x00")
            attribute_bytes = join(parts)
        else:
            attribute_bytes = b"\x00"
        append(
            join(
                (
                    header,
                    small[size] if size < 16384 else _varint(size << 1),
                    event_id,
                    cached(source) or text(source),
                    cached(event_type) or text(event_type),
                    long(occurred_at),
                    last_ingested_bytes,
                    subject_bytes,
                    small[payload_size] if payload_size < 16384 else _varint(payload_size << 1),
                    payload,
                    attribute_bytes,
                )
            )
        )
    return out


def fast_writer_for(encoder: AvroEncoder) -> EventWriter:
    """A batch writer with ``encoder``'s header: this module's when the schema has the
    canonical layout, else ``encoder.encode_many`` (fastavro). Both raise ValueError (or a
    subclass) for an event they cannot write."""
    if not has_canonical_layout(encoder.schema):
        return encoder.encode_many  # type: ignore[return-value]
    header = encoder.header
    texts: dict[str, bytes] = {}

    def write(events: Sequence[Mapping[str, Any]]) -> list[bytes]:
        try:
            return write_events(header, events, texts)
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ValueError(f"cannot encode a canonical event as Avro: {exc!r}") from exc

    return write
