"""Avro schemas shipped with hosepipe, as package data.

Layout (the versioning scheme ``hosepipe schemas check`` relies on):

- ``schemas/<name>.avsc`` is the *current* version of schema ``<name>``; writers use it.
- ``schemas/history/<name>.v<N>.avsc`` are frozen *previous* versions, ``N`` = 1, 2, ...
  The current version is implicitly ``max(N) + 1`` (``1`` when there is no history).

To evolve a schema: copy the current file to ``history/<name>.v<N>.avsc`` (next free N),
then edit ``<name>.avsc``. Every version stays shipped so that data written with it can be
decoded (single-object encoding finds the writer schema by fingerprint) and so that the
compatibility check can compare the new version against all old ones.

Functions take an optional ``root`` (a directory) so tests can point them at a tmp dir.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

SUFFIX = ".avsc"
HISTORY_DIR = "history"
_HISTORY_NAME = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")

CANONICAL_EVENT = "canonical_event"

Root = Traversable | Path


class SchemaFileError(Exception):
    """A schema file is missing, unreadable or not JSON; the message names the file."""


@dataclass(frozen=True)
class SchemaVersion:
    """One version of a schema: its number, where it came from and its JSON."""

    name: str
    version: int
    origin: str
    schema: dict[str, Any]


def _root(root: Root | None) -> Root:
    return root if root is not None else resources.files(__name__)


def _read_json(file: Traversable | Path, origin: str) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SchemaFileError(f"{origin}: no such schema file") from exc
    except (OSError, ValueError) as exc:
        raise SchemaFileError(f"{origin}: not a readable JSON schema: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemaFileError(f"{origin}: expected a JSON object (an Avro record schema)")
    return data


def schema_names(root: Root | None = None) -> list[str]:
    """Names of the current schemas (``<name>.avsc`` files), sorted."""
    base = _root(root)
    return sorted(
        item.name[: -len(SUFFIX)]
        for item in base.iterdir()
        if item.is_file() and item.name.endswith(SUFFIX)
    )


def load_schema(name: str, root: Root | None = None) -> dict[str, Any]:
    """The current version of schema ``name`` as a JSON dict (``schemas/<name>.avsc``)."""
    return _read_json(_root(root).joinpath(name + SUFFIX), f"schemas/{name}{SUFFIX}")


def schema_history(name: str, root: Root | None = None) -> list[SchemaVersion]:
    """Previous versions of ``name`` kept in ``schemas/history/``, oldest first."""
    history = _root(root).joinpath(HISTORY_DIR)
    if not history.is_dir():
        return []
    found: list[SchemaVersion] = []
    for item in history.iterdir():
        match = _HISTORY_NAME.match(item.name)
        if match and match["name"] == name:
            origin = f"schemas/{HISTORY_DIR}/{item.name}"
            found.append(
                SchemaVersion(name, int(match["version"]), origin, _read_json(item, origin))
            )
    return sorted(found, key=lambda v: v.version)


def schema_versions(name: str, root: Root | None = None) -> list[SchemaVersion]:
    """Every version of ``name``, oldest first; the last one is the current file."""
    history = schema_history(name, root)
    current_version = history[-1].version + 1 if history else 1
    current = SchemaVersion(
        name, current_version, f"schemas/{name}{SUFFIX}", load_schema(name, root)
    )
    return [*history, current]
