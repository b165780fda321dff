"""Backward compatibility check: shipped schemas pass, deliberately broken pairs fail."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hosepipe.schema_compat import (
    check_schemas,
    compatibility_problems,
    example_problems,
    structural_problems,
)
from schemas import CANONICAL_EVENT, load_schema, schema_versions

BASE = load_schema(CANONICAL_EVENT)


def evolve(change: str) -> dict[str, Any]:
    """A new version of the canonical event with one kind of change."""
    new = copy.deepcopy(BASE)
    fields = {f["name"]: f for f in new["fields"]}
    if change == "add_without_default":
        new["fields"].append({"name": "tenant", "type": "string"})
    elif change == "add_with_default":
        new["fields"].append({"name": "tenant", "type": "string", "default": "main"})
    elif change == "remove_field":
        new["fields"] = [f for f in new["fields"] if f["name"] != "payload"]
    elif change == "string_to_int":
        fields["event_type"]["type"] = "int"
    elif change == "string_to_bytes":
        fields["event_type"]["type"] = "bytes"
    elif change == "long_to_double":
        fields["occurred_at"]["type"] = "double"
    elif change == "long_to_int":
        fields["occurred_at"]["type"] = "int"
    elif change == "nullable_to_required":
        fields["subject"]["type"] = "string"
        del fields["subject"]["default"]
    elif change == "required_to_nullable":
        fields["source"]["type"] = ["null", "string"]
    elif change == "map_values_change":
        fields["attributes"]["type"] = {"type": "map", "values": "int"}
    elif change == "rename_record":
        new["name"] = "Event"
    elif change == "rename_record_with_alias":
        new["name"] = "Event"
        new["aliases"] = ["CanonicalEvent"]
    elif change == "rename_field_with_alias":
        fields["subject"]["name"] = "entity"
        fields["subject"]["aliases"] = ["subject"]
    elif change == "rename_field":
        fields["payload"]["name"] = "body"
    else:
        raise AssertionError(change)
    return new


COMPATIBLE = [
    "add_with_default",
    "remove_field",
    "string_to_bytes",
    "long_to_double",
    "required_to_nullable",
    "rename_record_with_alias",
    "rename_field_with_alias",
]
INCOMPATIBLE = {
    "add_without_default": "tenant: field added without a default",
    "string_to_int": "event_type: type changed from string to int",
    "long_to_int": "occurred_at: type changed from long to int",
    "nullable_to_required": "subject",
    "map_values_change": "attributes{}: type changed from string to int",
    "rename_record": "renamed from io.hosepipe.CanonicalEvent to io.hosepipe.Event",
    "rename_field": "body: field added without a default",
}


@pytest.mark.parametrize("change", COMPATIBLE)
def test_compatible_changes_pass_both_checks(change: str) -> None:
    new = evolve(change)
    assert structural_problems(BASE, new) == []
    assert example_problems(BASE, new) == []


@pytest.mark.parametrize(("change", "expected"), INCOMPATIBLE.items())
def test_incompatible_changes_are_named(change: str, expected: str) -> None:
    problems = structural_problems(BASE, evolve(change))
    assert problems and expected in problems[0]


@pytest.mark.parametrize("change", sorted(INCOMPATIBLE))
def test_examples_catch_incompatible_changes_on_their_own(change: str) -> None:
    assert example_problems(BASE, evolve(change))


def test_enum_and_fixed_rules() -> None:
    def with_field(type_: Any) -> dict[str, Any]:
        return {"type": "record", "name": "R", "fields": [{"name": "f", "type": type_}]}

    old_enum = with_field({"type": "enum", "name": "E", "symbols": ["A", "B"]})
    dropped = with_field({"type": "enum", "name": "E", "symbols": ["A"]})
    dropped_with_default = with_field(
        {"type": "enum", "name": "E", "symbols": ["A", "Z"], "default": "Z"}
    )
    assert "enum symbols ['B'] removed" in compatibility_problems(old_enum, dropped)[0]
    assert compatibility_problems(old_enum, dropped_with_default) == []
    assert (
        "fixed size changed from 4 to 8"
        in compatibility_problems(
            with_field({"type": "fixed", "name": "F", "size": 4}),
            with_field({"type": "fixed", "name": "F", "size": 8}),
        )[0]
    )


def test_invalid_schema_is_a_problem_not_a_crash() -> None:
    problems = compatibility_problems(BASE, {"type": "record", "name": "X", "fields": "nope"})
    assert problems and "not a valid Avro schema" in problems[0]


def write_tree(root: Path, current: dict[str, Any], *history: dict[str, Any]) -> Path:
    (root / "history").mkdir(parents=True, exist_ok=True)
    (root / "canonical_event.avsc").write_text(json.dumps(current))
    for number, schema in enumerate(history, start=1):
        (root / "history" / f"canonical_event.v{number}.avsc").write_text(json.dumps(schema))
    return root


def test_shipped_schemas_are_compatible() -> None:
    assert check_schemas() == []


def test_check_schemas_passes_a_compatible_history(tmp_path: Path) -> None:
    root = write_tree(tmp_path, evolve("add_with_default"), BASE)
    assert check_schemas(root) == []
    assert [v.version for v in schema_versions(CANONICAL_EVENT, root)] == [1, 2]


def test_check_schemas_fails_naming_files_and_field(tmp_path: Path) -> None:
    root = write_tree(tmp_path, evolve("add_without_default"), BASE)
    problems = check_schemas(root)
    assert problems == [
        "schemas/canonical_event.avsc (v2) cannot read schemas/history/canonical_event.v1.avsc: "
        "tenant: field added without a default"
    ]


def test_check_is_transitive_over_all_kept_versions(tmp_path: Path) -> None:
    # v1 -> v2 drops subject (fine); v3 brings it back as required: v2 data lacks it.
    v2 = copy.deepcopy(BASE)
    v2["fields"] = [f for f in v2["fields"] if f["name"] != "subject"]
    v3 = evolve("nullable_to_required")
    root = write_tree(tmp_path, v3, BASE, v2)
    problems = check_schemas(root)
    assert any("canonical_event.v1.avsc" in p for p in problems)
    assert any(
        "canonical_event.v2.avsc: subject: field added without a default" in p for p in problems
    )


def test_unreadable_schema_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "history").mkdir()
    (tmp_path / "canonical_event.avsc").write_text("{not json")
    problems = check_schemas(tmp_path)
    assert problems and "schemas/canonical_event.avsc" in problems[0]
