"""Avro serde of canonical events: Confluent wire format or Avro single-object encoding.

Wire formats (ARCHITECTURE.md, "Wire format"):

- **Confluent** (``settings.schema_registry_url`` set): ``0x00`` + 4-byte big-endian schema id +
  Avro binary body. The schema is registered under subject ``<topic>-value`` through
  confluent-kafka's ``SchemaRegistryClient``; readers fetch writer schemas by id.
- **Single-object** (no registry): ``0xC3 0x01`` + 8-byte little-endian CRC-64-AVRO
  fingerprint of the schema's parsing canonical form + Avro binary body. Readers find the
  writer schema by fingerprint among every version shipped in ``schemas/`` (current and
  ``schemas/history/``), so data written by an older version stays readable.

A decoder accepts both formats (told apart by the first byte) and resolves every writer
schema to the current reader schema (Avro schema resolution by fastavro).

Python representation: an event is a plain ``dict``; ``occurred_at``/``ingested_at`` are
``int`` microseconds since the epoch, UTC — never ``datetime``. The shipped schemas keep the
``timestamp-micros`` logical type (other readers get timestamps), but the hot path encodes
and decodes with copies of the schemas whose ``logicalType`` annotations are removed: the
bytes are identical (logical types do not change the encoding or the fingerprint) and
fastavro then neither converts ints to datetimes on read nor inspects them on write.

The encoder's header is computed once; ``encode_many``/``decode_many`` are the batch APIs
(reuse one buffer, no per-record setup).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas import CANONICAL_EVENT, Root, schema_versions

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from hosepipe.settings import Settings

Event = dict[str, Any]

CONFLUENT_MAGIC = 0x00
CONFLUENT_HEADER_SIZE = 5
SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE = 10


class SerdeError(ValueError):
    """A record cannot be encoded or a message cannot be decoded; the message says why."""


class UnknownSchemaError(SerdeError):
    """The message names a writer schema (fingerprint or registry id) this reader cannot find."""


# --------------------------------------------------------------------------- pure helpers


def strip_logical_types(schema: Any) -> Any:
    """A deep copy of ``schema`` without ``logicalType`` annotations (same binary encoding)."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(item) for item in schema]
    return schema


