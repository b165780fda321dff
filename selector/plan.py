"""What the selector loads next: pure decisions over a lake listing and the checkpoint.

No I/O here. The shell lists the lake (:mod:`selector.lakefiles`), reads the checkpoint
(``selector_files``) and asks these functions which files to load, in which order, on which
shard, and which partitions a ``--from/--to`` range touches.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_DT = re.compile(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})(?:/|$)")
_HOUR = re.compile(r"(?:^|/)hour=(\d{1,2})(?:/|$)")


@dataclass(frozen=True, order=True)
class LakeFile:
    """One data file of the lake, as listed (path relative to the lake root)."""

    path: str
    size: int
    etag: str | None = None

    @property
    def partition(self) -> str:
        """The Hive partition directory (``source=x/dt=.../hour=HH``); '' at the root."""
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


@dataclass(frozen=True)
class Checkpoint:
    """A file the checkpoint says is loaded."""

    size: int
    etag: str | None = None


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``--shard i/n``, 0-based)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = _SHARD.match(text)
        if not match:
            raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4")
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {text!r}: need 0 <= i < n and n >= 1")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, partition: str) -> bool:
        """Whether this shard loads files of ``partition`` (a stable hash, never overlapping)."""
        return self.count == 1 or shard_of(partition, self.count) == self.index


def shard_of(partition: str, count: int) -> int:
    """Stable shard number of a partition path: the same on every machine and Python run."""
    digest = hashlib.sha256(partition.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def files_to_load(
    listed: Iterable[LakeFile], loaded: Mapping[str, Checkpoint], shard: Shard = Shard()
) -> list[LakeFile]:
    """Files of ``shard`` not in the checkpoint, or changed since (other size or etag).

    Per file rather than per hour: a late event writes a new file into an old hour, and a
    replayed file (same deterministic name) with other content is loaded again.
    Sorted by path, i.e. by partition, then topic/partition/offset.
    """
    todo = []
    for file in listed:
        if not shard.owns(file.partition):
            continue
        seen = loaded.get(file.path)
        if seen is not None and seen.size == file.size and _same_etag(seen.etag, file.etag):
            continue
        todo.append(file)
    return sorted(todo)


def _same_etag(seen: str | None, listed: str | None) -> bool:
    return seen is None or listed is None or seen == listed


def partition_hour(partition: str) -> datetime | None:
    """Start of the hour a partition path covers (UTC); None if it names no dt=."""
    dt = _DT.search(partition)
    if not dt:
        return None
    start = datetime.combine(date.fromisoformat(dt[1]), datetime.min.time(), tzinfo=UTC)
    hour = _HOUR.search(partition)
    return start + timedelta(hours=int(hour[1])) if hour else start


def partition_overlaps(partition: str, start: datetime | None, end: datetime | None) -> bool:
    """Whether a partition's hour (or day, without hour=) may hold events in [start, end)."""
    first = partition_hour(partition)
    if first is None:
        return True
    width = timedelta(hours=1) if _HOUR.search(partition) else timedelta(days=1)
    if start is not None and first + width <= start:
        return False
    return not (end is not None and first >= end)


def parse_instant(text: str, option: str) -> datetime:
    """``2026-11-22``, ``2026-11-22T05`` or full ISO-8601 → aware UTC datetime."""
    value = text.strip()
    try:
        if len(value) == 13 and value[10] in "T ":  # 2026-11-22T05
            value += ":00"
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{option} {text!r}: not an ISO-8601 date or time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
