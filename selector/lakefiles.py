"""The selector's view of the lake: list data files, read some of them as Arrow.

Layout, schema and filesystem come from :mod:`hosepipe.lake` (shared with the sink).
Listing is one recursive listing (S3: ListObjectsV2 pages of 1,000 keys), pruned by
partition path before anything is read.

Reading costs one GET per file: the sink's files are small (the late events of a flush
spread over dozens of hour partitions, a few hundred rows each), so a file's fixed cost
(requests, Parquet open) matters more than its rows. Each file is fetched whole
(``open_input_stream``, no HEAD or ranged reads) and decoded from memory; a pool of threads
does that for the files ahead of the one the caller is at (both release the GIL), bounded by
bytes and files, so the lake is read while the previous group is written to PostgreSQL.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hosepipe.lake import PARQUET_SUFFIX, dataset_schema, open_lake_filesystem
from selector.load import EVENT_COLUMNS
from selector.plan import LakeFile, partition_overlaps

if TYPE_CHECKING:
    from hosepipe.settings import Settings

READ_THREADS = 4
READ_AHEAD_BYTES = 4 * 1024 * 1024  # Parquet bytes fetched ahead of the caller
READ_AHEAD_FILES = 256


@dataclass(frozen=True)
class Lake:
    """A lake filesystem, its base path, and the partition keys before ``dt=/hour=``."""

    filesystem: pafs.FileSystem
    base: str
    keys: tuple[str, ...] = ()
    schema: pa.Schema = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        full = dataset_schema(self.keys)
        object.__setattr__(self, "schema", pa.schema([full.field(n) for n in EVENT_COLUMNS]))

    @classmethod
    def open(cls, settings: Settings, keys: Sequence[str] = ()) -> Lake:
        filesystem, base = open_lake_filesystem(settings)
        return cls(filesystem, base.rstrip("/"), tuple(keys))

    def list_files(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> list[LakeFile]:
        """Every data file (hidden/temp names skipped), pruned to partitions in [start, end)."""
        info = self.filesystem.get_file_info(self.base)
        if info.type == pafs.FileType.NotFound:
            return []
        selector = pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        files = []
        prefix = self.base + "/"
        for entry in self.filesystem.get_file_info(selector):
            if entry.type != pafs.FileType.File or not entry.path.endswith(PARQUET_SUFFIX):
                continue
            relative = entry.path[len(prefix) :] if entry.path.startswith(prefix) else entry.path
            if any(part.startswith((".", "_")) for part in relative.split("/")):
                continue
            file = LakeFile(relative, int(entry.size or 0), _etag(entry))
            if partition_overlaps(file.partition, start, end):
                files.append(file)
        return files

    def read_file(self, path: str, row_filter: pc.Expression | None = None) -> pa.Table:
        """One file's events (one GET), conformed to the event columns, ``row_filter`` applied."""
        with self.filesystem.open_input_stream(f"{self.base}/{path}", compression=None) as stream:
            data = stream.read_buffer()
        return self.decode(data, row_filter)

    def decode(self, data: pa.Buffer | bytes, row_filter: pc.Expression | None = None) -> pa.Table:
        """A Parquet file in memory as a table of the event columns (types as the lake's).

        A column missing from an older file reads as nulls, another type is cast (as a
        dataset with the lake's schema would).
        """
        parquet = pq.ParquetFile(pa.BufferReader(data))
        present = set(parquet.schema_arrow.names)
        table = parquet.read(columns=[n for n in EVENT_COLUMNS if n in present], use_threads=False)
        if table.schema != self.schema:
            table = pa.Table.from_arrays(
                [
                    table[f.name].cast(f.type)
                    if f.name in present
                    else pa.nulls(table.num_rows, f.type)
                    for f in self.schema
                ],
                schema=self.schema,
            )
        if row_filter is not None:
            table = table.filter(row_filter)
        return table

    def read(
        self,
        files: Sequence[LakeFile | str],
        row_filter: pc.Expression | None = None,
        threads: int = READ_THREADS,
        ahead_bytes: int = READ_AHEAD_BYTES,
        *,
        missing_ok: bool = False,
    ) -> Generator[tuple[str, pa.Table | None], None, None]:
        """``(path, table)`` per file, in the given order, ``row_filter`` applied.

        With ``missing_ok`` a file that does not exist yields ``(path, None)`` instead of
        raising ``FileNotFoundError`` (files named by the file log, not by a listing).

        Files ahead of the caller are fetched and decoded by ``threads`` threads, up to
        ``ahead_bytes`` (listed sizes) or :data:`READ_AHEAD_FILES` files not yet handed out,
        at least one. Closing the iterator early cancels what is not started.
        """
        items = [(f.path, f.size) if isinstance(f, LakeFile) else (f, 0) for f in files]
        if not items:
            return
        pool = ThreadPoolExecutor(max(1, min(threads, len(items))), thread_name_prefix="lake")
        pending: deque[tuple[str, int, Future[pa.Table | None]]] = deque()
        ahead = 0
        position = 0
        try:
            while position < len(items) or pending:
                while position < len(items) and (
                    not pending
                    or (
                        len(pending) < READ_AHEAD_FILES
                        and ahead + items[position][1] <= ahead_bytes
                    )
                ):
                    path, size = items[position]
                    position += 1
                    read = self._read_if_present if missing_ok else self.read_file
                    pending.append((path, size, pool.submit(read, path, row_filter)))
                    ahead += size
                path, size, future = pending.popleft()
                ahead -= size
                yield path, future.result()
        finally:
            for _, _, future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _read_if_present(
        self, path: str, row_filter: pc.Expression | None = None
    ) -> pa.Table | None:
        try:
            return self.read_file(path, row_filter)
        except FileNotFoundError:
            return None


def _etag(entry: pafs.FileInfo) -> str | None:
    mtime = entry.mtime_ns
    return str(mtime) if mtime is not None else None