def schema_fingerprint(schema: Mapping[str, Any] | str) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of the parsing canonical form, little-endian.

    fastavro renders the Rabin fingerprint as hex in little-endian byte order already, which
    is the order the single-object header carries.
    """
    plain = dict(schema) if isinstance(schema, Mapping) else schema
    canonical = to_parsing_canonical_form(parse_schema(plain, _write_hint=False))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def single_object_header(schema: Mapping[str, Any]) -> bytes:
    """``C3 01`` + fingerprint: the prefix of every single-object message of ``schema``."""
    return SINGLE_OBJECT_MARKER + schema_fingerprint(schema)


def confluent_header(schema_id: int) -> bytes:
    """``00`` + 4-byte big-endian registry id: the Confluent wire-format prefix."""
    if not 0 <= schema_id < 2**31:
        raise SerdeError(f"schema id {schema_id} does not fit the Confluent wire format")
    return bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")


def _hot_schema(schema: Mapping[str, Any]) -> Any:
    return parse_schema(strip_logical_types(schema))


def _reason(exc: Exception) -> str:
    reason = repr(exc)
    return reason if len(reason) <= 300 else reason[:300] + "..."  # fastavro may dump schemas


def _describe(record: Any) -> str:
    if isinstance(record, Mapping) and "event_id" in record:
        return f"event {record['event_id']!r}"
    return f"record of type {type(record).__name__}"


# --------------------------------------------------------------------------- encoder


class AvroEncoder:
    """Encodes dicts to ``header + Avro body``; header fixed at construction."""

    def __init__(self, schema: Mapping[str, Any], header: bytes, wire_format: str) -> None:
        self.schema = dict(schema)
        self.header = header
        self.wire_format = wire_format
        self._parsed = _hot_schema(schema)

    # A fresh BytesIO per record measured faster than reusing one (truncate costs more).
    def encode(self, record: Mapping[str, Any]) -> bytes:
        """One record to one message value."""
        buffer = io.BytesIO()
        buffer.write(self.header)
        try:
            schemaless_writer(buffer, self._parsed, record)
        except Exception as exc:
            raise SerdeError(f"cannot encode {_describe(record)} as Avro: {_reason(exc)}") from exc
        return buffer.getvalue()

    def encode_many(self, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        """A batch of records to message values, in order."""
        header = self.header
        parsed = self._parsed
        new_buffer = io.BytesIO
        out: list[bytes] = []
        append = out.append
        record: Any = None
        try:
            for record in records:
                buffer = new_buffer()
                buffer.write(header)
                schemaless_writer(buffer, parsed, record)
                append(buffer.getvalue())
        except Exception as exc:
            where = f"{_describe(record)} (batch index {len(out)})"
            raise SerdeError(f"cannot encode {where} as Avro: {_reason(exc)}") from exc
        return out


# --------------------------------------------------------------------------- decoder

RegistryLookup = Callable[[int], Mapping[str, Any]]


class AvroDecoder:
    """Decodes both wire formats to dicts of the current (reader) schema.

    ``known`` maps single-object fingerprints to writer schemas; ``registry_lookup`` (when a
    registry is configured) returns the writer schema JSON of a registry id.
    """

    def __init__(
        self,
        reader_schema: Mapping[str, Any],
        known: Mapping[bytes, Mapping[str, Any]],
        registry_lookup: RegistryLookup | None = None,
    ) -> None:
        self.reader_schema = dict(reader_schema)
        self._reader = _hot_schema(reader_schema)
        self._reader_fingerprint = schema_fingerprint(reader_schema)
        # value: (writer schema, reader schema or None when both are the same)
        self._by_fingerprint: dict[bytes, tuple[Any, Any]] = {
            fp: self._pair(fp, schema) for fp, schema in known.items()
        }
        self._by_id: dict[int, tuple[Any, Any]] = {}
        self._registry_lookup = registry_lookup

    def _pair(self, fp: bytes, writer: Mapping[str, Any]) -> tuple[Any, Any]:
        if fp == self._reader_fingerprint:
            return self._reader, None  # same layout: no resolution needed
        return _hot_schema(writer), self._reader

    def _writer_for_id(self, schema_id: int) -> tuple[Any, Any]:
        pair = self._by_id.get(schema_id)
        if pair is not None:
            return pair
        if self._registry_lookup is None:
            raise UnknownSchemaError(
                f"message in Confluent wire format names schema id {schema_id}, but no schema "
                "registry is configured (HOSEPIPE_SCHEMA_REGISTRY_URL)"
            )
        try:
            writer = self._registry_lookup(schema_id)
        except Exception as exc:
            raise UnknownSchemaError(
                f"schema id {schema_id}: not found in the schema registry: {exc}"
            ) from exc
        pair = self._pair(schema_fingerprint(writer), writer)
        self._by_id[schema_id] = pair
        return pair

    def _writer_for(self, data: bytes) -> tuple[Any, Any, int]:
        if data[:2] == SINGLE_OBJECT_MARKER:
            fp = data[2:SINGLE_OBJECT_HEADER_SIZE]
            pair = self._by_fingerprint.get(fp)
            if pair is None or len(fp) != 8:
                raise UnknownSchemaError(
                    f"single-object message names schema fingerprint {fp.hex()}, which is "
                    "not among the schemas shipped in schemas/ (current or history)"
                )
            return pair[0], pair[1], SINGLE_OBJECT_HEADER_SIZE
        if data[:1] == b"\x00" and len(data) >= CONFLUENT_HEADER_SIZE:
            schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")
            writer, reader = self._writer_for_id(schema_id)
            return writer, reader, CONFLUENT_HEADER_SIZE
        raise SerdeError(
            f"not an Avro message: starts with {data[:4].hex() or 'nothing'}, expected "
            "c301 (single-object) or 00 (Confluent wire format)"
        )

    def decode(self, data: bytes) -> Event:
        """One message value to one event dict."""
        writer, reader, offset = self._writer_for(data)
        buffer = io.BytesIO(data)
        buffer.seek(offset)
        try:
            record = schemaless_reader(buffer, writer, reader)
        except Exception as exc:
            raise SerdeError(
                f"cannot decode Avro body ({len(data)} bytes): {_reason(exc)}"
            ) from exc
        if buffer.tell() != len(data):
            raise SerdeError(
                f"Avro body has {len(data) - buffer.tell()} trailing bytes ({len(data)} bytes)"
            )
        return record  # type: ignore[return-value]

    def current_body_offset(self, data: bytes) -> int | None:
        """Header size of ``data`` when its writer schema is the reader schema, else None.

        Such a body has exactly the reader's field layout, which is what the column-wise
        decoder (:mod:`hosepipe.avro_arrow`) needs; None also for unknown or bad headers.
        """
        if data[:2] == SINGLE_OBJECT_MARKER:
            fp = data[2:SINGLE_OBJECT_HEADER_SIZE]
            return SINGLE_OBJECT_HEADER_SIZE if fp == self._reader_fingerprint else None
        if data[:1] == b"\x00" and len(data) >= CONFLUENT_HEADER_SIZE:
            try:
                _, reader, _ = self._writer_for(data)
            except SerdeError:
                return None
            return CONFLUENT_HEADER_SIZE if reader is None else None
        return None

    def decode_many(self, values: Sequence[bytes]) -> list[Event]:
        """A batch of message values to event dicts, in order."""
        decode = self.decode
        return [decode(value) for value in values]


# --------------------------------------------------------------------------- factories


def shipped_writer_schemas(
    name: str = CANONICAL_EVENT, root: Root | None = None
) -> dict[bytes, dict[str, Any]]:
    """Fingerprint → schema for every shipped version of ``name`` (newest wins on ties)."""
    return {schema_fingerprint(v.schema): v.schema for v in schema_versions(name, root)}


def registry_client(settings: Settings) -> SchemaRegistryClient:
    """A SchemaRegistryClient for ``settings.schema_registry_url`` (with its options)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    if not settings.schema_registry_url:
        raise SerdeError("HOSEPIPE_SCHEMA_REGISTRY_URL is not set")
    conf = {**settings.schema_registry_options, "url": settings.schema_registry_url}
    return SchemaRegistryClient(conf)


