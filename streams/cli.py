"""``hosepipe worker``, ``hosepipe dlq inspect|replay`` and ``hosepipe stats``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Pipeline YAML (default: $HOSEPIPE_CONFIG_FILE).", show_default=False
    ),
]


def _parse_since(value: str | None) -> datetime | None:
    """``--since``: an ISO-8601 time, or a duration ago (``90s``, ``15m``, ``24h``, ``7d``)."""
    if value is None:
        return None
    from hosepipe.config import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(value)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def register(app: typer.Typer) -> None:
    """Add the stream-stage commands to the ``hosepipe`` CLI."""
    dlq_app = typer.Typer(help="Inspect and replay the dead-letter topic.", no_args_is_help=True)
    app.add_typer(dlq_app, name="dlq")

    @app.command("worker")
    def worker(
        config: ConfigOption = None,
        engine: Annotated[
            str | None,
            typer.Option(help="kafka or faust (default: streams.engine in the pipeline file)."),
        ] = None,
    ) -> None:
        """Normalize, deduplicate and dead-letter every source (the stream stage)."""
        from hosepipe.cli import fail, start
        from hosepipe.observability import serve_metrics

        runtime = start("worker", config)
        chosen = engine or runtime.pipeline.streams.engine
        if chosen not in ("kafka", "faust"):
            raise fail(f"--engine: expected kafka or faust, got {chosen!r}")
        settings = runtime.settings
        metrics = None
        if settings.metrics_port:
            metrics = serve_metrics(settings.bind_host, settings.metrics_port)
        try:
            if chosen == "faust":
                from streams.faust_app import FaustEngine

                try:
                    faust_engine = FaustEngine(settings, runtime.pipeline)
                except ValueError as exc:
                    raise fail(str(exc)) from exc
                faust_engine.run()
            else:
                from streams.kafka_runner import KafkaRunner

                try:
                    runner = KafkaRunner(settings, runtime.pipeline)
                except ValueError as exc:
                    raise fail(str(exc)) from exc
                runner.install_signal_handlers()
                runner.run()
        finally:
            if metrics is not None:
                metrics.stop()

    @dlq_app.command("inspect")
    def dlq_inspect(
        config: ConfigOption = None,
        source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
        since: Annotated[str | None, typer.Option(help="ISO time or duration ago (24h).")] = None,
        limit: Annotated[int, typer.Option(help="Print at most this many.")] = 100,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    ) -> None:
        """Print dead-lettered records with their reasons, oldest first."""
        import orjson
        from rich.console import Console
        from rich.table import Table

        from hosepipe.cli import start
        from streams.dlq import describe, matches, read_topic

        runtime = start("dlq", config, quiet=True)
        cutoff = _parse_since(since)
        rows = []
        for entry in read_topic(runtime.settings, runtime.pipeline.topics.dlq):
            if matches(entry, source, cutoff):
                rows.append(describe(entry))
                if len(rows) >= limit:
                    break
        if as_json:
            for row in rows:
                sys.stdout.write(orjson.dumps(row).decode() + "\n")
            return
        table = Table(title=f"{runtime.pipeline.topics.dlq}: {len(rows)} record(s)")
        for column in (
            "dlq",
            "source",
            "stage",
            "error",
            "message",
            "original",
            "failed_at",
            "value",
        ):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(
                *(
                    str(row[c])
                    for c in (
                        "dlq",
                        "source",
                        "stage",
                        "error",
                        "message",
                        "original",
                        "failed_at",
                        "value",
                    )
                )
            )
        Console().print(table)

    @dlq_app.command("replay")
    def dlq_replay(
        config: ConfigOption = None,
        source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
        since: Annotated[str | None, typer.Option(help="ISO time or duration ago (24h).")] = None,
        dry_run: Annotated[bool, typer.Option(help="Count, send nothing.")] = False,
    ) -> None:
        """Send dead-lettered records back to their raw topic (after fixing the cause)."""
        from hosepipe.cli import console, fail, start
        from hosepipe.kafka import make_producer
        from streams.dlq import matches, read_topic, replay_target

        runtime = start("dlq", config, quiet=True)
        cutoff = _parse_since(since)
        producer = None if dry_run else make_producer(runtime.settings)
        sent = skipped = 0
        for entry in read_topic(runtime.settings, runtime.pipeline.topics.dlq):
            target = replay_target(entry)
            if not matches(entry, source, cutoff):
                continue
            if target is None:
                skipped += 1
                continue
            if producer is not None:
                producer.produce(
                    target, entry.value, entry.key, headers=entry.original_headers or None
                )
                producer.poll(0)
            sent += 1
        if producer is not None and producer.flush(60):
            raise fail("some replayed records were not acknowledged; run replay again")
        verb = "would replay" if dry_run else "replayed"
        console.print(
            f"[green]ok:[/] {verb} {sent} record(s); "
            f"{skipped} skipped (no original topic, or value truncated)"
        )

    @app.command("stats")
    def stats(
        config: ConfigOption = None, as_json: Annotated[bool, typer.Option("--json")] = False
    ) -> None:
        """Per-source in / out / duplicates / dropped / dead-lettered and consumer lag."""
        import orjson
        from rich.console import Console
        from rich.table import Table

        from hosepipe.cli import start
        from streams.stats import consumer_lag, read_totals

        runtime = start("stats", config, quiet=True)
        group = runtime.pipeline.streams.consumer_group
        totals = read_totals(runtime.settings, group)
        lag = consumer_lag(runtime.settings, runtime.pipeline)
        rows = []
        for name in runtime.pipeline.sources:
            counts = totals.get(name)
            rows.append(
                {
                    "source": name,
                    "in": counts.received if counts else 0,
                    "out": counts.out if counts else 0,
                    "duplicates": counts.duplicates if counts else 0,
                    "dropped": counts.dropped if counts else 0,
                    "dead_lettered": counts.dead_lettered if counts else 0,
                    "lag": lag.get(runtime.pipeline.raw_topic(name)),
                }
            )
        if as_json:
            sys.stdout.write(orjson.dumps(rows).decode() + "\n")
            return
        table = Table(title=f"stream stage (group {group})")
        for column in rows[0] if rows else ():
            table.add_column(column, justify="left" if column == "source" else "right")
        for row in rows:
            table.add_row(*("-" if v is None else str(v) for v in row.values()))
        Console().print(table)
