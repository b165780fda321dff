"""What PostgreSQL cannot store: the NUL character in text and jsonb values.

PostgreSQL text cannot hold U+0000 (COPY refuses the byte: ``CharacterNotInRepertoire``)
and jsonb refuses it too, also as the JSON escape ``\\u0000`` (``UntranslatableCharacter``),
although such a payload is valid JSON and the lake holds it fine. Such a row would make
every load of its lake file fail, so the loader screens batches first and records these
rows in ``rejected_rows`` instead.

The screen first searches each column's character data in one pass (a regex over the
Arrow buffer, no copy: ~10 ms per 40 MB); only a column whose data holds a NUL byte or the
text ``\u0000`` pays for the per-row Arrow kernels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

NUL = "\x00"
NUL_ESCAPE = "\\u0000"
# The escape \u0000 in JSON text, not preceded by an escaped backslash (`\\u0000` is the
# six characters \u0000, which jsonb stores fine).
_JSON_NUL = r"(?:^|[^\\])(?:\\\\)*\\u0000"
_NUL_BYTE = re.compile(b"\x00")
_ESCAPE_BYTES = re.compile(rb"\\u0000")
TEXT_COLUMNS = ("event_id", "source", "event_type", "subject")
JSON_TEXT_COLUMNS = ("payload",)
MAP_COLUMNS = ("attributes",)


def nul_reason(columns: list[str]) -> str:
    """The rejected_rows reason for a NUL in ``columns``."""
    return (
        f"{', '.join(columns)}: contains a NUL character (U+0000, \\u0000), "
        "which PostgreSQL text and jsonb cannot store"
    )


def unstorable_rows(table: pa.Table) -> dict[int, str]:
    """Rows of an events-shaped ``table`` holding a NUL: row index → reason naming columns.

    Looks at the text columns (``event_id``, ``source``, ``event_type``, ``subject``), the
    payload's JSON text (a raw NUL or the escape ``\\u0000``) and the attributes' keys and
    values. Empty (the common case) costs one substring scan per column.
    """
    flagged: dict[int, list[str]] = {}
    for name, mask in _masks(table):
        for index in _true_indices(mask):
            flagged.setdefault(index, []).append(name)
    return {index: nul_reason(names) for index, names in sorted(flagged.items())}


def _masks(table: pa.Table) -> list[tuple[str, pa.ChunkedArray]]:
    masks: list[tuple[str, pa.ChunkedArray]] = []
    names = set(table.column_names)
    for name in TEXT_COLUMNS:
        if name in names and _may_hold(table[name].chunks, _NUL_BYTE):
            masks.append((name, pc.match_substring(table[name], NUL)))
    for name in JSON_TEXT_COLUMNS:
        if name in names:
            column = table[name]
            mask = None
            if _may_hold(column.chunks, _NUL_BYTE):
                mask = pc.match_substring(column, NUL)
            if _may_hold(column.chunks, _ESCAPE_BYTES):
                # Tell the escape from an escaped backslash followed by "u0000".
                escaped = pc.match_substring_regex(column, _JSON_NUL)
                mask = escaped if mask is None else pc.or_(mask, escaped)
            if mask is not None:
                masks.append((name, mask))
    for name in MAP_COLUMNS:
        if name in names:
            column = table[name]
            children = [a for c in column.chunks for a in (c.keys, c.items)]
            if _may_hold(children, _NUL_BYTE):
                masks.append((name, _map_mask(column)))
    return masks


def _may_hold(arrays: list[pa.Array], pattern: re.Pattern[bytes]) -> bool:
    """Whether the character data of ``arrays`` may contain ``pattern`` (a search of the
    whole data buffer, also bytes outside a slice: a hit is checked per row later)."""
    for array in arrays:
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            return True  # no plain data buffer to search: let the kernels decide
        data = array.buffers()[2]
        if data is not None and pattern.search(memoryview(data)) is not None:
            return True
    return False


def _map_mask(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Which rows of a ``map<string,string>`` column have a NUL in a key or a value."""
    parts = []
    for chunk in column.chunks:
        # .keys/.items are the whole child arrays; .offsets index them (also when sliced).
        hit = pc.or_(pc.match_substring(chunk.keys, NUL), pc.match_substring(chunk.items, NUL))
        if not pc.any(hit).as_py():
            parts.append(pa.repeat(pa.scalar(False), len(chunk)))
            continue
        # NULs up to each child position; a row has one when its range's count grows.
        flags = pc.cast(hit.fill_null(False), pa.int64())
        counts = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(flags)])
        offsets = chunk.offsets
        starts, ends = offsets.slice(0, len(chunk)), offsets.slice(1, len(chunk))
        parts.append(pc.greater(pc.take(counts, ends), pc.take(counts, starts)))
    return pa.chunked_array(parts, pa.bool_())


def _true_indices(mask: pa.ChunkedArray) -> list[int]:
    if not pc.any(mask).as_py():
        return []
    return [int(i) for i in pc.indices_nonzero(mask).to_pylist()]


def escape_nul(value: Any) -> Any:
    """``value`` (str, dict, list, nested) with every NUL written as the text ``\\u0000``,
    so that a rejected row can be recorded (and read) in PostgreSQL."""
    if isinstance(value, str):
        return value.replace(NUL, NUL_ESCAPE) if NUL in value else value
    if isinstance(value, Mapping):
        return {escape_nul(k): escape_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_nul(v) for v in value]
    return value


def has_nul(value: Any) -> bool:
    """Whether ``value`` (a string or a parsed JSON value) holds a NUL anywhere."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, Mapping):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False
