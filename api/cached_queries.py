"""A short path for POSTed queries whose text already passed validation.

Strawberry's HTTP view and ``Schema.execute`` cost ~0.5 ms per request around graphql-core
(request parsing, extension hooks, execution context objects). For a query text that already
validated under this schema's rules (depth, cost, introspection; see :mod:`api.documents`),
none of those hooks has work left: parsing, token limit and validation are done. This layer
runs such a request straight through graphql-core's ``execute`` with the same executor class,
context, error logging and masking as the view, and hands everything else to the view
unchanged: GET, other content types, mutations/subscriptions, unknown documents, extra request
keys, credentials that fail (the view answers 401).

When every field below the root of the operation is a plain attribute (a page of events, a
lookup), the operation is also planned once (:func:`api.execution.plan_operation`) and run
without graphql-core's executor; should that run meet anything but the clean case (an error, a
null in a non-null field), the request is executed again by graphql-core, which answers it the
standard way. Every query field is a read, so running its resolver again is safe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
)
from graphql.pyutils import is_awaitable
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry import Schema
from strawberry.extensions import MaskErrors

from api.documents import ValidDocuments
from api.execution import (
    LeafObjectsExecutionContext,
    PlannedOperation,
    plan_operation,
    run_plan,
)
from api.store import json_default

SHORT_PATH = Counter(
    "hosepipe_api_cached_query_requests_total",
    "HTTP GraphQL requests executed on the short path (query text validated before).",
)
PLANNED = Counter(
    "hosepipe_api_planned_query_requests_total",
    "Short-path requests answered by a plan made once per query text (no graphql-core executor).",
)
REQUEST_KEYS = frozenset({"query", "variables", "operationName"})
OPERATIONS_LIMIT = 1024
"""Entries of the per-operation cache; it is cleared when full (query texts are few)."""

ContextFactory = Callable[[str | None], Any]
"""Authorization header → the request's context, or None when the credentials fail."""

PLAN_TRIED = "hosepipe.plan_tried"
"""ASGI scope key: a layer in front already tried the request's plan (do not run it twice)."""

_UNPLANNED: Any = object()


@dataclass
class _Operation:
    """What one (query text, operation name) needs on the short path, kept between requests."""

    document: DocumentNode
    operation: OperationDefinitionNode
    plan: PlannedOperation | None = _UNPLANNED  # None: graphql-core executes it


