"""Backward compatibility of Avro schemas: can the new version read data of the old one?

Two independent checks, both must pass:

1. **Structural**, by the Avro spec's schema-resolution rules with the new schema as reader
   and the old one as writer: a field the reader adds needs a default; a field the reader
   drops is fine; a type may change only by promotion (int→long→float→double,
   string↔bytes); named types keep their name (or list the old one in ``aliases``); enums
   keep every old symbol unless the reader has a ``default``; fixed types keep their size;
   unions are resolved branch by branch.
2. **By example**: random records generated from the old schema (``fastavro.utils``) are
   written with it and read back with fastavro using the new schema as reader schema.

``check_schemas()`` runs them for every schema in ``schemas/`` against *every* version kept
in ``schemas/history/`` (backward transitive: data of any old version stays readable).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from schemas import Root, SchemaFileError, schema_names, schema_versions

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "enum", "fixed", "error"})
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}
SAMPLES = 25


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_strip_logical(item) for item in schema]
    return schema


class _Resolver:
    """Walks writer and reader schema side by side, collecting what the reader cannot read."""

    def __init__(self, writer_names: Mapping[str, Any], reader_names: Mapping[str, Any]) -> None:
        self.writer_names = writer_names
        self.reader_names = reader_names
        self.problems: list[str] = []
        self._seen: set[tuple[str, str]] = set()

    def _deref(self, schema: Any, names: Mapping[str, Any]) -> Any:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            return names[schema]
        return schema

    @staticmethod
    def _type(schema: Any) -> str:
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, dict):
            kind = schema["type"]
            return kind if isinstance(kind, str) else _Resolver._type(kind)
        return str(schema)

    def _problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path or '<root>'}: {message}")

    def readable(self, writer: Any, reader: Any) -> bool:
        """Whether reader accepts writer, without recording problems (for union branches)."""
        probe = _Resolver(self.writer_names, self.reader_names)
        probe._seen = set(self._seen)
        probe.check(writer, reader, "")
        return not probe.problems

    def check(self, writer: Any, reader: Any, path: str) -> None:
        writer = self._deref(writer, self.writer_names)
        reader = self._deref(reader, self.reader_names)
        w_type, r_type = self._type(writer), self._type(reader)

        if w_type == "union":
            for index, branch in enumerate(writer):
                self.check(branch, reader, f"{path}[union branch {index}]")
            return
        if r_type == "union":
            if not any(self.readable(writer, branch) for branch in reader):
                self._problem(path, f"old type {w_type} matches no branch of the new union")
            return
        if w_type != r_type:
            if r_type not in PROMOTIONS.get(w_type, frozenset()):
                self._problem(path, f"type changed from {w_type} to {r_type} (not a promotion)")
            return
        if w_type in NAMED and not self._same_name(writer, reader, path):
            return
        if w_type in {"record", "error"}:
            self._record(writer, reader, path)
        elif w_type == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                self._problem(path, f"enum symbols {missing} removed without an enum default")
        elif w_type == "fixed":
            if writer["size"] != reader["size"]:
                self._problem(path, f"fixed size changed from {writer['size']} to {reader['size']}")
        elif w_type == "array":
            self.check(writer["items"], reader["items"], f"{path}[]")
        elif w_type == "map":
            self.check(writer["values"], reader["values"], f"{path}{{}}")

    def _same_name(self, writer: Mapping[str, Any], reader: Mapping[str, Any], path: str) -> bool:
        w_name, r_name = writer["name"], reader["name"]
        aliases = reader.get("aliases", [])
        namespace = r_name.rpartition(".")[0]
        full_aliases = {a if "." in a or not namespace else f"{namespace}.{a}" for a in aliases}
        if w_name != r_name and w_name not in full_aliases and w_name not in aliases:
            self._problem(path, f"named type renamed from {w_name} to {r_name} without an alias")
            return False
        return True

    def _record(self, writer: Mapping[str, Any], reader: Mapping[str, Any], path: str) -> None:
        key = (writer["name"], reader["name"])
        if key in self._seen:  # recursive types: already being checked higher up
            return
        self._seen.add(key)
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            field_path = f"{path}.{field['name']}" if path else field["name"]
            names = [field["name"], *field.get("aliases", [])]
            old = next((writer_fields[n] for n in names if n in writer_fields), None)
            if old is None:
                if "default" not in field:
                    self._problem(field_path, "field added without a default")
            else:
                self.check(old["type"], field["type"], field_path)


def structural_problems(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What keeps ``new`` (reader) from reading data written with ``old`` (writer)."""
    writer_names: dict[str, Any] = {}
    reader_names: dict[str, Any] = {}
    writer = parse_schema(dict(old), writer_names, _write_hint=False)
    reader = parse_schema(dict(new), reader_names, _write_hint=False)
    resolver = _Resolver(writer_names, reader_names)
    resolver.check(writer, reader, "")
    return resolver.problems


def example_problems(
    old: Mapping[str, Any], new: Mapping[str, Any], samples: int = SAMPLES
) -> list[str]:
    """Write generated records with ``old``, read them with ``new``; report the first failure."""
    writer = parse_schema(_strip_logical(dict(old)))
    reader = parse_schema(_strip_logical(dict(new)))
    for index, record in enumerate(generate_many(writer, samples)):
        buffer = io.BytesIO()
        try:
            schemaless_writer(buffer, writer, record)
            buffer.seek(0)
            schemaless_reader(buffer, writer, reader)
        except Exception as exc:
            reason = repr(exc)
            if len(reason) > 300:  # fastavro errors can embed whole schemas
                reason = reason[:300] + "..."
            return [f"sample record {index} written with the old schema is unreadable: {reason}"]
    return []


def compatibility_problems(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Both checks for one (old, new) pair; empty when ``new`` is backward compatible."""
    try:
        problems = structural_problems(old, new)
    except Exception as exc:  # an invalid schema is a problem to report, not a crash
        return [f"not a valid Avro schema pair: {exc}"]
    return problems or example_problems(old, new)


def check_schemas(root: Root | None = None) -> list[str]:
    """Check every shipped schema against its previous versions; one line per problem.

    Each line names the current file, the old version and the field path, e.g.
    ``schemas/canonical_event.avsc (v3) cannot read schemas/history/canonical_event.v1.avsc:
    tenant: field added without a default``.
    """
    problems: list[str] = []
    for name in schema_names(root):
        try:
            versions = schema_versions(name, root)
        except SchemaFileError as exc:
            problems.append(str(exc))
            continue
        current = versions[-1]
        try:
            parse_schema(current.schema, _write_hint=False)
        except Exception as exc:
            problems.append(f"{current.origin}: not a valid Avro schema: {exc}")
            continue
        for old in versions[:-1]:
            prefix = f"{current.origin} (v{current.version}) cannot read {old.origin}"
            problems.extend(
                f"{prefix}: {problem}"
                for problem in compatibility_problems(old.schema, current.schema)
            )
    return problems
