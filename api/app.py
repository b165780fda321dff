"""The ASGI application: ``/graphql`` (GraphiQL in a browser), ``/healthz``, ``/metrics``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cross_web import HTTPException
from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry import Schema
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError

from api.auth import Authenticator, AuthError, Principal
from api.cached_queries import PLAN_TRIED, CachedQueries, read_body, replay_body, send_json
from api.documents import ValidDocuments
from api.live import LiveHub
from api.schema import ApiContext, build_schema, mask_errors
from api.store import Store, json_default, make_engine
from hosepipe.config import PipelineConfig
from hosepipe.observability import asgi_routes
from hosepipe.settings import Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static" / "graphiql"
ASSETS_PATH = "/graphiql-assets"

REQUESTS = Counter("hosepipe_api_requests_total", "HTTP requests to /graphql.", ["status"])
LATENCY = Histogram(
    "hosepipe_api_request_seconds",
    "Latency of /graphql HTTP requests.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DRAIN_FACTOR = 64
"""A refused request's body is read and dropped up to this many times the size limit."""
AUTH_FAILURES = Counter("hosepipe_api_auth_failures_total", "Rejected credentials.")


@dataclass
class ApiState:
    """What lives as long as the process: settings, pool, live hub, authenticator."""

    settings: Settings
    pipeline: PipelineConfig
    store: Store
    live: LiveHub
    auth: Authenticator


class HosepipeGraphQL(GraphQL[ApiContext, None]):
    """Strawberry's ASGI view with our context, auth and a GraphiQL page without a CDN."""

    def __init__(self, state: ApiState, **kwargs: Any) -> None:
        api = state.pipeline.api
        self.documents = ValidDocuments()
        super().__init__(
            build_schema(state.pipeline, self.documents),
            graphql_ide="graphiql" if api.graphiql else None,
            allow_queries_via_get=True,
            keep_alive=True,
            keep_alive_interval=15,
            **kwargs,
        )
        self.state = state
        self._ide = (STATIC / "index.html").read_text().replace("__ASSETS__", ASSETS_PATH)

    async def get_context(self, request: Request | WebSocket, response: Any) -> ApiContext:  # type: ignore[override]
        principal: Principal | None = None
        if isinstance(request, WebSocket):
            # Browsers cannot set headers on a websocket: connection_init may carry them.
            header = request.headers.get("authorization")
            if header or not self.state.auth.required:
                principal = self._authenticate_ws(header)
        elif not self._is_ide_page(request):
            principal = self._authenticate_http(request.headers.get("authorization"))
        return ApiContext(
            store=self.state.store,
            pipeline=self.state.pipeline,
            principal=principal or Principal("pending"),
            live=self.state.live,
            connection_params=None,
        )

    def http_context(self, authorization: str | None) -> ApiContext | None:
        """The context of an HTTP request, None when its credentials fail (for the view's 401)."""
        try:
            principal = self.state.auth.authenticate(authorization)
        except AuthError:
            return None
        return ApiContext(
            store=self.state.store,
            pipeline=self.state.pipeline,
            principal=principal,
            live=self.state.live,
            connection_params=None,
        )

    def _is_ide_page(self, request: Request) -> bool:
        # The GraphiQL page is static; strawberry asks for a context before rendering it.
        return (
            self.graphql_ide is not None
            and request.method == "GET"
            and "query" not in request.query_params
            and "text/html" in request.headers.get("accept", "")
        )

    def _authenticate_http(self, header: str | None) -> Principal:
        try:
            return self.state.auth.authenticate(header)
        except AuthError as exc:
            AUTH_FAILURES.inc()
            raise HTTPException(401, f"unauthorized: {exc}") from exc

    def _authenticate_ws(self, header: str | None) -> Principal:
        try:
            return self.state.auth.authenticate(header)
        except AuthError as exc:
            AUTH_FAILURES.inc()
            raise ConnectionRejectionError({"reason": f"unauthorized: {exc}"}) from exc

    async def on_ws_connect(self, context: ApiContext) -> Any:  # type: ignore[override]
        if context.principal.name == "pending":
            params = context.connection_params or {}
            header = params.get("Authorization") or params.get("authorization")
            context.principal = self._authenticate_ws(header if isinstance(header, str) else None)
        return await super().on_ws_connect(context)

    async def render_graphql_ide(self, request: Request) -> Response:  # type: ignore[override]
        return HTMLResponse(self._ide)

    # orjson instead of the json module: a page of 50 events is ~17 kB of JSON each way.
    def encode_json(self, data: object) -> str:
        # str, not bytes: the websocket protocols send bytes as binary frames.
        return orjson.dumps(data, default=json_default).decode()

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)


