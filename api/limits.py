"""Query cost: a static estimate of how much work an operation asks for, checked before running.

Every object field costs 1, scalar fields 0; a field with a ``first`` argument (a connection)
multiplies the cost of what is selected below it by ``first``; aggregate fields add a flat
:data:`AGGREGATE_COST`. A ``first`` given by a variable counts as its default, or as
``max_first`` when it has none (the worst case, since validation runs before variables are
known). Depth is limited separately by strawberry's ``QueryDepthLimiter``.
"""

from __future__ import annotations

from typing import Any

from graphql import (
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

AGGREGATE_COST = 50
AGGREGATE_FIELDS = frozenset({"eventCounts", "sources"})


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
                self.context, node.selection_set, root, defaults, max_first, default_first, set()
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
) -> int:
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            fields = getattr(parent, "fields", {})
            field = fields.get(selection.name.value)
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
            )
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen_fragments:
                continue  # cycles are reported by the standard rules
            fragment: FragmentDefinitionNode | None = context.get_fragment(name)
            if fragment is None:
                continue
            target = context.schema.get_type(fragment.type_condition.name.value) or parent
            total += _selection_cost(
                context,
                fragment.selection_set,
                target,
                defaults,
                max_first,
                default_first,
                seen_fragments | {name},
            )
    return total
