"""A faster completion of plain objects for graphql-core's executor, and planned operations.

A page of 50 events asks graphql-core to run ~500 fields; for every one it builds a resolve
info, calls strawberry's resolver wrapper, checks for awaitables and completes the leaf value,
which costs more than the SQL query. Most of these fields are plain attributes of an object
(``Event.eventId`` ...). :class:`LeafObjectsExecutionContext` completes an object whose selected
fields are all such leaves in one loop (attribute, serialize), and leaves every other case
(resolvers, arguments, middleware, ``@defer``, abstract types, nulls in non-null fields,
errors) to graphql-core unchanged, so results and errors are the same.

:func:`plan_operation` goes one step further for a query whose every field below the root is
such a plain field (the usual page or lookup): the plan of the whole operation is made once per
cached document, and :func:`run_plan` calls the root resolvers exactly as graphql-core does
(same resolve info, same coerced arguments) and completes their results with the plan, without
graphql-core's executor. It answers only the clean case: anything else (an error, a null in a
non-null field, an unexpected value) raises, and the caller runs graphql-core instead, which
reports it the standard way.
"""

from __future__ import annotations

import asyncio
import functools
import keyword
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from graphql import (
    FieldNode,
    GraphQLField,
    GraphQLID,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLString,
    OperationType,
    SelectionSetNode,
    Undefined,
    get_argument_values,
    get_nullable_type,
)
from graphql.execution.collect_fields import FieldDetails, collect_fields
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.schema.types.base_scalars import isoformat
from strawberry.types.field import StrawberryField

from api.arguments import DirectResolver, direct_resolver

# How to complete one selected field of a plain object:
# (response key, python attribute, default resolver, kind, what, non-null), where ``what`` is
# the scalar's serializer (LEAF, DATETIME) or the completion of the object (OBJECT) or of every
# item (OBJECTS). DATETIME is strawberry's DateTime in a plan whose result is rendered by orjson
# only: a datetime in UTC (or naive) is left as it is, orjson writes the same text isoformat()
# would, several times faster.
LEAF, OBJECT, OBJECTS, DATETIME = 0, 1, 2, 3
Step = tuple[str, str, Any, int, Any, bool]
TYPENAME = "__typename"


class ObjectPlan(NamedTuple):
    """How to complete an object whose selected fields are all plain."""

    steps: tuple[Step, ...]
    complete: Callable[[Any], dict[str, Any]]
    """source object → completed dict; raises :class:`_Fallback` where graphql-core must."""


def _constant(_source: Any, value: str) -> str:
    """The "resolver" of ``__typename`` in a plan: the step's attribute is the type name."""
    return value


class _Fallback(Exception):
    """Let graphql-core complete this object (it reports errors the standard way)."""


class LeafObjectsExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Completes objects made only of plain scalar fields without per-field executor calls."""

    native_datetimes = False
    """Plans leave UTC datetimes to the JSON encoder (only for results rendered by orjson)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (type, id(field list)) -> (field list kept alive so its id stays unique, plan)
        self._leaf_plans: dict[tuple[GraphQLObjectType, int], tuple[Any, ObjectPlan | None]] = {}

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: list[FieldDetails],
        info: GraphQLResolveInfo,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        plan = self._leaf_plan(return_type, field_details_list)
        if plan is not None:
            try:
                return plan.complete(result)
            except Exception:
                pass  # graphql-core completes it again and reports the error where it belongs
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def _leaf_plan(
        self, return_type: GraphQLObjectType, field_details_list: list[FieldDetails]
    ) -> ObjectPlan | None:
        key = (return_type, id(field_details_list))
        cached = self._leaf_plans.get(key)
        if cached is not None:
            return cached[1]
        self._leaf_plans[key] = (field_details_list, None)  # guards recursive types
        steps = self._make_plan(return_type, field_details_list)
        plan = ObjectPlan(steps, _compile(steps)) if steps else None
        self._leaf_plans[key] = (field_details_list, plan)
        return plan

    def _make_plan(
        self, return_type: GraphQLObjectType, field_details_list: list[FieldDetails]
    ) -> tuple[Step, ...]:
        manager = self.middleware_manager
        if return_type.is_type_of is not None or (manager is not None and manager.middlewares):
            return ()
        grouped, new_defer_usages, _ = self.collect_subfields(return_type, field_details_list)
        if new_defer_usages:
            return ()
        plan: list[Step] = []
        for response_key, details in grouped.items():
            node = details[0].node
            if node.arguments or any(d.defer_usage is not None for d in details):
                return ()
            if node.name.value == TYPENAME:  # graphql-core answers the parent type's name
                plan.append((response_key, return_type.name, _constant, LEAF, str, True))
                continue
            step = self._plain_step(
                response_key, self.schema.get_field(return_type, node.name.value), details
            )
            if step is None:
                return ()
            plan.append(step)
        return tuple(plan)

    def _plain_step(
        self, response_key: str, field: GraphQLField | None, details: list[FieldDetails]
    ) -> Step | None:
        """The step of one field when it is a plain attribute, else None."""
        if field is None or field.args:
            return None
        definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
        if not isinstance(definition, StrawberryField) or not definition.is_basic_field:
            return None
        if not getattr(field.resolve, "_is_default", False):
            return None
        completion = self.completion(field, details)
        if completion is None:
            return None
        return (response_key, definition.python_name, definition.default_resolver, *completion)

    def completion(
        self, field: GraphQLField, details: list[FieldDetails]
    ) -> tuple[int, Any, bool] | None:
        """(kind, what, non-null) completing a value of ``field``'s type, None if not plain."""
        non_null = isinstance(field.type, GraphQLNonNull)
        inner = get_nullable_type(field.type)
        if isinstance(inner, GraphQLScalarType):
            serialize = inner.coerce_output_value
            if self.native_datetimes and serialize is isoformat and inner.name == "DateTime":
                return (DATETIME, serialize, non_null)
            return (LEAF, serialize, non_null)
        if isinstance(inner, GraphQLObjectType):
            plan = self._leaf_plan(inner, details)
            return (OBJECT, plan.complete, non_null) if plan else None
        if isinstance(inner, GraphQLList):
            item = get_nullable_type(inner.of_type)
            if isinstance(item, GraphQLObjectType) and isinstance(inner.of_type, GraphQLNonNull):
                plan = self._leaf_plan(item, details)
                return (OBJECTS, plan.complete, non_null) if plan else None
        return None  # enums, abstract types, nullable list items: the general path


