"""The I/O shell of ``hosepipe select``: engine, lake, metrics endpoint, signals."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from hosepipe.config import PipelineConfig
from hosepipe.db import SchemaBehindError, sync_engine
from hosepipe.observability import serve_metrics
from hosepipe.runtime import settle_garbage_collector
from hosepipe.settings import Settings
from selector.filelog import FileLogReader
from selector.lakefiles import Lake
from selector.metrics import SelectorMetrics
from selector.runner import RunOptions, RunSummary, Selector

log = logging.getLogger(__name__)


class SelectError(Exception):
    """The selector cannot start or a run failed; the message says what and where."""


def build_selector(
    settings: Settings, pipeline: PipelineConfig, options: RunOptions, *, follow: bool = False
) -> Selector:
    """A selector wired to the database and lake of ``settings`` (no metrics); following,
    it reads the lake's file log (``topics.file_log``) instead of listing every pass."""
    engine = sync_engine(settings)
    lake = Lake.open(settings, pipeline.sink.partition_keys)
    file_log = FileLogReader(settings, pipeline.topics.file_log) if follow else None
    return Selector(engine, pipeline, lake, options, file_log=file_log)


def run_select(
    settings: Settings, pipeline: PipelineConfig, options: RunOptions, *, follow: bool
) -> RunSummary | None:
    """Run once (returns the summary) or follow until SIGTERM/SIGINT (returns None)."""
    selector = build_selector(settings, pipeline, options, follow=follow)
    selector.metrics = SelectorMetrics.create()
    try:
        selector.check_schema()
    except SchemaBehindError as exc:
        raise SelectError(str(exc)) from exc
    server = None
    if settings.metrics_port:
        server = serve_metrics(settings.bind_host, settings.metrics_port, selector.health)
    # A pass holds a batch's rows as Python objects (parsed payloads, typed rule rows):
    # with the default thresholds the collector walked them over and over, two thirds of
    # the rule projection's cost.
    settle_garbage_collector(100_000, 50, 100)
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("stopping after the current transaction", extra={"signal": signum})
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if not follow:
            try:
                summary = selector.run_once(stop)
            except Exception as exc:
                raise SelectError(f"selection run failed: {type(exc).__name__}: {exc}") from exc
            print(
                f"loaded {summary.files} file(s): "
                + (", ".join(f"{t}={n}" for t, n in summary.rows.items()) or "nothing new")
                + (f"; rejected {summary.rejected}" if summary.rejected else "")
                + f" in {summary.seconds:.2f}s"
            )
            return summary

        log.info(
            "selector following the lake",
            extra={
                "interval_s": pipeline.selection.follow_interval.total_seconds(),
                "shard": str(options.shard),
            },
        )
        selector.follow(stop)  # logs one line per change of state (selector.failures)
        return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop()
        selector.engine.dispose()
        if selector.file_log is not None:
            selector.file_log.close()
