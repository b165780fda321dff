"""Commands of the selector: ``select`` and ``db upgrade`` / ``db current``."""

from __future__ import annotations

from typing import Annotated

import typer

from hosepipe.cli import ConfigOption


def register(app: typer.Typer) -> None:
    """Add ``select`` and the ``db`` group to the ``hosepipe`` CLI."""
    db_app = typer.Typer(help="The serving PostgreSQL schema.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @db_app.command("upgrade")
    def db_upgrade(
        config: ConfigOption = None,
        revision: Annotated[
            str, typer.Option("--revision", help="Migrate to this revision (default: head).")
        ] = "head",
    ) -> None:
        """Apply the migrations, then create/alter the tables the selection rules declare."""
        from hosepipe.cli import console, fail, start

        runtime = start("db", config)
        from hosepipe.db import sync_engine
        from selector.schema import SchemaError, upgrade

        engine = sync_engine(runtime.settings)
        try:
            report = upgrade(engine, runtime.pipeline.selection, revision)
        except SchemaError as exc:
            raise fail(str(exc)) from exc
        except Exception as exc:
            raise fail(f"upgrading {engine.url.render_as_string()}: {exc}") from exc
        finally:
            engine.dispose()
        for statement in report.statements:
            console.print(f"  {statement}", highlight=False, markup=False)
        console.print(
            f"[green]ok:[/] schema at revision {report.revision_after} "
            f"(was {report.revision_before or 'empty'}), "
            f"{len(report.statements)} rule-table change(s)",
            highlight=False,
        )

    @db_app.command("current")
    def db_current(config: ConfigOption = None) -> None:
        """Print the database's schema revision; exit 1 when it is behind this hosepipe."""
        from hosepipe.cli import console, start

        runtime = start("db", config, quiet=True)
        from hosepipe.db import SchemaBehindError, check_schema_version, sync_engine

        engine = sync_engine(runtime.settings)
        try:
            check_schema_version(engine, runtime.pipeline.selection)
        except SchemaBehindError as exc:
            console.print(f"[yellow]behind:[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc
        finally:
            engine.dispose()
        console.print("[green]ok:[/] schema is current", highlight=False)

    @app.command("select")
    def select(
        config: ConfigOption = None,
        follow: Annotated[
            bool, typer.Option("--follow", help="Keep loading every selection.follow_interval.")
        ] = False,
        shard: Annotated[
            str, typer.Option("--shard", help="Load only shard i of n lake partitions: i/n.")
        ] = "0/1",
        start_at: Annotated[
            str | None,
            typer.Option("--from", help="Reload events from this time (ISO-8601, UTC)."),
        ] = None,
        end_at: Annotated[
            str | None,
            typer.Option("--to", help="Reload events before this time (ISO-8601, UTC)."),
        ] = None,
        method: Annotated[
            str,
            typer.Option(
                "--method", help="Upsert method: copy (default), merge or insert (see docs)."
            ),
        ] = "copy",
        progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help="Progress bar on large runs.")
        ] = True,
        upgrade_first: Annotated[
            bool,
            typer.Option(
                "--upgrade", help="Run `hosepipe db upgrade` first (for the embedded stack)."
            ),
        ] = False,
    ) -> None:
        """Load new lake files into PostgreSQL (once, or --follow); crash-safe and idempotent."""
        from hosepipe.cli import fail, start

        runtime = start("select", config)
        from selector.plan import Shard, parse_instant
        from selector.runner import RunOptions
        from selector.service import SelectError, run_select

        if method not in ("copy", "merge", "insert"):
            raise fail(f"--method {method!r}: use copy, merge or insert")
        try:
            options = RunOptions(
                shard=Shard.parse(shard),
                start=parse_instant(start_at, "--from") if start_at else None,
                end=parse_instant(end_at, "--to") if end_at else None,
                method="insert" if method == "insert" else "merge" if method == "merge" else "copy",
                progress=progress,
            )
        except ValueError as exc:
            raise fail(str(exc)) from exc
        if follow and options.reload:
            raise fail("--follow cannot be combined with --from/--to")
        if upgrade_first:
            from hosepipe.db import sync_engine
            from selector.schema import upgrade

            engine = sync_engine(runtime.settings)
            try:
                upgrade(engine, runtime.pipeline.selection)
            except Exception as exc:
                raise fail(f"upgrading the database schema: {exc}") from exc
            finally:
                engine.dispose()
        try:
            run_select(runtime.settings, runtime.pipeline, options, follow=follow)
        except SelectError as exc:
            raise fail(str(exc)) from exc
