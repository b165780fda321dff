"""Prometheus ``/metrics`` and ``/healthz`` for every long-running process.

Consumers and pollers (worker, sink, poll, select) call :func:`serve_metrics` to expose both on
``HOSEPIPE_METRICS_PORT`` from a daemon thread. HTTP services (ingest, api) mount
:func:`asgi_routes` on their own port instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

HealthCheck = Callable[[], dict[str, Any]]
"""Returns a status dict; ``{"ok": False, ...}`` makes ``/healthz`` answer 503."""


def _always_ok() -> dict[str, Any]:
    return {"ok": True}


class MetricsServer:
    """A tiny threaded HTTP server for /metrics and /healthz; stop() closes it."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(
    host: str,
    port: int,
    health: HealthCheck = _always_ok,
    registry: CollectorRegistry = REGISTRY,
) -> MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` (port 0 picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                try:
                    state = health()
                except Exception as exc:  # a failing probe is an unhealthy process
                    state = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                body = orjson.dumps(state, default=str)
                status = 200 if state.get("ok", False) else 503
                ctype = "application/json"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise RuntimeError(
            f"cannot serve metrics on {host}:{port} (HOSEPIPE_METRICS_PORT): {exc.strerror}"
        ) from exc
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    log.info(
        "metrics and health endpoint up",
        extra={"url": f"http://{host}:{server.server_address[1]}/metrics"},
    )
    return MetricsServer(server, thread)


def asgi_routes(health: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> list[Any]:
    """Starlette routes ``/metrics`` and ``/healthz`` for the HTTP services."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        try:
            state = await health() if health else {"ok": True}
        except Exception as exc:
            state = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return JSONResponse(state, status_code=200 if state.get("ok") else 503)

    return [Route("/metrics", metrics), Route("/healthz", healthz)]