def subject_for(topic: str) -> str:
    """The registry subject of a topic's values (TopicNameStrategy)."""
    return f"{topic}-value"


def register_schema(client: SchemaRegistryClient, topic: str, schema: Mapping[str, Any]) -> int:
    """Register ``schema`` under ``<topic>-value`` (idempotent) and return its id."""
    from confluent_kafka.schema_registry import Schema

    subject = subject_for(topic)
    try:
        return int(client.register_schema(subject, Schema(json.dumps(schema), "AVRO")))
    except Exception as exc:
        raise SerdeError(f"registering the schema under subject {subject!r}: {exc}") from exc


def make_encoder(
    settings: Settings,
    topic: str,
    schema_name: str = CANONICAL_EVENT,
    *,
    client: SchemaRegistryClient | None = None,
) -> AvroEncoder:
    """The encoder for ``topic``: Confluent wire format with a registry, else single-object.

    With a registry this registers the current schema (network I/O, once).
    """
    from schemas import load_schema

    schema = load_schema(schema_name)
    if settings.schema_registry_url:
        client = client or registry_client(settings)
        schema_id = register_schema(client, topic, schema)
        return AvroEncoder(schema, confluent_header(schema_id), "confluent")
    return AvroEncoder(schema, single_object_header(schema), "single-object")


def make_decoder(
    settings: Settings,
    schema_name: str = CANONICAL_EVENT,
    *,
    client: SchemaRegistryClient | None = None,
) -> AvroDecoder:
    """A decoder for both wire formats; registry ids resolve only when a registry is set."""
    from schemas import load_schema

    lookup: RegistryLookup | None = None
    if settings.schema_registry_url:
        registry = client or registry_client(settings)

        def lookup(schema_id: int) -> Mapping[str, Any]:
            found = registry.get_schema(schema_id)
            if (found.schema_type or "AVRO") != "AVRO" or found.schema_str is None:
                raise SerdeError(f"schema id {schema_id} is a {found.schema_type} schema")
            loaded: Mapping[str, Any] = json.loads(found.schema_str)
            return loaded

    return AvroDecoder(load_schema(schema_name), shipped_writer_schemas(schema_name), lookup)
