"""Render the configuration reference (docs/configuration.md) from the models themselves.

The reference is generated so it cannot drift from the code: a test compares the committed
document with :func:`render_reference`, and ``hosepipe config reference --write FILE`` updates it.
"""

from __future__ import annotations

import types
import typing
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings

BEGIN = "<!-- BEGIN GENERATED REFERENCE (hosepipe config reference --write) -->"
END = "<!-- END GENERATED REFERENCE -->"


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if origin in (list, tuple, set):
        (item,) = get_args(annotation)[:1] or (Any,)
        return f"list of {_type_name(item)}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"map {_type_name(key)} → {_type_name(value)}"
    if annotation is type(None):
        return "null"
    if annotation is timedelta:
        return "duration"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
        if issubclass(annotation, Enum):
            return " \\| ".join(f"`{m.value}`" for m in annotation)
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel):
        return "(defaults below)"
    if isinstance(value, timedelta):
        return f"`{int(value.total_seconds())}s`"
    if value is None:
        return "unset"
    return f"`{value}`"


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in get_args(annotation):
        found.extend(_nested_models(arg))
    return found


def _model_sections(root: type[BaseModel], title: str) -> list[str]:
    lines: list[str] = []
    seen: set[type[BaseModel]] = set()
    queue: list[tuple[type[BaseModel], str]] = [(root, title)]
    while queue:
        model, heading = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        lines += [f"### {model.__name__}", "", f"{heading}. {doc}".strip(), ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            key = field.alias or name
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {description} |"
            )
            for nested in _nested_models(field.annotation):
                queue.append((nested, f"Used by `{model.__name__}.{key}`"))
        lines.append("")
    return lines


def _settings_table() -> list[str]:
    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        lines.append(
            f"| `HOSEPIPE_{name.upper()}` | {_type_name(field.annotation)} | {_default(field)} "
            f"| {description} |"
        )
    return lines


def render_reference() -> str:
    """The generated part of docs/configuration.md."""
    lines = [
        BEGIN,
        "",
        "## Environment variables (connection settings)",
        "",
        *_settings_table(),
        "",
        "## Pipeline file keys",
        "",
        *_model_sections(PipelineConfig, "The top level of `hosepipe.yaml`"),
        END,
    ]
    return "\n".join(lines) + "\n"


def update_document(path: Path) -> bool:
    """Replace the generated block of ``path``; returns True when the file changed."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = head + render_reference().rstrip("\n") + tail
    if not new.endswith("\n"):
        new += "\n"
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True