def _complete_value(kind: int, what: Any, non_null: bool, value: Any) -> Any:
    """One value completed like a step of a plan (for the root fields of an operation)."""
    if value is None:
        if non_null:
            raise _Fallback
        return None
    if kind in (LEAF, DATETIME):
        serialized = what(value)
        if serialized is None or serialized is Undefined:
            raise _Fallback
        return serialized
    if kind == OBJECT:
        return what(value)
    if not isinstance(value, list | tuple):
        raise _Fallback  # e.g. a generator: graphql-core must see it unconsumed
    return [what(item) if item is not None else _raise() for item in value]


def _raise() -> Any:
    raise _Fallback


# Scalars whose serializer returns a str argument unchanged (graphql-core's String and ID).
_STR_IDENTITY = frozenset({GraphQLString.coerce_output_value, GraphQLID.coerce_output_value})


@functools.lru_cache(maxsize=1024)
def _compile(steps: tuple[Step, ...]) -> Callable[[Any], dict[str, Any]]:
    """A function completing an object by ``steps``: straight-line Python made once per plan.

    A loop over the steps costs a tuple unpack, a kind test and calls per field; for a page of
    50 edges (~500 fields) that was the largest part of completing it. The generated code does
    what the loop did, field by field: read the attribute, check null against non-null, call the
    serializer (skipped for a str under String/ID, which return it unchanged) and
    :class:`_Fallback` where graphql-core must report an error.
    """
    names: dict[str, Any] = {
        "_Fallback": _Fallback,
        "_raise": _raise,
        "Undefined": Undefined,
        "getattr": getattr,
        "isinstance": isinstance,
        "_LISTS": (list, tuple),
        "datetime": datetime,
        "UTC": UTC,
    }
    lines = ["def complete(source):"]
    keys = []
    for i, (response_key, attribute, resolve, kind, what, non_null) in enumerate(steps):
        value = f"v{i}"
        keys.append(f"{response_key!r}: {value}")
        names[f"a{i}"], names[f"r{i}"], names[f"w{i}"] = attribute, resolve, what
        if resolve is _constant:
            lines.append(f"    {value} = a{i}")
            continue
        if resolve is getattr and attribute.isidentifier() and not keyword.iskeyword(attribute):
            lines.append(f"    {value} = source.{attribute}")
        else:
            lines.append(f"    {value} = r{i}(source, a{i})")
        if non_null:
            lines.append(f"    if {value} is None: raise _Fallback")
            indent = "    "
        else:
            lines.append(f"    if {value} is not None:")
            indent = "        "
        if kind in (LEAF, DATETIME):
            check = f"if {value} is None or {value} is Undefined: raise _Fallback"
            if kind == DATETIME:
                lines.append(
                    f"{indent}if {value}.__class__ is not datetime or "
                    f"({value}.tzinfo is not None and {value}.tzinfo is not UTC):"
                )
                lines.append(f"{indent}    {value} = w{i}({value})")
                lines.append(f"{indent}    {check}")
            elif what in _STR_IDENTITY:
                lines.append(f"{indent}if {value}.__class__ is not str:")
                lines.append(f"{indent}    {value} = w{i}({value})")
                lines.append(f"{indent}    {check}")
            else:
                lines.append(f"{indent}{value} = w{i}({value})")
                lines.append(f"{indent}{check}")
        elif kind == OBJECT:
            lines.append(f"{indent}{value} = w{i}({value})")
        else:
            lines.append(f"{indent}if not isinstance({value}, _LISTS): raise _Fallback")
            lines.append(
                f"{indent}{value} = [w{i}(x) if x is not None else _raise() for x in {value}]"
            )
    lines.append(f"    return {{{', '.join(keys)}}}")
    exec(compile("\n".join(lines), "<api.execution plan>", "exec"), names)
    complete: Callable[[Any], dict[str, Any]] = names["complete"]
    return complete


