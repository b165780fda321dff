"""Commands of the connectors: ``ingest``, ``poll`` and ``bulk-load``."""

from __future__ import annotations

from typing import Annotated

import typer

from hosepipe.cli import ConfigOption


def register(app: typer.Typer) -> None:
    """Add the connector commands to the ``hosepipe`` CLI."""

    @app.command("ingest")
    def ingest(config: ConfigOption = None) -> None:
        """Serve HTTP ingest and the Firehose API on HOSEPIPE_BIND_HOST:HOSEPIPE_INGEST_PORT."""
        from hosepipe.cli import start

        runtime = start("ingest", config)
        from connectors.http.server import serve

        serve(runtime.settings, runtime.pipeline)

    @app.command("poll")
    def poll(
        config: ConfigOption = None,
        source: Annotated[
            list[str] | None,
            typer.Option("--source", "-s", help="Poll only these pull sources (repeatable)."),
        ] = None,
    ) -> None:
        """Run one poller per pull source; cursors are kept in a compacted Kafka topic."""
        from hosepipe.cli import fail, start

        runtime = start("poll", config)
        from connectors.pull.runner import PollError, run_pollers

        try:
            run_pollers(runtime.settings, runtime.pipeline, only=source or None)
        except PollError as exc:
            raise fail(str(exc)) from exc

    @app.command("bulk-load")
    def bulk_load(
        files: Annotated[
            list[str], typer.Argument(help="Local paths or s3://bucket/key URLs (JSONL, CSV, .gz).")
        ],
        source: Annotated[
            str, typer.Option("--source", "-s", help="Source the records belong to.")
        ],
        config: ConfigOption = None,
        file_format: Annotated[
            str, typer.Option("--format", help="jsonl, csv or auto (by file name).")
        ] = "auto",
    ) -> None:
        """Backfill files into raw.<source>; resumable, and a rerun skips completed files."""
        from hosepipe.cli import fail, start

        runtime = start("bulk-load", config)
        from connectors.bulk import BulkLoadError, run_bulk_load

        try:
            summary = run_bulk_load(
                runtime.settings, runtime.pipeline, source, files, file_format=file_format
            )
        except BulkLoadError as exc:
            raise fail(str(exc)) from exc
        typer.echo(summary)