class CachedQueries:
    """ASGI layer in front of the GraphQL view; see the module docstring."""

    def __init__(
        self,
        view: ASGIApp,
        schema: Schema,
        documents: ValidDocuments,
        context: ContextFactory,
        mask: MaskErrors,
    ) -> None:
        self.view = view
        self.schema = schema
        self.documents = documents
        self.context = context
        self.mask = mask
        self.enabled = _executes_like_view(schema)
        self._operations: dict[tuple[str, str | None], _Operation] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope.get("method") != "POST":
            await self.view(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            await self.view(scope, receive, send)
            return
        body, message = await read_body(receive)
        if message is not None:  # the client went away
            return
        plan = not scope.get(PLAN_TRIED, False)
        response = await self._answer(body, headers.get(b"authorization"), plan)
        if response is None:
            await self.view(scope, replay_body(body, receive), send)
            return
        await send_json(send, response)

    async def planned(self, body: bytes, authorization: bytes | None) -> bytes | None:
        """The response when the request's operation runs by its plan, else None.

        For a layer in front of the app (:class:`api.app.PlannedQueries`): None means nothing
        was answered and the request goes on its usual way.
        """
        request = self._request(body) if self.enabled else None
        if request is None:
            return None
        query, variables, operation_name = request
        document = self.documents.validated(query)
        entry = None if document is None else self._operation(query, operation_name, document)
        if entry is None or entry.plan is None:
            return None
        context = self.context(authorization.decode("latin-1") if authorization else None)
        if context is None:
            return None
        response = await self._run_planned(entry, variables, operation_name, context)
        if response is not None:
            SHORT_PATH.inc()
        return response

    @staticmethod
    def _request(body: bytes) -> tuple[str, dict[str, Any] | None, str | None] | None:
        """(query, variables, operationName) of a plain JSON request, else None."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(request, dict) or not REQUEST_KEYS.issuperset(request):
            return None
        query, variables = request.get("query"), request.get("variables")
        operation_name = request.get("operationName")
        if (
            not isinstance(query, str)
            or not (variables is None or isinstance(variables, dict))
            or not (operation_name is None or isinstance(operation_name, str))
        ):
            return None
        return query, variables, operation_name

    async def _answer(self, body: bytes, authorization: bytes | None, plan: bool) -> bytes | None:
        """The response body, or None when the view must handle the request.

        ``plan`` false: a layer in front already tried the operation's plan.
        """
        request = self._request(body)
        if request is None:
            return None
        query, variables, operation_name = request
        document = self.documents.validated(query)
        if document is None:
            return None
        entry = self._operation(query, operation_name, document)
        if entry is None:
            return None
        header = authorization.decode("latin-1") if authorization else None
        context = self.context(header)
        if context is None:
            return None
        SHORT_PATH.inc()
        if plan and entry.plan is not None:
            planned = await self._run_planned(entry, variables, operation_name, context)
            if planned is not None:
                return planned
            context = self.context(header)  # fresh per-request state (DataLoaders) for the rerun
            if context is None:
                return None
        result = execute(
            self.schema._schema,
            document,
            variable_values=variables,
            operation_name=operation_name,
            context_value=context,
            executor_class=self.schema.execution_context_class,
            operation_extensions=None,
        )
        if is_awaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        return orjson.dumps(self._payload(result), default=json_default)

    def _operation(
        self, query: str, operation_name: str | None, document: DocumentNode
    ) -> _Operation | None:
        """The cached entry of a query operation of ``document``; None for other operations."""
        key = (query, operation_name)
        entry = self._operations.get(key)
        if entry is not None and entry.document is document:
            return entry
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return None
        if len(self._operations) >= OPERATIONS_LIMIT:
            self._operations.clear()
        entry = self._operations[key] = _Operation(document, operation)
        return entry

    async def _run_planned(
        self,
        entry: _Operation,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
    ) -> bytes | None:
        """The response from the operation's plan, or None when graphql-core must execute it."""
        executor = self.schema.execution_context_class.build(
            self.schema._schema,
            entry.document,
            None,
            context,
            variables,
            operation_name,
            operation_extensions=None,
        )
        if isinstance(executor, list):  # variables that do not coerce: graphql-core says why
            return None
        if not isinstance(executor, LeafObjectsExecutionContext):
            entry.plan = None
            return None
        if entry.plan is _UNPLANNED:
            entry.plan = plan_operation(executor)
        if entry.plan is None:
            return None
        try:
            data = await run_plan(entry.plan, executor)
            response = orjson.dumps({"data": data}, default=json_default)
        except Exception:
            return None  # an error or an unusual value: graphql-core answers the standard way
        PLANNED.inc()
        return response

    def _payload(self, result: ExecutionResult) -> dict[str, Any]:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            # As the view does: log the original errors, then answer with the masked ones.
            self.schema.process_errors(result.errors, None)
            errors: list[GraphQLError] = self.mask._process_errors(result.errors)
            payload["errors"] = [error.formatted for error in errors]
        return payload


def _executes_like_view(schema: Schema) -> bool:
    """Whether executing without strawberry's hooks gives the view's result for this schema.

    True when no extension wraps resolvers (middleware) and incremental delivery is off; the
    remaining extensions (token limit, validation rules, document cache, error masking) only
    act before execution or, for masking, are applied here.
    """
    if schema.config.enable_experimental_incremental_execution:
        return False
    for extension in schema.extensions:
        instance = extension() if callable(extension) else extension
        if instance._implements_resolve():
            return False
    return True


async def read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole request body, or the message that ended it early (a disconnect)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def replay_body(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that hands out ``body`` (already read) first, then the real messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def send_json(send: Send, body: bytes) -> None:
    """A 200 response with a JSON body."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
