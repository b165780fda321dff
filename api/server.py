"""``hosepipe api``: wait for the database schema, then serve the app with uvicorn."""

from __future__ import annotations

import logging
import time

from hosepipe.config import PipelineConfig
from hosepipe.runtime import settle_garbage_collector
from hosepipe.settings import Settings

log = logging.getLogger(__name__)


class ApiStartError(RuntimeError):
    """The API cannot start; the message says why and what to do."""


def wait_for_schema(settings: Settings, pipeline: PipelineConfig, timeout: float) -> None:
    """Block until the database is at the schema this code needs, or raise after ``timeout``.

    ``hosepipe up`` starts the API next to ``hosepipe db upgrade``: a short wait lets the
    migration finish instead of failing on a race.
    """
    from hosepipe.db import SchemaBehindError, check_schema_version, sync_engine

    engine = sync_engine(settings)
    deadline = time.monotonic() + timeout
    announced = False
    try:
        while True:
            try:
                check_schema_version(engine, pipeline.selection)
                return
            except SchemaBehindError as exc:
                problem = str(exc)
            except Exception as exc:  # database not up yet
                problem = f"database not reachable: {type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ApiStartError(problem)
            if not announced:
                log.warning("waiting for the database schema: %s", problem)
                announced = True
            time.sleep(1.0)
    finally:
        engine.dispose()


def serve(settings: Settings, pipeline: PipelineConfig, schema_timeout: float = 60.0) -> None:
    """Run the API until interrupted."""
    import uvicorn

    from api.app import build_state, create_app

    wait_for_schema(settings, pipeline, schema_timeout)
    app = create_app(build_state(settings, pipeline))
    host, port = settings.bind_host, settings.api_port
    shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
    print(f"hosepipe GraphQL API on http://{shown}:{port}/graphql", flush=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        ws_max_size=1 << 20,
        timeout_graceful_shutdown=5,
    )
    # Frozen start-up objects: unfrozen, full collections took 50-100 ms under load about
    # once a second and made the latency tail (p95 about three times p50). A page request
    # allocates thousands of short-lived objects: young collections every 10,000.
    settle_garbage_collector(10_000)
    uvicorn.Server(config).run()
