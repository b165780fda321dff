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
    if len(steps) == 2 and isinstance(steps[0], str) and isinstance(steps[1], str):
        outer, inner = steps

        def get_two(record: Any) -> Any:  # $.a.b: the most common nested path, unrolled
            if type(record) is dict:
                child = record.get(outer)
                if type(child) is dict:
                    return child.get(inner, MISSING)
            return MISSING

        return get_two

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


_LEAF: Any = object()
RemovalTree = dict[str, Any]


def _removal_tree(paths: list[tuple[Step, ...]]) -> RemovalTree:
    """Nested dict of the keys to remove; ``_LEAF`` marks a removed value.

    Paths that go through a list index are left out (:func:`delete_path` never removes
    there); a shorter path wins over a longer one below it.
    """
    tree: RemovalTree = {}
    for steps in sorted((s for s in paths if s), key=len):
        if any(isinstance(step, int) for step in steps):
            continue
        node = tree
        for step in steps[:-1]:
            child = node.setdefault(step, {})  # type: ignore[arg-type]
            if child is _LEAF:
                break
            node = child
        else:
            node[steps[-1]] = _LEAF  # type: ignore[index]
    return tree


Level = Callable[[dict[str, Any]], tuple[dict[str, Any], bool]]


def _compile_level(tree: RemovalTree) -> Level:
    """``node -> (node minus tree, changed?)``; untouched nodes are returned as they are."""
    leaves = tuple(key for key, sub in tree.items() if sub is _LEAF)
    nested = tuple((key, _compile_level(sub)) for key, sub in tree.items() if sub is not _LEAF)

    def level(node: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        result: dict[str, Any] | None = None
        for key in leaves:
            if key in node:
                if result is None:
                    result = dict(node)
                del result[key]
        for key, strip in nested:
            child = node.get(key)
            if type(child) is not dict:
                continue
            stripped, changed = strip(child)
            if not changed:
                continue
            if result is None:
                result = dict(node)
            if stripped:
                result[key] = stripped
            else:  # emptied by the removal: drop it (as delete_path does)
                del result[key]
        return (node, False) if result is None else (result, True)

    return level


def compile_removal(paths: list[tuple[Step, ...]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function ``record -> record without the values at paths``, leaving the input intact.

    The result equals applying :func:`delete_path` for every path to a deep copy, but only
    the dicts on the removed paths are copied (the rest is shared with the input).
    """
    tree = _removal_tree(paths)
    if not tree:
        return lambda record: record
    leaves = tuple(key for key, sub in tree.items() if sub is _LEAF)
    nested = tuple((key, _compile_level(sub)) for key, sub in tree.items() if sub is not _LEAF)

    def remove(record: dict[str, Any]) -> dict[str, Any]:
        result = dict(record)  # the root is always copied (and never removed itself)
        for key in leaves:
            result.pop(key, None)
        for key, strip in nested:
            child = result.get(key)
            if type(child) is dict:
                stripped, changed = strip(child)
                if changed:
                    if stripped:
                        result[key] = stripped
                    else:
                        del result[key]
        return result

    return remove