# --------------------------------------------------------------------------- planned operations


class RootStep(NamedTuple):
    """One root field of a planned operation: how to resolve it and complete its value."""

    key: str
    field: GraphQLField | None  # None: __typename
    details: list[FieldDetails]
    nodes: list[FieldNode]
    kind: int
    what: Any
    non_null: bool
    direct: DirectResolver | None = None  # the resolver with its arguments' conversion planned


class PlannedOperation(NamedTuple):
    """A query operation that :func:`run_plan` executes without graphql-core's executor."""

    root_type: GraphQLObjectType
    steps: tuple[RootStep, ...]


def plan_operation(executor: LeafObjectsExecutionContext) -> PlannedOperation | None:
    """The plan of ``executor``'s operation, or None when graphql-core must execute it.

    Planned: a query without directives (``@skip``/``@include`` would make the selection depend
    on variables, ``@defer`` changes delivery) and without fragment variables, whose root
    fields have any resolver and arguments, and whose every field below the root is a plain
    attribute (what :class:`LeafObjectsExecutionContext` completes in one loop) or
    ``__typename``. Introspection fields are not planned.
    """
    operation = executor.operation
    schema = executor.schema
    root_type = schema.query_type
    manager = executor.middleware_manager
    if (
        operation.operation is not OperationType.QUERY
        or root_type is None
        or root_type.is_type_of is not None
        or (manager is not None and manager.middlewares)
        or operation.directives
        or not _plain_selections(operation.selection_set)
    ):
        return None
    for fragment in executor.fragment_definitions.values():
        if fragment.variable_definitions or fragment.directives:
            return None
        if not _plain_selections(fragment.selection_set):
            return None
    executor.native_datetimes = True  # run_plan's data is only ever rendered by orjson
    grouped, defer_usages, _ = collect_fields(
        schema, executor.fragments, executor.variable_values, root_type, operation
    )
    if defer_usages:
        return None
    steps: list[RootStep] = []
    for key, details in grouped.items():
        nodes = [d.node for d in details]
        name = nodes[0].name.value
        if name == TYPENAME:
            steps.append(RootStep(key, None, details, nodes, LEAF, root_type.name, True))
            continue
        field = root_type.fields.get(name)  # introspection fields are not among them
        if field is None:
            return None
        completion = executor.completion(field, details)
        if completion is None:
            return None
        direct = direct_resolver(field, schema)
        steps.append(RootStep(key, field, details, nodes, *completion, direct))
    return PlannedOperation(root_type, tuple(steps))


def _plain_selections(selection_set: SelectionSetNode | None) -> bool:
    """Whether no selection below ``selection_set`` carries a directive."""
    stack = [selection_set]
    while stack:
        current = stack.pop()
        if current is None:
            continue
        for selection in current.selections:
            if selection.directives:
                return False
            stack.append(getattr(selection, "selection_set", None))
    return True


async def run_plan(plan: PlannedOperation, executor: LeafObjectsExecutionContext) -> dict[str, Any]:
    """The ``data`` of the planned operation; raises when graphql-core must answer instead.

    Root resolvers get the resolve info and coerced arguments graphql-core would give them and
    run concurrently, as graphql-core runs the root fields of a query.
    """
    from graphql.pyutils import Path

    root_value = executor.root_value
    values: list[Any] = []
    pending: list[tuple[int, Any]] = []
    try:
        for step in plan.steps:
            field = step.field
            if field is None:
                values.append(step.what)
                continue
            details = step.details[0]
            args = (
                get_argument_values(
                    field,
                    details.node,
                    executor.variable_values,
                    details.fragment_variable_values,
                    executor.hide_suggestions,
                )
                if field.args or details.node.arguments
                else {}
            )
            path = Path(None, step.key, plan.root_type.name)
            info = executor.build_resolve_info(field, step.nodes, plan.root_type, path)
            if step.direct is not None:
                value = step.direct(root_value, info, args)
            else:
                value = (field.resolve or executor.field_resolver)(root_value, info, **args)
            if isinstance(value, Exception):  # graphql-core raises a returned exception
                raise value
            if executor.is_awaitable(value):
                pending.append((len(values), value))
            values.append(value)
    except BaseException:
        _discard(value for _, value in pending)
        raise
    if len(pending) == 1:
        index, awaitable = pending[0]
        values[index] = await awaitable
    elif pending:
        results = await asyncio.gather(*(a for _, a in pending), return_exceptions=True)
        for (index, _), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            values[index] = result
    data: dict[str, Any] = {}
    for step, value in zip(plan.steps, values, strict=True):
        if step.field is None:
            data[step.key] = value
        else:
            data[step.key] = _complete_value(step.kind, step.what, step.non_null, value)
    return data


def _discard(awaitables: Any) -> None:
    """Close coroutines that will never be awaited (no "never awaited" warnings)."""
    for awaitable in awaitables:
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()
