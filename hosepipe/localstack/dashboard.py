"""Live per-stage counters for ``hosepipe up``: read every component's ``/metrics``.

Each component exports Prometheus counters; this module scrapes them once a second and folds
them into one row per stage, so a person watching ``make run`` sees records enter, become
canonical events, land in the lake and arrive in PostgreSQL. Counters restart at zero when a
component restarts; the table shows what the running processes have done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

log = logging.getLogger(__name__)

Samples = dict[str, float]
"""``metric_name{label=value,...}`` → value, for one component."""


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition → (sample name, labels, value)."""
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(
    samples: Iterable[tuple[str, dict[str, str], float]],
    name: str,
    **labels: str,
) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(
        value
        for sample, sample_labels, value in samples
        if sample == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


@dataclass(frozen=True)
class StageRow:
    stage: str
    figures: str


def stage_rows(
    scraped: Mapping[str, list[tuple[str, dict[str, str], float]]],
) -> list[StageRow]:
    """One readable row per stage from the scraped samples of each component."""
    rows: list[StageRow] = []

    def add(stage: str, component: str, render: Callable[[list], str]) -> None:
        samples = scraped.get(component)
        rows.append(StageRow(stage, "not reporting" if samples is None else render(samples)))

    add(
        "ingest (HTTP, Firehose)",
        "ingest",
        lambda s: (
            f"{total(s, 'hosepipe_connector_records_total'):,.0f} records accepted, "
            f"{total(s, 'hosepipe_ingest_rejects_total'):,.0f} rejected"
        ),
    )
    add(
        "poll",
        "poll",
        lambda s: f"{total(s, 'hosepipe_connector_records_total'):,.0f} records pulled",
    )

    def worker(s: list) -> str:
        def outcome(name: str) -> float:
            return total(s, "hosepipe_streams_records_total", outcome=name)

        return (
            f"{outcome('received'):,.0f} in → {outcome('out'):,.0f} canonical, "
            f"{outcome('duplicates'):,.0f} duplicates, {outcome('dropped'):,.0f} dropped, "
            f"{outcome('dead_lettered'):,.0f} to DLQ"
        )

    add("worker (normalize, dedupe)", "worker", worker)
    add(
        "sink (Parquet lake)",
        "sink",
        lambda s: (
            f"{total(s, 'hosepipe_sink_rows_written_total'):,.0f} rows in "
            f"{total(s, 'hosepipe_sink_files_written_total'):,.0f} files, "
            f"{total(s, 'hosepipe_sink_late_events_total'):,.0f} late"
        ),
    )
    add(
        "select (PostgreSQL)",
        "select",
        lambda s: (
            f"{total(s, 'hosepipe_selector_rows_loaded_total'):,.0f} rows from "
            f"{total(s, 'hosepipe_selector_files_loaded_total'):,.0f} files, "
            f"{total(s, 'hosepipe_selector_rows_rejected_total'):,.0f} rejected"
        ),
    )
    add(
        "api (GraphQL)",
        "api",
        lambda s: f"{total(s, 'hosepipe_api_requests_total'):,.0f} requests",
    )
    return rows


def scrape(urls: Mapping[str, str], client: httpx.Client) -> dict[str, list]:
    """Scrape each component; a component that does not answer is left out."""
    scraped: dict[str, list] = {}
    for component, url in urls.items():
        try:
            response = client.get(url)
            response.raise_for_status()
        except httpx.HTTPError:
            continue
        scraped[component] = parse_samples(response.text)
    return scraped


def render(rows: list[StageRow]) -> Table:
    table = Table(title="pipeline (live)", title_justify="left", show_edge=False)
    table.add_column("stage", style="bold cyan", no_wrap=True)
    table.add_column("so far")
    for row in rows:
        table.add_row(row.stage, row.figures)
    return table


class LiveCounters:
    """Refresh the stage table until stopped: a live panel on a terminal, log lines otherwise."""

    def __init__(
        self,
        urls: Mapping[str, str],
        console: Console | None = None,
        interval: float = 1.0,
        log_every: float = 15.0,
    ) -> None:
        self.urls = dict(urls)
        self.console = console or Console()
        self.interval = interval
        self.log_every = log_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-counters", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with httpx.Client(timeout=0.8) as client:
            if self.console.is_terminal:
                with Live(console=self.console, refresh_per_second=2, transient=True) as live:
                    while not self._stop.wait(self.interval):
                        live.update(render(stage_rows(scrape(self.urls, client))))
                return
            waited = 0.0
            while not self._stop.wait(self.interval):
                waited += self.interval
                if waited >= self.log_every:
                    waited = 0.0
                    rows = stage_rows(scrape(self.urls, client))
                    log.info("pipeline: " + " | ".join(f"{r.stage}: {r.figures}" for r in rows))
