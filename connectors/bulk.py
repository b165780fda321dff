"""``hosepipe bulk-load``: backfill history files into ``raw.<source>``.

Through the raw topic rather than straight into the lake, so there is one normalization path
(the stream stage), deduplication applies to backfill and live data alike, and the lake keeps
its deterministic ``<topic>+<partition>+<offset>`` file names. Progress is a cursor per file
(``bulk/<source>/<url>``) in the cursor topic, saved after each acknowledged batch: an
interrupted run resumes after the last acknowledged batch, and a rerun skips finished files.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from connectors.cursors import CursorStore
from connectors.delivery import DeliveryProducer
from connectors.pull.emitter import Emitter
from connectors.pull.files import FileLocations, FileRef, load_file, local_path
from connectors.pull.formats import FormatError
from connectors.records import record_key
from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings
from hosepipe.topics import ensure_topics

log = logging.getLogger(__name__)


class BulkLoadError(Exception):
    """The load cannot start or a file cannot be read; the message names source and file."""


@dataclass
class BulkSummary:
    """What a bulk-load run did."""

    source: str
    loaded: dict[str, int] = field(default_factory=dict)  # url -> records sent in this run
    skipped: list[str] = field(default_factory=list)  # already complete before this run

    def __str__(self) -> str:
        records = sum(self.loaded.values())
        return (
            f"bulk-load {self.source}: {records} record(s) from {len(self.loaded)} file(s); "
            f"{len(self.skipped)} file(s) already loaded, skipped"
        )


def resolve(locations: FileLocations, items: Iterable[str]) -> list[FileRef]:
    """Files named on the command line; a directory or an s3 prefix ending in '/' expands."""
    refs: list[FileRef] = []
    for item in items:
        try:
            if item.endswith("/") or (not item.startswith("s3://") and _is_dir(item)):
                refs.extend(locations.list(item))
            else:
                refs.append(locations.ref(item))
        except FileNotFoundError as exc:
            raise BulkLoadError(str(exc)) from exc
        except Exception as exc:
            raise BulkLoadError(f"{item}: {type(exc).__name__}: {exc}") from exc
    return refs


def _is_dir(item: str) -> bool:
    return local_path(item).is_dir()


async def bulk_load(
    settings: Settings,
    pipeline: PipelineConfig,
    source: str,
    files: Iterable[str],
    *,
    file_format: str = "auto",
    cursor_topic: str | None = None,
    batch_size: int = 5000,
    show_progress: bool = True,
) -> BulkSummary:
    """Load ``files`` into ``raw.<source>``; see the module docstring for resumption."""
    config = pipeline.sources.get(source)
    if config is None:
        raise BulkLoadError(f"unknown source {source!r} (sources: {', '.join(pipeline.sources)})")
    locations = FileLocations(settings)
    refs = await asyncio.to_thread(resolve, locations, files)
    await asyncio.to_thread(ensure_topics, settings, pipeline)
    producer = DeliveryProducer.from_settings(settings, "hosepipe-bulk-load")
    summary = BulkSummary(source)
    try:
        cursors = await asyncio.to_thread(
            CursorStore.open, settings, producer, cursor_topic or pipeline.topics.cursors
        )
        emitter = Emitter(
            producer, pipeline.raw_topic(source), source, record_key(source, config), "bulk"
        )
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[records]} records"),
            TimeElapsedColumn(),
            disable=not show_progress,
            transient=False,
        )
        with progress:
            overall = progress.add_task(f"{source}: files", total=len(refs), records=0)
            total_records = 0
            for ref in refs:
                key = f"bulk/{source}/{ref.url}"
                state: dict[str, Any] = cursors.get(key) or {}
                if state.get("done") and state.get("version") == ref.version:
                    summary.skipped.append(ref.url)
                    progress.advance(overall)
                    continue
                task = progress.add_task(ref.name, total=None, records=state.get("records", 0))

                def on_progress(batch: int, done: int, task: Any = task) -> None:
                    nonlocal total_records
                    total_records += batch
                    progress.update(task, records=done)
                    progress.update(overall, records=total_records)

                try:
                    sent = await load_file(
                        locations,
                        ref,
                        emitter,
                        cursors,
                        key,
                        file_format=file_format,
                        batch_size=batch_size,
                        on_progress=on_progress,
                    )
                except FormatError as exc:
                    raise BulkLoadError(
                        f"source {source}: {exc} (records before it are loaded; fix the file "
                        "and rerun to continue)"
                    ) from exc
                summary.loaded[ref.url] = sent
                progress.update(task, total=1, completed=1)
                progress.advance(overall)
                log.info("file loaded", extra={"source": source, "file": ref.url, "records": sent})
    finally:
        await asyncio.to_thread(producer.close)
    return summary


def run_bulk_load(
    settings: Settings,
    pipeline: PipelineConfig,
    source: str,
    files: Iterable[str],
    *,
    file_format: str = "auto",
    cursor_topic: str | None = None,
) -> BulkSummary:
    """Blocking entry point of ``hosepipe bulk-load``."""
    if file_format not in ("auto", "jsonl", "csv"):
        raise BulkLoadError(f"--format must be auto, jsonl or csv, not {file_format!r}")
    return asyncio.run(
        bulk_load(
            settings,
            pipeline,
            source,
            list(files),
            file_format=file_format,
            cursor_topic=cursor_topic,
        )
    )