class GraphQLMetrics:
    """Counts and times HTTP requests to /graphql (websockets pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, record)
        finally:
            LATENCY.observe(time.perf_counter() - started)
            REQUESTS.labels(str(status["code"])).inc()


class PlannedQueries:
    """Answers ``POST /graphql`` requests whose operation runs by its plan, before Starlette.

    Such a request (a query text validated before, every field below the root a plain one;
    see :mod:`api.cached_queries`) needs none of the routing, middleware and body replays
    around the view, which cost as much as a tenth of the request. This layer reads the body of
    a JSON POST to ``/graphql`` that declares a length within ``api.max_query_bytes`` and, when
    the plan answers it, sends the answer and records the request's metrics itself. Everything
    else goes to the Starlette app unchanged (body replayed): other paths and methods, bodies
    without a length or over the limit (413 there), and cross-origin requests when CORS is on.
    """

    def __init__(self, app: ASGIApp, cached: CachedQueries, limit: int, cors: bool) -> None:
        self.app = app
        self.cached = cached
        self.limit = limit
        self.cors = cors
        self.ok = REQUESTS.labels("200")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/graphql"
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if (
            declared is None
            or not declared.isdigit()
            or int(declared) > self.limit
            or not headers.get(b"content-type", b"").startswith(b"application/json")
            or (self.cors and b"origin" in headers)
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        body, message = await read_body(receive)
        if message is not None:  # the client went away
            LATENCY.observe(time.perf_counter() - started)
            REQUESTS.labels("500").inc()  # as GraphQLMetrics counts it
            return
        response = await self.cached.planned(body, headers.get(b"authorization"))
        if response is None:
            scope[PLAN_TRIED] = True
            await self.app(scope, replay_body(body, receive), send)
            return
        await send_json(send, response)
        LATENCY.observe(time.perf_counter() - started)
        self.ok.inc()


def too_large(limit: int) -> bytes:
    """The 413 body: a GraphQL-shaped error naming the limit and its key."""
    message = (
        f"query too large: the request is more than {limit} bytes (api.max_query_bytes); "
        "send a smaller query document or fewer variables"
    )
    return orjson.dumps({"errors": [{"message": message}]})


class QuerySizeLimit:
    """Answers HTTP 413 to a /graphql request larger than ``limit`` bytes, before parsing.

    A POST body is read up to ``limit + 1`` bytes (whatever Content-Length claims) and handed
    on from memory; a GET is measured by its query string. Websockets pass through (uvicorn
    caps frame size; the parser's token limit still applies).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.limit:
            await self._refuse(send)
            return
        if scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, receive)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, receive, more=message.get("more_body", False))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, receive: Receive | None = None, more: bool = True) -> None:
        # Read (and drop) a moderate rest of the body first: a client still sending when the
        # connection closes sees a reset instead of the 413.
        budget = DRAIN_FACTOR * self.limit
        while receive is not None and more and budget > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            budget -= len(message.get("body", b""))
            more = message.get("more_body", False)
        body = too_large(self.limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def build_state(settings: Settings, pipeline: PipelineConfig, pool_size: int = 10) -> ApiState:
    """Process-wide state (no connection is opened until the first query)."""
    store = Store(make_engine(settings, pool_size=pool_size))
    return ApiState(
        settings=settings,
        pipeline=pipeline,
        store=store,
        live=LiveHub(settings, store),
        auth=Authenticator(pipeline.api),
    )


def create_app(state: ApiState) -> ASGIApp:
    """The Starlette app around the GraphQL view, behind :class:`PlannedQueries`."""
    view = HosepipeGraphQL(state)
    assert isinstance(view.schema, Schema)
    cached = CachedQueries(view, view.schema, view.documents, view.http_context, mask_errors())
    graphql = GraphQLMetrics(QuerySizeLimit(cached, state.pipeline.api.max_query_bytes))

    async def health() -> dict[str, Any]:
        now = await state.store.ping()
        return {
            "ok": True,
            "database": "ok",
            "time": now.isoformat(),
            "live_listening": state.live.listening.is_set(),
        }

    routes: list[Any] = [
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        *asgi_routes(health),
    ]
    if state.pipeline.api.graphiql:
        routes.append(Mount(ASSETS_PATH, StaticFiles(directory=STATIC), name="graphiql-assets"))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.live.stop()
            await state.store.engine.dispose()

    middleware: list[Middleware] = []
    if state.pipeline.api.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(state.pipeline.api.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["authorization", "content-type"],
                max_age=600,
            )
        )
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    api = state.pipeline.api
    return PlannedQueries(app, cached, api.max_query_bytes, cors=bool(api.cors_origins))
