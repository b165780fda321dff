"""Query cost: a static estimate of how much work an operation asks for, checked before running.

Every object field costs 1, scalar fields 0; a field with a ``first`` argument (a connection)
multiplies the cost of what is selected below it by ``first``; aggregate fields add a flat
:data:`AGGREGATE_COST`. A ``first`` given by a variable counts as its default, or as
``max_first`` when it has none (the worst case, since validation runs before variables are
known). Introspection fields (``__schema``, ``__type``) are priced like any other field.

:func:`depth_rule` limits how deeply object fields nest, introspection fields included.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLNamedType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_named_type,
    is_leaf_type,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

AGGREGATE_COST = 50
AGGREGATE_FIELDS = frozenset({"eventCounts", "sources"})
META_FIELDS = {"__schema": SchemaMetaFieldDef, "__type": TypeMetaFieldDef}
"""Introspection fields of the root query type, which are not among its ``fields``."""
UNWRAP_FIELD = "ofType"
"""``__Type.ofType``: unwraps a list or non-null type and is null below a named type, so a
chain of it stops within the schema's wrapping depth (``[X!]!`` is three). It adds no depth:
standard introspection queries (GraphiQL's, graphql-core's) ask nine levels of it, 13 in all.
Every other introspection field counts, and ``MaxIntrospectionDepthRule`` caps the nesting of
introspection lists (``fields``, ``interfaces`` ...), the ones that can cycle."""


def depth_rule(max_depth: int) -> type[ValidationRule]:
    """A validation rule rejecting operations whose object fields nest deeper than ``max_depth``.

    Unlike strawberry's ``QueryDepthLimiter`` it counts introspection fields (except
    :data:`UNWRAP_FIELD`), and it measures each fragment once (no exponential walk through
    fragments spread many times).
    """

    class DepthLimit(ValidationRule):
        def enter_document(self, node: DocumentNode, *_: Any) -> None:
            fragments = {
                d.name.value: d for d in node.definitions if isinstance(d, FragmentDefinitionNode)
            }
            measure = _DepthMeasure(fragments)
            for definition in node.definitions:
                if not isinstance(definition, OperationDefinitionNode):
                    continue
                try:
                    depth = measure.selections(definition.selection_set)
                except RecursionError:
                    depth = max_depth + 1  # fragments spread through thousands of levels
                if depth > max_depth:
                    name = definition.name.value if definition.name else "anonymous"
                    self.report_error(
                        GraphQLError(
                            f"'{name}' exceeds maximum operation depth of {max_depth} "
                            f"(api.max_depth): it nests {depth} levels of fields",
                            definition,
                        )
                    )

    return DepthLimit


class _DepthMeasure:
    """Nesting depth of selection sets, with each fragment measured once."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments
        self.known: dict[str, int] = {}
        self.open: set[str] = set()

    def selections(self, selection_set: SelectionSetNode | None) -> int:
        if selection_set is None:
            return 0
        deepest = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.selection_set is None:
                    continue
                below = self.selections(selection.selection_set)
                depth = below if selection.name.value == UNWRAP_FIELD else 1 + below
            elif isinstance(selection, InlineFragmentNode):
                depth = self.selections(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                depth = self.fragment(selection.name.value)
            else:
                continue
            deepest = max(deepest, depth)
        return deepest

    def fragment(self, name: str) -> int:
        if name in self.known:
            return self.known[name]
        fragment = self.fragments.get(name)
        if fragment is None or name in self.open:
            return 0  # unknown fragments and cycles are reported by the standard rules
        self.open.add(name)
        try:
            depth = self.selections(fragment.selection_set)
        finally:
            self.open.discard(name)
        self.known[name] = depth
        return depth


def cost_rule(max_cost: int, max_first: int, default_first: int = 50) -> type[ValidationRule]:
    """A graphql-core validation rule rejecting operations that cost more than ``max_cost``."""

    class CostLimit(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            schema = self.context.schema
            root = {
                "query": schema.query_type,
                "mutation": schema.mutation_type,
                "subscription": schema.subscription_type,
            }[node.operation.value]
            if root is None:
                return
            defaults = _variable_defaults(node)
            cost = _selection_cost(
                self.context,
                node.selection_set,
                root,
                defaults,
                max_first,
                default_first,
                set(),
                {},
            )
            if cost > max_cost:
                name = node.name.value if node.name else "anonymous"
                self.report_error(
                    GraphQLError(
                        f"operation {name!r} costs {cost}, more than the limit {max_cost}: "
                        "ask for fewer rows (first) or fewer nested lists",
                        node,
                    )
                )

    return CostLimit


def _variable_defaults(node: OperationDefinitionNode) -> dict[str, int]:
    defaults: dict[str, int] = {}
    for definition in node.variable_definitions or ():
        if isinstance(definition.default_value, IntValueNode):
            defaults[definition.variable.name.value] = int(definition.default_value.value)
    return defaults


def _first_of(
    node: FieldNode, field: GraphQLField, defaults: dict[str, int], max_first: int
) -> int | None:
    if "first" not in field.args:
        return None
    for argument in node.arguments or ():
        if argument.name.value != "first":
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return max(0, int(value.value))
        if isinstance(value, VariableNode):
            return defaults.get(value.name.value, max_first)
        return max_first
    default = field.args["first"].default_value
    return int(default) if isinstance(default, int) else max_first


def _selection_cost(
    context: ValidationContext,
    selection_set: SelectionSetNode | None,
    parent: GraphQLNamedType,
    defaults: dict[str, int],
    max_first: int,
    default_first: int,
    seen_fragments: set[str],
    memo: dict[str, int],
) -> int:
    """Cost of a selection set; ``memo`` keeps each fragment's cost (a fragment spread many
    times, through fragments spread many times, would otherwise be walked exponentially
    often)."""
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            name = selection.name.value
            fields = getattr(parent, "fields", {})
            field = fields.get(name)
            if field is None and parent is context.schema.query_type:
                field = META_FIELDS.get(name)
            if field is None:
                continue  # unknown fields are reported by the standard rules
            named = get_named_type(field.type)
            if is_leaf_type(named):
                continue
            below = _selection_cost(
                context,
                selection.selection_set,
                named,
                defaults,
                max_first,
                default_first,
                seen_fragments,
                memo,
            )
            first = _first_of(selection, field, defaults, max_first)
            total += 1 + (below * first if first is not None else below)
            if selection.name.value in AGGREGATE_FIELDS:
                total += AGGREGATE_COST
        elif isinstance(selection, InlineFragmentNode):
            target = parent
            if selection.type_condition is not None:
                target = context.schema.get_type(selection.type_condition.name.value) or parent
            total += _selection_cost(
                context,
                selection.selection_set,
                target,
                defaults,
                max_first,
                default_first,
                seen_fragments,
                memo,
            )
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in memo:
                total += memo[name]
                continue
            if name in seen_fragments:
                continue  # cycles are reported by the standard rules
            fragment: FragmentDefinitionNode | None = context.get_fragment(name)
            if fragment is None:
                continue
            target = context.schema.get_type(fragment.type_condition.name.value) or parent
            memo[name] = _selection_cost(
                context,
                fragment.selection_set,
                target,
                defaults,
                max_first,
                default_first,
                seen_fragments | {name},
                memo,
            )
            total += memo[name]
    return total
