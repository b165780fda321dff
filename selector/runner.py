"""``hosepipe select``: one run, or follow the lake every ``selection.follow_interval``.

A run lists the lake, asks :mod:`selector.plan` which files are new for this shard, reads
them a file at a time and hands groups of about ``selection.batch_rows`` rows to the
:class:`~selector.load.Loader`, each group one transaction with its checkpoint. With a
``--from/--to`` range it reloads every file of the overlapping partitions (rows filtered
to the range) without touching the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from sqlalchemy import Engine, text

from hosepipe.config import PipelineConfig
from hosepipe.db import check_schema_version
from selector.lakefiles import Lake
from selector.load import Loader, LoadResult, Method
from selector.metrics import SelectorMetrics
from selector.plan import LakeFile, Shard, files_to_load

log = logging.getLogger(__name__)

PROGRESS_MIN_FILES = 20


@dataclass
class RunOptions:
    """How a run is scoped: shard, optional reload range, upsert method."""

    shard: Shard = field(default_factory=Shard)
    start: datetime | None = None
    end: datetime | None = None
    method: Method = "copy"
    progress: bool = True

    @property
    def reload(self) -> bool:
        return self.start is not None or self.end is not None


@dataclass
class RunSummary:
    """Totals of one run."""

    files: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    pending: int = 0

    def add(self, result: LoadResult) -> None:
        self.files += result.files
        for table, count in result.tables.items():
            self.rows[table] = self.rows.get(table, 0) + count
        for rule, count in result.rejected.items():
            self.rejected[rule] = self.rejected.get(rule, 0) + count


def time_filter(start: datetime | None, end: datetime | None) -> pc.Expression | None:
    """Row filter ``start <= occurred_at < end`` (pushed down to row-group statistics)."""
    expression: pc.Expression | None = None
    if start is not None:
        expression = ds.field("occurred_at") >= pa.scalar(start, pa.timestamp("us", "UTC"))
    if end is not None:
        upper = ds.field("occurred_at") < pa.scalar(end, pa.timestamp("us", "UTC"))
        expression = upper if expression is None else expression & upper
    return expression


class Selector:
    """The selector process: a lake, a loader and metrics; :meth:`run_once` / :meth:`follow`."""

    def __init__(
        self,
        engine: Engine,
        pipeline: PipelineConfig,
        lake: Lake,
        options: RunOptions,
        metrics: SelectorMetrics | None = None,
        console: Console | None = None,
    ) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.lake = lake
        self.options = options
        self.metrics = metrics
        self.console = console or Console(stderr=True)
        self.loader = Loader(engine, pipeline.selection, options.shard, options.method)
        self.last_run: RunSummary | None = None
        self.last_error: str | None = None

    def check_schema(self) -> None:
        check_schema_version(self.engine, self.pipeline.selection)

    def plan(self) -> list[LakeFile]:
        """The files this run will read."""
        listed = self.lake.list_files(self.options.start, self.options.end)
        if self.options.reload:
            return files_to_load(listed, {}, self.options.shard)
        return files_to_load(listed, self.loader.checkpoints(), self.options.shard)

    def run_once(self, stop: threading.Event | None = None) -> RunSummary:
        """List, read and load everything pending; returns the totals."""
        started = time.monotonic()
        summary = RunSummary()
        files = self.plan()
        summary.pending = len(files)
        if self.metrics:
            self.metrics.pending_files.set(len(files))
        by_path = {f.path: f for f in files}
        row_filter = time_filter(self.options.start, self.options.end)
        batch_rows = self.pipeline.selection.batch_rows
        show = self.options.progress and len(files) >= PROGRESS_MIN_FILES
        with _progress(self.console, show) as progress:
            task = progress.add_task("loading lake files", total=len(files))
            group: list[tuple[LakeFile, pa.Table]] = []
            rows = 0
            for path, table in self.lake.read([f.path for f in files], row_filter):
                group.append((by_path[path], table))
                rows += table.num_rows
                if rows >= batch_rows:
                    self._commit(group, summary)
                    progress.advance(task, len(group))
                    group, rows = [], 0
                    if stop is not None and stop.is_set():
                        break
            if group:
                self._commit(group, summary)
                progress.advance(task, len(group))
        summary.seconds = time.monotonic() - started
        if self.metrics:
            self.metrics.run_seconds.observe(summary.seconds)
            self.metrics.last_success.set(time.time())
        self.last_run = summary
        if summary.files:
            log.info(
                "selection run done",
                extra={
                    "files": summary.files,
                    "rows": summary.rows,
                    "rejected": summary.rejected,
                    "seconds": round(summary.seconds, 3),
                    "shard": str(self.options.shard),
                },
            )
        return summary

    def _commit(self, group: list[tuple[LakeFile, pa.Table]], summary: RunSummary) -> None:
        result = self.loader.load(group, checkpoint=not self.options.reload)
        summary.add(result)
        if self.metrics:
            self.metrics.files_loaded.inc(result.files)
            for table, count in result.tables.items():
                self.metrics.rows_loaded.labels(table).inc(count)
            for rule, count in result.rejected.items():
                self.metrics.rows_rejected.labels(rule).inc(count)

    def follow(self, stop: threading.Event, on_error: Callable[[Exception], None]) -> None:
        """Run every ``selection.follow_interval`` until ``stop``; errors are reported, retried.

        Holds a session advisory lock per shard, so a second follower of the same shard waits
        instead of loading the same files twice.
        """
        interval = self.pipeline.selection.follow_interval.total_seconds()
        # One follower per shard and schema (advisory locks are per database; tests and
        # tenants may share one database in several schemas).
        lock = text("SELECT pg_try_advisory_lock(hashtext(current_schema() || ':select:' || :s))")
        unlock = text("SELECT pg_advisory_unlock(hashtext(current_schema() || ':select:' || :s))")
        shard = str(self.options.shard)
        with self.engine.connect() as lock_conn:
            while not lock_conn.execute(lock, {"s": shard}).scalar_one():
                log.info("another selector holds this shard; waiting", extra={"shard": shard})
                if stop.wait(max(interval, 1.0)):
                    return
            lock_conn.commit()
            try:
                while not stop.is_set():
                    try:
                        self.run_once(stop)
                        self.last_error = None
                    except Exception as exc:
                        self.last_error = f"{type(exc).__name__}: {exc}"
                        on_error(exc)
                    stop.wait(interval)
            finally:
                with contextlib.suppress(Exception):  # a lost connection released it already
                    lock_conn.execute(unlock, {"s": shard})
                    lock_conn.commit()

    def health(self) -> dict[str, object]:
        return {
            "ok": self.last_error is None,
            "error": self.last_error,
            "shard": str(self.options.shard),
            "last_run_files": self.last_run.files if self.last_run else None,
        }


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int) -> TaskID:
        return TaskID(0)

    def advance(self, task: TaskID, amount: int) -> None:
        return None


def _progress(console: Console, show: bool) -> Progress | _NoProgress:
    if not show or not console.is_terminal:
        return _NoProgress()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
