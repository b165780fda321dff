"""Commands of the GraphQL API: ``hosepipe api`` and ``hosepipe api-schema``."""

from __future__ import annotations

from typing import Annotated

import typer

from hosepipe.cli import ConfigOption


def register(app: typer.Typer) -> None:
    """Add the API commands to the ``hosepipe`` CLI."""

    @app.command("api")
    def api(
        config: ConfigOption = None,
        schema_timeout: Annotated[
            float,
            typer.Option(help="Seconds to wait for `hosepipe db upgrade` before giving up."),
        ] = 60.0,
    ) -> None:
        """Serve GraphQL on HOSEPIPE_BIND_HOST:HOSEPIPE_API_PORT (/graphql, /healthz, /metrics)."""
        from hosepipe.cli import fail, start

        runtime = start("api", config)
        from api.server import ApiStartError, serve

        try:
            serve(runtime.settings, runtime.pipeline, schema_timeout=schema_timeout)
        except ApiStartError as exc:
            raise fail(f"api: {exc}") from exc
        except ValueError as exc:  # a rule table that cannot become a query
            raise fail(f"api: {exc}") from exc

    @app.command("api-schema")
    def api_schema(config: ConfigOption = None) -> None:
        """Print the GraphQL schema (SDL) the API would serve for this pipeline."""
        from hosepipe.cli import start

        runtime = start("api-schema", config, quiet=True)
        from api.schema import print_schema

        typer.echo(print_schema(runtime.pipeline), nl=False)
