"""``hosepipe sink``: land the canonical topic in the lake as Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``sink`` command to the hosepipe CLI."""

    @app.command("sink")
    def sink(
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="Pipeline YAML (default: hosepipe.yaml)."),
        ] = None,
    ) -> None:
        """Consume events.canonical and write time-partitioned Parquet to HOSEPIPE_LAKE_URL."""
        from hosepipe.cli import fail, start
        from hosepipe.lake import LakeError

        runtime = start("sink", config)
        from sink.runner import run_sink

        try:
            run_sink(runtime.settings, runtime.pipeline)
        except LakeError as exc:
            raise fail(str(exc)) from exc
