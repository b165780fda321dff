"""``hosepipe select``: one run, or follow the lake every ``selection.follow_interval``.

A run lists the lake and asks :mod:`selector.plan` which files are new for this shard
(following, it reads the lake's file log instead, :mod:`selector.filelog`, and lists only at
start and every ``selection.rescan_interval``), reads them (threads fetch the files ahead
while the current group is written) and hands groups of about ``selection.batch_rows``
rows, however many files that takes, to the :class:`~selector.load.Loader`, each group one
transaction with its checkpoint. With a ``--from/--to`` range it reloads every file of the
overlapping partitions (rows filtered to the range) without touching the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
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
from sqlalchemy import Connection, Engine, text

from hosepipe.config import PipelineConfig
from hosepipe.db import check_schema_version
from selector.failures import FailureLog
from selector.filelog import FileLogReader, FileLogUnavailable, Positions
from selector.lakefiles import Lake
from selector.load import Loader, LoadResult, Method
from selector.metrics import SelectorMetrics
from selector.plan import LakeFile, Shard, files_to_load

log = logging.getLogger(__name__)

PROGRESS_MIN_FILES = 20
LOG_RETRY_SECONDS = 60.0
"""How long a follower lists the lake after the file log could not be read (broker down)."""


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
    """Row filter ``start <= occurred_at < end`` (applied to each file as it is decoded)."""
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
        file_log: FileLogReader | None = None,
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
        self.file_log = file_log
        self._log_positions: Positions | None = None
        """Where this shard is in the file log (None: not read from PostgreSQL yet)."""
        self._next_rescan = 0.0
        self._log_retry_at = 0.0
        """After the log could not be read, passes list the lake until then."""
        self._discovery = ""

    def check_schema(self) -> None:
        check_schema_version(self.engine, self.pipeline.selection)

    def plan(self) -> list[LakeFile]:
        """The files this run will read."""
        listed = self.lake.list_files(self.options.start, self.options.end)
        if self.options.reload:
            return files_to_load(listed, {}, self.options.shard)
        return files_to_load(listed, self.loader.checkpoints(), self.options.shard)

    def discover(self) -> tuple[list[LakeFile], Positions | None]:
        """The files of this pass, and the file-log positions to store once they are loaded.

        Without a file log (one-off runs, reloads) that is :meth:`plan`. Following, it is
        the files announced since the stored position, plus a listing of the lake at start,
        every ``selection.rescan_interval`` and whenever the position cannot be used (none
        stored yet, outside the log, log unreadable): then the log's end is taken before the
        listing, so every file is in one or the other.
        """
        if self.file_log is None or self.options.reload:
            return self.plan(), None
        topic = self.file_log.topic
        now = time.monotonic()
        if now < self._log_retry_at:
            return self.plan(), None
        try:
            if self._log_positions is None:
                self._log_positions = self.loader.log_positions(topic)
            read = self.file_log.read(self._log_positions) if self._log_positions else None
            ends = self.file_log.end_positions() if read is None else read.positions
        except FileLogUnavailable as exc:
            self._discovering("listing", f"file log unreadable: {exc}")
            self._log_retry_at = now + LOG_RETRY_SECONDS
            return self.plan(), None
        if read is None:
            self._discovering(
                "listing" if ends is None else "log",
                "file log not created yet" if ends is None else "position taken, lake listed",
            )
            self._rescanned(now)
            return self.plan(), ends
        self._discovering("log", "following the file log")
        announced = {f.path: f for f in read.files if self.options.shard.owns(f.partition)}
        if now >= self._next_rescan:
            self._rescanned(now)
            for file in self.plan():
                announced.setdefault(file.path, file)
        return sorted(announced.values()), read.positions

    def _rescanned(self, now: float) -> None:
        interval = self.pipeline.selection.rescan_interval.total_seconds()
        self._next_rescan = now + interval if interval > 0 else float("inf")

    def _discovering(self, mode: str, why: str) -> None:
        if mode != self._discovery:
            log.info(
                f"selector discovers new files by {mode}: {why}",
                extra={"shard": str(self.options.shard)},
            )
            self._discovery = mode

    def run_once(self, stop: threading.Event | None = None) -> RunSummary:
        """List (or read the file log), read and load everything pending; returns the totals."""
        started = time.monotonic()
        summary = RunSummary()
        files, positions = self.discover()
        discovered = time.monotonic() - started
        summary.pending = len(files)
        if self.metrics:
            self.metrics.pending_files.set(len(files))
        by_path = {f.path: f for f in files}
        row_filter = time_filter(self.options.start, self.options.end)
        batch_rows = self.pipeline.selection.batch_rows
        show = self.options.progress and len(files) >= PROGRESS_MIN_FILES
        with (
            _progress(self.console, show) as progress,
            contextlib.closing(
                self.lake.read(files, row_filter, missing_ok=positions is not None)
            ) as tables,
        ):
            task = progress.add_task("loading lake files", total=len(files))
            group: list[tuple[LakeFile, pa.Table]] = []
            rows = 0
            stopped = False
            for path, table in tables:
                if table is None:  # announced, then removed from the lake by someone
                    log.warning("announced lake file is gone; skipped", extra={"path": path})
                    progress.advance(task, 1)
                    continue
                group.append((by_path[path], table))
                rows += table.num_rows
                if rows >= batch_rows:
                    self._commit(group, summary)
                    progress.advance(task, len(group))
                    group, rows = [], 0
                    if stop is not None and stop.is_set():
                        stopped = True
                        break
            if group:
                self._commit(group, summary)
                progress.advance(task, len(group))
        if positions is not None and not stopped and positions != self._log_positions:
            assert self.file_log is not None
            self.loader.save_log_positions(self.file_log.topic, positions)
            self._log_positions = positions
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
                    "discovery_seconds": round(discovered, 3),
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

    def follow(
        self, stop: threading.Event, on_error: Callable[[Exception], None] | None = None
    ) -> None:
        """Run every ``selection.follow_interval`` until ``stop``; failed runs are retried.

        A pass that loaded files is followed by the next one at once (the lake may hold more
        by then); only a pass that found nothing new waits the interval.

        Holds a session advisory lock per shard, so a second follower of the same shard waits
        instead of loading the same files twice; when PostgreSQL drops the lock's session
        (a restart), the follower takes the lock again before its next run. Failures are
        logged one line per change of state (:mod:`selector.failures`); ``on_error`` is
        called for every failed run.
        """
        interval = self.pipeline.selection.follow_interval.total_seconds()
        failures = FailureLog()
        while not stop.is_set():
            try:
                with self._shard_lock(stop, interval) as lock_conn:
                    if lock_conn is None:
                        return
                    self._follow_locked(stop, interval, lock_conn, failures, on_error)
                    return
            except _LockLost:
                continue
            except Exception as exc:  # PostgreSQL down while taking the lock
                self._failed(exc, failures, on_error)
                stop.wait(interval)

    def _follow_locked(
        self,
        stop: threading.Event,
        interval: float,
        lock_conn: Connection,
        failures: FailureLog,
        on_error: Callable[[Exception], None] | None,
    ) -> None:
        while not stop.is_set():
            if not _alive(lock_conn):  # one round trip per pass: is the lock still ours?
                raise _LockLost
            try:
                summary = self.run_once(stop)
                self.last_error = None
                report = failures.succeeded(time.monotonic())
                if report is not None:
                    log.info(report.message, extra={"shard": str(self.options.shard)})
                if summary.files:
                    # Files came in while this pass ran (it is catching up): look again at
                    # once instead of idling an interval with the lake ahead of PostgreSQL.
                    continue
            except Exception as exc:
                self._failed(exc, failures, on_error)
            stop.wait(interval)

    def _failed(
        self,
        exc: Exception,
        failures: FailureLog,
        on_error: Callable[[Exception], None] | None,
    ) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        report = failures.failed(exc, time.monotonic())
        if report is not None:
            log.log(
                logging.WARNING if report.warning else logging.INFO,
                report.message,
                extra={"shard": str(self.options.shard)},
                exc_info=exc if report.traceback else None,
            )
        if on_error is not None:
            on_error(exc)

    @contextlib.contextmanager
    def _shard_lock(self, stop: threading.Event, interval: float) -> Iterator[Connection | None]:
        """A connection holding this shard's advisory lock (None when ``stop`` came first)."""
        # One follower per shard and schema (advisory locks are per database; tests and
        # tenants may share one database in several schemas).
        lock = text("SELECT pg_try_advisory_lock(hashtext(current_schema() || ':select:' || :s))")
        unlock = text("SELECT pg_advisory_unlock(hashtext(current_schema() || ':select:' || :s))")
        shard = str(self.options.shard)
        with self.engine.connect() as lock_conn:
            waiting = False
            while not lock_conn.execute(lock, {"s": shard}).scalar_one():
                if not waiting:
                    log.info("another selector holds this shard; waiting", extra={"shard": shard})
                    waiting = True
                if stop.wait(max(interval, 1.0)):
                    yield None
                    return
            lock_conn.commit()
            if waiting:
                log.info("took over this shard", extra={"shard": shard})
            try:
                yield lock_conn
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


class _LockLost(Exception):
    """The session holding the shard's advisory lock is gone (PostgreSQL restarted)."""


def _alive(conn: Connection) -> bool:
    try:
        conn.execute(text("SELECT 1"))
        conn.commit()
    except Exception:
        with contextlib.suppress(Exception):
            conn.invalidate()
        return False
    return True


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
