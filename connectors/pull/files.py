"""Files on an S3 prefix or in a local directory, and loading one file exactly to its end.

A file is identified by its location plus a version (S3 ETag, or size and mtime locally), so a
file replaced under the same name is read again. Progress is a cursor
``{"version": ..., "records": n, "done": bool}`` saved after each acknowledged batch: an
interrupted load skips the first ``n`` records when it resumes, a finished one is skipped.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from connectors.cursors import CursorStore
from connectors.pull.emitter import Emitter
from connectors.pull.formats import iter_records
from hosepipe.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FileRef:
    """One file to load: where it is and which version of it."""

    url: str  # s3://bucket/key or file:///abs/path
    name: str
    version: str
    size: int


class FileLocations:
    """Lists and opens files under ``s3://`` or ``file://`` URLs."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._s3: Any = None

    def _client(self) -> Any:
        if self._s3 is None:
            import boto3

            kwargs: Any = self._settings.s3_client_kwargs()
            self._s3 = boto3.client("s3", **kwargs)
        return self._s3

    def list(self, base_url: str, pattern: str = "*") -> list[FileRef]:
        """Files directly or recursively under ``base_url`` whose name matches ``pattern``."""
        parsed = urlparse(base_url)
        refs: list[FileRef] = []
        if parsed.scheme == "s3":
            paginator = self._client().get_paginator("list_objects_v2")
            prefix = parsed.path.lstrip("/")
            for page in paginator.paginate(Bucket=parsed.netloc, Prefix=prefix):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    name = key.rsplit("/", 1)[-1]
                    if key.endswith("/") or not fnmatch.fnmatch(name, pattern):
                        continue
                    refs.append(
                        FileRef(
                            f"s3://{parsed.netloc}/{key}",
                            name,
                            str(item.get("ETag", "")).strip('"'),
                            int(item["Size"]),
                        )
                    )
        elif parsed.scheme in ("file", ""):
            root = local_path(base_url)
            paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for path in paths:
                if fnmatch.fnmatch(path.name, pattern) and not path.name.startswith("."):
                    refs.append(self.ref_of_local(path))
        else:
            raise ValueError(f"{base_url}: only s3:// and file:// locations are supported")
        return sorted(refs, key=lambda r: r.url)

    @staticmethod
    def ref_of_local(path: Path) -> FileRef:
        stat = path.stat()
        return FileRef(
            path.resolve().as_uri(), path.name, f"{stat.st_size}-{stat.st_mtime_ns}", stat.st_size
        )

    def ref(self, location: str) -> FileRef:
        """The :class:`FileRef` of one file given as a path or URL."""
        parsed = urlparse(location)
        if parsed.scheme == "s3":
            key = parsed.path.lstrip("/")
            head = self._client().head_object(Bucket=parsed.netloc, Key=key)
            return FileRef(
                f"s3://{parsed.netloc}/{key}",
                key.rsplit("/", 1)[-1],
                str(head.get("ETag", "")).strip('"'),
                int(head["ContentLength"]),
            )
        path = local_path(location)
        if not path.is_file():
            raise FileNotFoundError(f"{location}: no such file")
        return self.ref_of_local(path)

    def open(self, ref: FileRef) -> AbstractContextManager[IO[bytes]]:
        return self._open(ref)

    @contextmanager
    def _open(self, ref: FileRef) -> Iterator[IO[bytes]]:
        parsed = urlparse(ref.url)
        if parsed.scheme == "s3":
            body = self._client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))[
                "Body"
            ]
            try:
                yield body
            finally:
                body.close()
        else:
            with local_path(ref.url).open("rb") as handle:
                yield handle


def local_path(location: str) -> Path:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path)
    return Path(location)


def _batches(
    locations: FileLocations, ref: FileRef, file_format: str, skip: int, size: int
) -> Iterator[list[dict[str, Any]]]:
    with locations.open(ref) as raw:
        batch: list[dict[str, Any]] = []
        for index, record in enumerate(iter_records(raw, ref.name, file_format)):
            if index < skip:
                continue
            batch.append(record)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


async def _threaded(iterator: Iterator[list[dict[str, Any]]]) -> Any:
    """Run a blocking batch iterator on a thread, one batch ahead of the consumer."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    done = object()

    def pump() -> None:
        try:
            for item in iterator:
                handoff.put(item)
            handoff.put(done)
        except BaseException as exc:
            handoff.put(exc)

    threading.Thread(target=pump, name="file-reader", daemon=True).start()
    while True:
        item = await asyncio.to_thread(handoff.get)
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


async def load_file(
    locations: FileLocations,
    ref: FileRef,
    emitter: Emitter,
    cursors: CursorStore,
    cursor_key: str,
    *,
    file_format: str = "auto",
    batch_size: int = 1000,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Load ``ref`` into the emitter's topic from where its cursor says; returns records sent
    in this call. The cursor is saved after every acknowledged batch and marked done at the end."""
    state = cursors.get(cursor_key) or {}
    if state.get("version") != ref.version:
        state = {}
    if state.get("done"):
        return 0
    done_records = int(state.get("records", 0))
    sent = 0
    async for batch in _threaded(_batches(locations, ref, file_format, done_records, batch_size)):
        await emitter.emit(batch)
        done_records += len(batch)
        sent += len(batch)
        await cursors.save(
            cursor_key, {"version": ref.version, "records": done_records, "done": False}
        )
        if on_progress:
            on_progress(len(batch), done_records)
    await cursors.save(cursor_key, {"version": ref.version, "records": done_records, "done": True})
    return sent
