"""JSON paths (``$.a.b``, ``$.list[0]``) compiled once into plain getter functions.

The config model (:data:`hosepipe.config.JSON_PATH`) accepts only dot notation from the root
with optional list indexes, so compiling is a split, and a lookup is a short loop of
``dict.get`` / index steps: no parser runs per record.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MISSING: Any = object()
"""Returned by a getter when the path does not exist in a record (distinct from ``None``)."""

_STEP = re.compile(r"\.([A-Za-z0-9_@-]+)|\[(\d+)\]")

Step = str | int
Getter = Callable[[Any], Any]


def parse_path(path: str) -> tuple[Step, ...]:
    """``"$.a.b[0]"`` → ``("a", "b", 0)``; raises ValueError naming the path when unsupported."""
    if not path.startswith("$"):
        raise ValueError(f"path {path!r} must start with '$'")
    steps: list[Step] = []
    position = 1
    for match in _STEP.finditer(path, 1):
        if match.start() != position:
            break
        name, index = match.groups()
        steps.append(name if name is not None else int(index))
        position = match.end()
    if position != len(path):
        raise ValueError(f"path {path!r}: cannot parse at character {position}")
    return tuple(steps)


def compile_path(path: str) -> Getter:
    """A function ``record -> value`` for ``path``, returning :data:`MISSING` when absent."""
    steps = parse_path(path)
    if not steps:
        return lambda record: record
    if len(steps) == 1 and isinstance(steps[0], str):
        key = steps[0]

        def get_one(record: Any) -> Any:
            if type(record) is dict:
                return record.get(key, MISSING)
            return MISSING

        return get_one

    def get(record: Any) -> Any:
        value = record
        for step in steps:
            if isinstance(step, str):
                if type(value) is not dict:
                    return MISSING
                value = value.get(step, MISSING)
                if value is MISSING:
                    return MISSING
            else:
                if type(value) is not list or step >= len(value):
                    return MISSING
                value = value[step]
        return value

    return get


def delete_path(record: Any, steps: tuple[Step, ...]) -> None:
    """Remove the value at ``steps`` from ``record`` in place; prune dicts left empty.

    List elements are never removed (that would shift the other indexes); a path ending in
    an index, or going through one, leaves the list as it is.
    """
    if not steps:
        return
    parents: list[tuple[dict[str, Any], str]] = []
    value = record
    for step in steps[:-1]:
        if isinstance(step, int) or type(value) is not dict or step not in value:
            return
        parents.append((value, step))
        value = value[step]
    last = steps[-1]
    if isinstance(last, int) or type(value) is not dict or last not in value:
        return
    del value[last]
    # Drop containers the removal emptied, so {"user": {"id": 1}} minus $.user.id is {}.
    while parents and not value:
        parent, key = parents.pop()
        del parent[key]
        value = parent
