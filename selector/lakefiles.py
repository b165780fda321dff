"""The selector's view of the lake: list data files, read some of them as Arrow.

Layout, schema and filesystem come from :mod:`hosepipe.lake` (shared with the sink).
Listing is one recursive listing (S3: ListObjectsV2 pages of 1,000 keys), pruned by
partition path before anything is read; reading goes through a pyarrow dataset over the
chosen files with the lake's Hive partitioning, so filters on ``occurred_at``, ``source``
and ``event_type`` push down to Parquet row-group statistics and partition values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from hosepipe.lake import PARQUET_SUFFIX, dataset_schema, hive_partitioning, open_lake_filesystem
from selector.load import EVENT_COLUMNS
from selector.plan import LakeFile, partition_overlaps

if TYPE_CHECKING:
    from hosepipe.settings import Settings


@dataclass(frozen=True)
class Lake:
    """A lake filesystem, its base path, and the partition keys before ``dt=/hour=``."""

    filesystem: pafs.FileSystem
    base: str
    keys: tuple[str, ...] = ()

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

    def read(
        self,
        paths: Sequence[str],
        row_filter: pc.Expression | None = None,
        batch_rows: int = 65_536,
    ) -> Iterator[tuple[str, pa.Table]]:
        """``(path, table)`` per file, in the given order, with ``row_filter`` pushed down."""
        schema = dataset_schema(self.keys)
        for path in paths:
            dataset = ds.dataset(
                [f"{self.base}/{path}"],
                filesystem=self.filesystem,
                format="parquet",
                partitioning=hive_partitioning(self.keys),
                partition_base_dir=self.base,
                schema=schema,
            )
            table = dataset.to_table(
                columns=list(EVENT_COLUMNS), filter=row_filter, batch_size=batch_rows
            )
            yield path, table


def _etag(entry: pafs.FileInfo) -> str | None:
    mtime = entry.mtime_ns
    return str(mtime) if mtime is not None else None
