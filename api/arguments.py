"""Root resolvers of planned operations, called with arguments converted by a plan.

strawberry's resolver wrapper converts a field's arguments on every call with
``convert_argument``, which walks the Python types anew each time: it resolves the annotation
of every field of an input type (graphql-core hands over every input field that has a default,
so all ten of ``EventFilter``'s), checks for generics, looks names up. For a page request that
was about a tenth of its CPU. :func:`direct_resolver` works out the same conversion once per
field and calls the resolver as strawberry's wrapper does (``self``, ``root``/``parent`` and
``info`` parameters included). It covers optional values, scalars, enums, lists and plain input
types; for anything else (``Maybe``, lazy types, ``GlobalID``, input types with their own
``from_input``, recursive input types, field extensions, exception handlers) it answers None
and strawberry's wrapper is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING
from typing import Any

from graphql import GraphQLField, GraphQLResolveInfo, GraphQLSchema
from strawberry.relay.types import GlobalID
from strawberry.scalars import is_scalar
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryOptional,
    has_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition, has_enum_definition
from strawberry.types.field import StrawberryField
from strawberry.types.lazy_type import LazyType
from strawberry.types.unset import UNSET

Convert = Callable[[Any], Any]
DirectResolver = Callable[[Any, GraphQLResolveInfo, dict[str, Any]], Any]
"""(source, resolve info, coerced GraphQL arguments) → what the resolver returns."""


def direct_resolver(field: GraphQLField, schema: GraphQLSchema) -> DirectResolver | None:
    """The resolver of ``field`` with its argument conversion planned, or None (see module)."""
    definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    if not isinstance(definition, StrawberryField) or strawberry_schema is None:
        return None
    resolver = definition.base_resolver
    converter = strawberry_schema.schema_converter
    # Exception handlers turn errors into results inside strawberry's wrapper.
    handlers = getattr(converter, "_exception_handler_specs", None)
    if resolver is None or definition.extensions or handlers is None or len(handlers):
        return None
    config, registry = strawberry_schema.config, converter.scalar_registry
    arguments: list[tuple[str, str, Convert]] = []
    for argument in definition.arguments:
        convert = _converter(argument.type, registry, config, set())
        if convert is None:
            return None
        arguments.append(
            (config.name_converter.from_argument(argument), argument.python_name, convert)
        )
    takes_self = resolver.self_parameter is not None
    extra = [p.name for p in (resolver.parent_parameter, resolver.root_parameter) if p is not None]
    info_name = resolver.info_parameter.name if resolver.info_parameter is not None else None
    info_class = config.info_class

    def call(source: Any, info: GraphQLResolveInfo, raw: dict[str, Any]) -> Any:
        kwargs: dict[str, Any] = {}
        for name, python_name, convert in arguments:
            if name in raw:
                kwargs[python_name] = convert(raw[name])
        for name in extra:
            kwargs[name] = source
        strawberry_info = info_class(_raw_info=info, _field=definition)
        if info_name is not None:
            kwargs[info_name] = strawberry_info
        args = [source] if takes_self else []
        return definition.get_result(source, info=strawberry_info, args=args, kwargs=kwargs)

    return call


def _identity(value: Any) -> Any:
    return value


def _copy_list(value: Any) -> Any:
    # graphql-core gives every request the same default list: hand out a copy, as strawberry.
    return value if value is None or value is UNSET else list(value)


def _converter(type_: Any, registry: Any, config: Any, building: set[Any]) -> Convert | None:
    """What ``convert_argument`` does to a value of ``type_``, or None when not covered."""
    if isinstance(type_, StrawberryMaybe | LazyType) or type_ is GlobalID:
        return None
    if isinstance(type_, StrawberryOptional):
        # None and UNSET pass unchanged at every level, so Optional adds nothing.
        return _converter(type_.of_type, registry, config, building)
    if isinstance(type_, StrawberryList):
        item = type_.of_type
        if isinstance(item, StrawberryOptional) and not isinstance(item, StrawberryMaybe):
            item = item.of_type
        if _is_leaf(item, registry):
            return _copy_list
        convert = _converter(type_.of_type, registry, config, building)
        if convert is None:
            return None
        each = convert

        def convert_list(value: Any) -> Any:
            if value is None or value is UNSET:
                return value
            return [each(x) for x in value]

        return convert_list
    if _is_leaf(type_, registry) or has_enum_definition(type_):
        return _identity
    if has_object_definition(type_):
        return _input_converter(type_, registry, config, building)
    return None


def _is_leaf(type_: Any, registry: Any) -> bool:
    return type_ is not GlobalID and (
        is_scalar(type_, registry) or isinstance(type_, StrawberryEnumDefinition)
    )


def _input_converter(cls: Any, registry: Any, config: Any, building: set[Any]) -> Convert | None:
    definition = cls.__strawberry_definition__
    if not definition.is_input or definition.from_input is not None or cls in building:
        return None  # recursive input types would need lazy converters: left to strawberry
    building = building | {cls}
    # Fields without a Python default are None unless given (strawberry does the same).
    defaults = {
        f.python_name: None
        for f in definition.fields
        if f.default_value is MISSING and f.default_factory is MISSING
    }
    fields: list[tuple[str, str, Convert]] = []
    for field in definition.fields:
        convert = _converter(
            field.resolve_type(type_definition=definition), registry, config, building
        )
        if convert is None:
            return None
        fields.append((config.name_converter.from_field(field), field.python_name, convert))

    def convert_input(value: Any) -> Any:
        if value is None or value is UNSET:
            return value
        kwargs = dict(defaults)
        for name, python_name, convert in fields:
            if name in value:
                kwargs[python_name] = convert(value[name])
        return cls(**kwargs)

    return convert_input
