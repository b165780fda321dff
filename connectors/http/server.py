"""Run the ingest app on uvicorn (``hosepipe ingest``)."""

from __future__ import annotations

import logging

import uvicorn

from connectors.http.app import build_app
from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings, pipeline: PipelineConfig) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish and the producer is flushed."""
    app = build_app(settings, pipeline)
    log.info(
        "ingest listening",
        extra={
            "url": f"http://{settings.bind_host}:{settings.ingest_port}",
            "sources": ",".join(sorted(pipeline.push_sources())),
            "auth": pipeline.ingest.auth,
        },
    )
    config = uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.ingest_port,
        log_config=None,  # keep hosepipe's structured logging
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    uvicorn.Server(config).run()
