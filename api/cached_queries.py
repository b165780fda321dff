"""A short path for POSTed queries whose text already passed validation.

Strawberry's HTTP view and ``Schema.execute`` cost ~0.5 ms per request around graphql-core
(request parsing, extension hooks, execution context objects). For a query text that already
validated under this schema's rules (depth, cost, introspection; see :mod:`api.documents`),
none of those hooks has work left: parsing, token limit and validation are done. This layer
runs such a request straight through graphql-core's ``execute`` with the same executor class,
context, error logging and masking as the view, and hands everything else to the view
unchanged: GET, other content types, mutations/subscriptions, unknown documents, extra request
keys, credentials that fail (the view answers 401).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from graphql import ExecutionResult, GraphQLError, OperationType, execute, get_operation_ast
from graphql.pyutils import is_awaitable
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry import Schema
from strawberry.extensions import MaskErrors

from api.documents import ValidDocuments
from api.store import json_default

SHORT_PATH = Counter(
    "hosepipe_api_cached_query_requests_total",
    "HTTP GraphQL requests executed on the short path (query text validated before).",
)
REQUEST_KEYS = frozenset({"query", "variables", "operationName"})

ContextFactory = Callable[[str | None], Any]
"""Authorization header → the request's context, or None when the credentials fail."""


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope.get("method") != "POST":
            await self.view(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        if not headers.get(b"content-type", b"").startswith(b"application/json"):
            await self.view(scope, receive, send)
            return
        body, message = await _read_body(receive)
        if message is not None:  # the client went away
            return
        response = await self._answer(body, headers.get(b"authorization"))
        if response is None:
            await self.view(scope, _replay(body, receive), send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(response)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response})

    async def _answer(self, body: bytes, authorization: bytes | None) -> bytes | None:
        """The response body, or None when the view must handle the request."""
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
        document = self.documents.validated(query)
        if document is None:
            return None
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return None
        context = self.context(authorization.decode("latin-1") if authorization else None)
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
        SHORT_PATH.inc()
        if is_awaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        return orjson.dumps(self._payload(result), default=json_default)

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


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole request body, or the message that ended it early (a disconnect)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
