"""Avro message values → Arrow columns, decoded column by column with pyarrow compute.

fastavro decodes one record at a time into a dict (about 10 µs per canonical event here),
which caps a Python sink far below the broker's rate. Records of one schema have the same
field sequence, so a batch can be decoded *field by field across all records* instead: keep
one read position per record (an int64 array), read the field's varint or string for every
record at once with vectorized kernels, advance the positions, go on with the next field.
Strings never become Python objects; their bytes are gathered into Arrow string arrays
directly. About 3 µs per canonical event here against fastavro's 9-10 µs.

Supported field types (anything else means "no fast path", callers use fastavro):
``string``, ``long``/``int``, ``["null", "string"]`` unions (either order) and
``map<string>``. Logical types do not change the encoding and are ignored here.

Only messages whose writer schema *is* the reader schema take this path
(:meth:`hosepipe.avro.AvroDecoder.current_body_offset`); a malformed body (position out of
range, negative length, trailing bytes, invalid UTF-8) makes :meth:`ArrowBatchDecoder.decode`
raise :class:`FastPathError`, and the caller decodes that batch record by record, which
routes the bad records to the DLQ with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hosepipe.avro import AvroDecoder

_U64 = pa.uint64()
_I64 = pa.int64()
_SEVEN_BITS = pa.scalar(0x7F, _U64)
_ONE = pa.scalar(1, _U64)
_MAX_VARINT_BYTES = 10

STRING, LONG, INT, OPTIONAL_STRING, STRING_MAP = "string", "long", "int", "ostring", "map"
Kind = str


class FastPathError(ValueError):
    """The batch cannot be decoded column-wise; decode it record by record instead."""


def field_kind(avro_type: Any) -> Kind | None:
    """The fast-path kind of an Avro field type, or None when it is not supported."""
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind == "map":
            return STRING_MAP if field_kind(avro_type.get("values")) == STRING else None
        if kind in ("string", "long", "int") and set(avro_type) <= {"type", "logicalType"}:
            return field_kind(kind)
        return None
    if isinstance(avro_type, list):
        if len(avro_type) == 2 and "null" in avro_type:
            other = avro_type[1] if avro_type[0] == "null" else avro_type[0]
            return OPTIONAL_STRING if field_kind(other) == STRING else None
        return None
    return {"string": STRING, "long": LONG, "int": INT}.get(avro_type)


def record_plan(schema: Mapping[str, Any]) -> list[tuple[str, Kind, int]] | None:
    """``(name, kind, branch of the string in a union)`` per field, or None if unsupported."""
    plan = []
    for field in schema.get("fields", []):
        kind = field_kind(field["type"])
        if kind is None:
            return None
        branch = 0
        if kind == OPTIONAL_STRING:
            branch = 0 if field["type"][0] != "null" else 1
        plan.append((field["name"], kind, branch))
    return plan


@dataclass
class _Reader:
    """Read positions of every record into one buffer of concatenated message values."""

    data: pa.UInt8Array
    size: int

    def byte(self, positions: pa.Int64Array) -> pa.Array:
        if len(positions) and pc.max(positions).as_py() >= self.size:
            raise FastPathError("read past the end of a message")
        return pc.take(self.data, positions).cast(_U64)

    def long(
        self, positions: pa.Int64Array, active: pa.BooleanArray | None = None
    ) -> tuple[pa.Int64Array, pa.Int64Array]:
        """Zigzag varints at ``positions`` (only where ``active``): values, new positions."""
        if active is not None:
            positions_in = positions
            positions = pc.if_else(active, positions, 0)
        b = self.byte(positions)
        result = pc.bit_wise_and(b, _SEVEN_BITS)
        more = pc.greater_equal(b, pa.scalar(0x80, _U64))
        if active is not None:
            more = pc.and_(more, active)
        positions = pc.add(positions, 1)
        shift = 7
        while pc.any(more).as_py():
            if shift >= 7 * _MAX_VARINT_BYTES:
                raise FastPathError("varint longer than 10 bytes")
            b = self.byte(pc.if_else(more, positions, 0))
            part = pc.shift_left(pc.bit_wise_and(b, _SEVEN_BITS), pa.scalar(shift, _U64))
            result = pc.if_else(more, pc.bit_wise_or(result, part), result)
            positions = pc.if_else(more, pc.add(positions, 1), positions)
            more = pc.and_(more, pc.greater_equal(b, pa.scalar(0x80, _U64)))
            shift += 7
        magnitude = pc.cast(pc.shift_right(result, _ONE), _I64, safe=False)
        sign = pc.negate(pc.cast(pc.bit_wise_and(result, _ONE), _I64))
        values = pc.bit_wise_xor(magnitude, sign)
        if active is not None:
            values = pc.if_else(active, values, 0)
            positions = pc.if_else(active, positions, positions_in)
        return values, positions

    def gather(self, starts: pa.Int64Array, offsets: pa.Int64Array) -> pa.Array:
        """The bytes of the ranges ``[starts[i], starts[i] + length i)``, concatenated.

        ``offsets`` are the output offsets (0, then the running sum of the lengths). Every
        output byte ``k`` of range ``i`` comes from ``starts[i] + (k - offsets[i])``; the range
        of each output byte is found with ``list_parent_indices`` (faster than flattening a
        list view, which copies range by range).
        """
        count = len(starts)
        total = offsets[count].as_py()
        ranges = pa.LargeListArray.from_arrays(offsets, pa.nulls(total, pa.uint8()))
        owner = pc.list_parent_indices(ranges)
        output_index = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, _I64), total)), 1)
        shift = pc.subtract(starts, offsets.slice(0, count))
        return pc.take(self.data, pc.add(pc.take(shift, owner), output_index))

    def strings(
        self, starts: pa.Int64Array, lengths: pa.Int64Array, valid: pa.BooleanArray | None
    ) -> pa.Array:
        """A string array of the byte ranges ``[start, start + length)``."""
        if len(lengths) and pc.min(lengths).as_py() < 0:
            raise FastPathError("negative string length")
        offsets = pa.concat_arrays([pa.array([0], _I64), pc.cumulative_sum(lengths).cast(_I64)])
        values = self.gather(starts, offsets)
        mask = None if valid is None else valid.buffers()[1]
        data = values.buffers()[1]
        if data is None or len(values) == 0:
            data = pa.py_buffer(b"")
        elif values.offset:
            data = data.slice(values.offset)
        array = pa.LargeStringArray.from_buffers(len(lengths), offsets.buffers()[1], data, mask)
        try:
            array.validate(full=True)  # UTF-8
        except pa.ArrowInvalid as exc:
            raise FastPathError(f"string is not UTF-8: {exc}") from exc
        return array.cast(pa.string())

    def string(
        self, positions: pa.Int64Array, active: pa.BooleanArray | None = None
    ) -> tuple[pa.Array, pa.Int64Array]:
        lengths, positions = self.long(positions, active)
        values = self.strings(positions, lengths, active)
        return values, pc.add(positions, lengths)


class ArrowBatchDecoder:
    """Decodes many message values of the current schema into one Arrow table."""

    def __init__(self, decoder: AvroDecoder) -> None:
        self.decoder = decoder
        self.plan = record_plan(decoder.reader_schema)

    @property
    def available(self) -> bool:
        """Whether the reader schema has only field types the fast path supports."""
        return self.plan is not None

    def decode(self, values: Sequence[bytes]) -> pa.Table:
        """All ``values`` as a table (columns in schema order; strings, int64, maps).

        Raises :class:`FastPathError` when any value is not of the current schema or is
        malformed; nothing is partially returned.
        """
        if self.plan is None:
            raise FastPathError("the reader schema has field types without a fast path")
        offset = self.decoder.current_body_offset
        header_sizes = [offset(v) for v in values]
        if None in header_sizes:
            raise FastPathError("some values were written with another schema")
        lengths = [len(v) for v in values]
        ends = list(accumulate(lengths))
        starts = [end - length for end, length in zip(ends, lengths, strict=True)]
        buffer = pa.py_buffer(b"".join(values))
        size = len(buffer)
        reader = _Reader(pa.UInt8Array.from_buffers(pa.uint8(), size, [None, buffer]), size)
        positions = pa.array(
            [s + h for s, h in zip(starts, header_sizes, strict=True)],  # type: ignore[operator]
            _I64,
        )
        columns: dict[str, pa.Array] = {}
        for name, kind, branch in self.plan:
            if kind == STRING:
                columns[name], positions = reader.string(positions)
            elif kind in (LONG, INT):
                column, positions = reader.long(positions)
                columns[name] = column if kind == LONG else column.cast(pa.int32())
            elif kind == OPTIONAL_STRING:
                index, positions = reader.long(positions)
                present = pc.equal(index, branch)
                if not pc.all(pc.or_(present, pc.equal(index, 1 - branch))).as_py():
                    raise FastPathError(f"{name}: union branch out of range")
                columns[name], positions = reader.string(positions, present)
            else:
                columns[name], positions = _read_map(reader, positions)
        if not pc.all(pc.equal(positions, pa.array(ends, _I64))).as_py():
            raise FastPathError("a message has trailing bytes after its Avro body")
        return pa.table(columns)


def _read_map(reader: _Reader, positions: pa.Int64Array) -> tuple[pa.Array, pa.Int64Array]:
    """``map<string>`` fields of every record: Avro blocks of (key, value) pairs."""
    rows = len(positions)
    record_ids = pa.array(range(rows), _I64)
    entry_records: list[pa.Array] = []
    key_at: list[pa.Array] = []
    key_len: list[pa.Array] = []
    value_at: list[pa.Array] = []
    value_len: list[pa.Array] = []
    active = pa.array([True] * rows)
    counts = pa.array([0] * rows, _I64)
    while pc.any(active).as_py():
        block, positions = reader.long(positions, active)
        negative = pc.less(block, 0)
        if pc.any(negative).as_py():  # a negative count is followed by the block's byte size
            _, positions = reader.long(positions, pc.and_(active, negative))
            block = pc.abs(block)
        active = pc.and_(active, pc.greater(block, 0))
        j = 0
        while True:
            here = pc.and_(active, pc.greater(block, j))
            if not pc.any(here).as_py():
                break
            lengths, positions = reader.long(positions, here)
            if len(lengths) and pc.min(lengths).as_py() < 0:
                raise FastPathError("negative map key length")
            key_start = positions
            positions = pc.if_else(here, pc.add(positions, lengths), positions)
            v_lengths, positions = reader.long(positions, here)
            if len(v_lengths) and pc.min(v_lengths).as_py() < 0:
                raise FastPathError("negative map value length")
            entry_records.append(record_ids.filter(here))
            key_at.append(key_start.filter(here))
            key_len.append(lengths.filter(here))
            value_at.append(positions.filter(here))
            value_len.append(v_lengths.filter(here))
            positions = pc.if_else(here, pc.add(positions, v_lengths), positions)
            j += 1
        counts = pc.add(counts, pc.if_else(active, block, 0))
    offsets = pa.concat_arrays(
        [pa.array([0], pa.int32()), pc.cumulative_sum(counts).cast(pa.int32())]
    )
    if entry_records:
        order = pc.sort_indices(pa.concat_arrays(entry_records))  # stable: keeps entry order
        keys = reader.strings(
            pa.concat_arrays(key_at).take(order), pa.concat_arrays(key_len).take(order), None
        )
        items = reader.strings(
            pa.concat_arrays(value_at).take(order),
            pa.concat_arrays(value_len).take(order),
            None,
        )
    else:
        keys = items = pa.array([], pa.string())
    return pa.MapArray.from_arrays(offsets, keys, items), positions
