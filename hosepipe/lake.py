"""The lake layout, shared by the sink (writer), the selector and bulk loads (readers).

Everything that says *where* a canonical event lives in the lake and *how* it is stored is
defined here, once:

Layout::

    <lake_url>/[source=<s>/][event_type=<t>/]dt=YYYY-MM-DD/hour=HH/<topic>+<partition>+<offset>.parquet

- ``lake_url`` is ``HOSEPIPE_LAKE_URL``: ``s3://bucket/prefix`` or ``file:///abs/dir``
  (``file://rel/dir`` is relative to the working directory). :class:`LakeLocation` parses it.
- Partition directories are Hive-style on **event time** (``occurred_at``, UTC):
  :func:`partition_path`. Optional leading keys come from ``sink.partition_keys``
  (``source``, ``event_type``); their values are percent-encoded (``quote(v, safe="")``),
  which is what pyarrow's and DuckDB's Hive readers decode.
- File names are a pure function of Kafka coordinates: :func:`data_file_name` gives
  ``<topic>+<partition>+<first offset, zero-padded to 20 digits>.parquet`` (padding keeps a
  listing in offset order); :func:`parse_data_file_name` inverts it. A replay after a crash
  rewrites the same names, so the lake never holds a row twice.

Parquet files:

- Columns: :func:`canonical_arrow_schema` — derived from ``schemas/canonical_event.avsc``
  (:func:`arrow_schema_from_avro`): strings as ``string``, ``occurred_at``/``ingested_at`` as
  ``timestamp[us, tz=UTC]``, ``subject`` nullable, ``payload`` JSON text as ``string``,
  ``attributes`` as ``map<string, string>``. Partition keys are *not* repeated as columns
  except ``source``/``event_type``, which are event fields anyway.
- :func:`events_to_table` builds a table from canonical event dicts (or column lists);
  :func:`parquet_bytes` serializes it (zstd default, snappy or none; row groups; statistics).

Partition column types, for readers (pick these, do not let readers infer them):

- ``dt`` is a **string** ``YYYY-MM-DD`` (lexical order = date order, so ``dt >= '2026-11-01'``
  prunes);
- ``hour`` is an **int32** ``0..23`` (the directory says ``hour=03``; readers parse it to 3).
  pyarrow would infer int32 anyway, but DuckDB infers ``dt`` as DATE and ``hour`` as BIGINT,
  so pass :func:`hive_partitioning` to pyarrow and :func:`duckdb_hive_types` to DuckDB.
- extra keys (``source``, ``event_type``) are strings.

Durable writes (:class:`LakeStore`, from :func:`open_lake_store`): ``put`` returns only once
the object is complete and durable, and an object is never visible half-written:

- ``file://``: write ``.<name>.tmp-<random>`` in the target directory, fsync, ``os.replace``
  onto the final name, fsync the directory. Readers skip names starting with ``.``.
- ``s3://``: one PUT, or a multipart upload that is completed (or aborted on failure) by
  boto3's transfer manager; botocore retries with the ``standard`` (or ``adaptive``) mode.

Readers: :func:`open_lake_filesystem` gives a pyarrow filesystem and base path,
:func:`lake_dataset` a ``pyarrow.dataset.Dataset`` with the right partitioning and schema
(filters on ``dt``/``hour``/keys prune directories), :func:`duckdb_read_parquet_sql` a DuckDB
``read_parquet(...)`` expression for the same lake through a registered filesystem.
"""

from __future__ import annotations

import io
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    from hosepipe.settings import Settings

PARTITION_KEYS: tuple[str, ...] = ("source", "event_type")
"""Event fields allowed as extra Hive keys before ``dt=``/``hour=``."""

TIME_KEYS: tuple[str, ...] = ("dt", "hour")
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
MICROS_PER_HOUR = 3_600_000_000
OFFSET_DIGITS = 20
PARQUET_SUFFIX = ".parquet"
PROBE_KEY = ".hosepipe-write-probe"
"""Empty object the sink writes at the lake root to tell when a down lake is back (readers
skip names starting with ``.``)."""
Compression = Literal["zstd", "snappy", "none"]

FIRST_VALID_HOUR = -62_135_596_800 // 3600
"""Hour index of 0001-01-01T00:00Z."""
END_VALID_HOUR = 253_402_300_800 // 3600
"""Hour index of 10000-01-01T00:00Z (exclusive end)."""
INVALID_TIME_PARTITION = "dt=invalid/hour=00"
"""Where events whose ``occurred_at`` lies outside years 1..9999 land (``hour`` stays an int)."""

_FILE_NAME = re.compile(r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<offset>\d+)\.parquet$")


class LakeError(Exception):
    """A lake URL, key or write is invalid or failed; the message names the location."""


# --------------------------------------------------------------------------- schema


def _arrow_type(avro_type: Any, where: str) -> tuple[pa.DataType, bool]:
    """Arrow type and nullability of one Avro field type."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1:
            raise LakeError(f"{where}: only [null, T] unions map to Arrow, got {avro_type}")
        arrow, _ = _arrow_type(branches[0], where)
        return arrow, "null" in avro_type
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        kind = avro_type.get("type")
        if logical == "timestamp-micros" and kind == "long":
            return pa.timestamp("us", tz="UTC"), False
        if logical == "timestamp-millis" and kind == "long":
            return pa.timestamp("ms", tz="UTC"), False
        if kind == "map":
            values, _ = _arrow_type(avro_type["values"], where + ".values")
            return pa.map_(pa.string(), values), False
        if kind == "array":
            items, _ = _arrow_type(avro_type["items"], where + ".items")
            return pa.list_(items), False
        return _arrow_type(kind, where)
    primitives: dict[str, pa.DataType] = {
        "string": pa.string(),
        "long": pa.int64(),
        "int": pa.int32(),
        "boolean": pa.bool_(),
        "double": pa.float64(),
        "float": pa.float32(),
        "bytes": pa.binary(),
    }
    if avro_type in primitives:
        return primitives[avro_type], False
    raise LakeError(f"{where}: Avro type {avro_type!r} has no Arrow mapping in the lake")


def arrow_schema_from_avro(avro_schema: Mapping[str, Any]) -> pa.Schema:
    """Arrow schema of the Parquet files for an Avro record schema (field order kept)."""
    fields = []
    for field in avro_schema["fields"]:
        where = f"{avro_schema.get('name', 'record')}.{field['name']}"
        arrow, nullable = _arrow_type(field["type"], where)
        metadata = {"doc": field["doc"]} if field.get("doc") else None
        fields.append(pa.field(field["name"], arrow, nullable=nullable, metadata=metadata))
    return pa.schema(fields)


@lru_cache(maxsize=1)
def canonical_arrow_schema() -> pa.Schema:
    """The fixed column schema of every lake file (from ``schemas/canonical_event.avsc``)."""
    from schemas import CANONICAL_EVENT, load_schema

    return arrow_schema_from_avro(load_schema(CANONICAL_EVENT))


def partition_schema(keys: Sequence[str] = ()) -> pa.Schema:
    """Types of the Hive partition fields: extra keys string, ``dt`` string, ``hour`` int32."""
    check_partition_keys(keys)
    return pa.schema(
        [pa.field(k, pa.string()) for k in keys]
        + [pa.field("dt", pa.string()), pa.field("hour", pa.int32())]
    )


def dataset_schema(keys: Sequence[str] = ()) -> pa.Schema:
    """Columns a reader sees: the file columns plus ``dt`` and ``hour``."""
    schema = canonical_arrow_schema()
    for field in partition_schema(keys):
        if schema.get_field_index(field.name) < 0:
            schema = schema.append(field)
    return schema


def hive_partitioning(keys: Sequence[str] = ()) -> ds.Partitioning:
    """The explicit pyarrow Hive partitioning for the lake (never let ``hour`` be inferred)."""
    import pyarrow.dataset as ds

    return ds.partitioning(partition_schema(keys), flavor="hive")


def duckdb_hive_types(keys: Sequence[str] = ()) -> dict[str, str]:
    """DuckDB ``hive_types``: extra keys VARCHAR, ``dt`` VARCHAR, ``hour`` INTEGER."""
    check_partition_keys(keys)
    return {**dict.fromkeys(keys, "VARCHAR"), "dt": "VARCHAR", "hour": "INTEGER"}


# --------------------------------------------------------------------------- layout


def check_partition_keys(keys: Sequence[str]) -> None:
    """Raise :class:`LakeError` unless every key is a known, unrepeated partition key."""
    unknown = [k for k in keys if k not in PARTITION_KEYS]
    if unknown:
        raise LakeError(f"unknown lake partition key(s) {unknown}; allowed: {list(PARTITION_KEYS)}")
    if len(set(keys)) != len(keys):
        raise LakeError(f"lake partition keys repeat: {list(keys)}")


def hour_of(occurred_at_us: int) -> int:
    """Hours since the epoch (UTC) of a microsecond timestamp; floors negatives correctly."""
    return occurred_at_us // MICROS_PER_HOUR


def valid_hour(hour_index: int) -> bool:
    """Whether an hour index lies in years 1..9999, the range a ``dt=`` date can name."""
    return FIRST_VALID_HOUR <= hour_index < END_VALID_HOUR


def civil_date(days: int) -> tuple[int, int, int]:
    """``(year, month, day)`` of a day count since 1970-01-01 (proleptic Gregorian).

    Integer arithmetic (H. Hinnant's ``civil_from_days``), so it is fast and never raises.
    """
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


@lru_cache(maxsize=65_536)
def time_partition(hour_index: int) -> str:
    """``dt=YYYY-MM-DD/hour=HH`` of an hour index (see :func:`hour_of`).

    Hours outside years 1..9999 map to :data:`INVALID_TIME_PARTITION` instead of failing:
    such events are kept (a sink must not crash-loop on one bad timestamp).
    """
    if not valid_hour(hour_index):
        return INVALID_TIME_PARTITION
    days, hour = divmod(hour_index, 24)
    year, month, day = civil_date(days)
    return f"dt={year:04d}-{month:02d}-{day:02d}/hour={hour:02d}"


def key_segment(key: str, value: str | None) -> str:
    """``key=value`` with the value percent-encoded (``/``, ``=``, spaces are safe on disk)."""
    return f"{key}={HIVE_NULL if value is None or value == '' else quote(value, safe='')}"


def partition_path(event: Mapping[str, Any], keys: Sequence[str] = ()) -> str:
    """Hive directory of a canonical event: ``source=x/dt=YYYY-MM-DD/hour=HH`` (UTC)."""
    time_part = time_partition(hour_of(int(event["occurred_at"])))
    if not keys:
        return time_part
    return "/".join([*(key_segment(k, event.get(k)) for k in keys), time_part])


def data_file_name(topic: str, partition: int, first_offset: int) -> str:
    """``<topic>+<partition>+<first offset>.parquet``, offset zero-padded to 20 digits."""
    if partition < 0 or first_offset < 0:
        raise LakeError(f"negative Kafka coordinates {topic}[{partition}]@{first_offset}")
    return f"{topic}+{partition}+{first_offset:0{OFFSET_DIGITS}d}{PARQUET_SUFFIX}"


def parse_data_file_name(name: str) -> tuple[str, int, int]:
    """``(topic, partition, first offset)`` of a data file name (base name or full key)."""
    match = _FILE_NAME.match(name.rsplit("/", 1)[-1])
    if not match:
        raise LakeError(f"{name!r} is not a lake data file name (<topic>+<partition>+<offset>)")
    return match["topic"], int(match["partition"]), int(match["offset"])


def data_file_key(directory: str, topic: str, partition: int, first_offset: int) -> str:
    """Lake-relative key of a data file: ``<partition path>/<file name>``."""
    return f"{directory}/{data_file_name(topic, partition, first_offset)}"


# --------------------------------------------------------------------------- Parquet


def events_to_table(events: Sequence[Mapping[str, Any]] | Mapping[str, list[Any]]) -> pa.Table:
    """A table in the canonical schema from event dicts, or from a dict of column lists."""
    schema = canonical_arrow_schema()
    if isinstance(events, Mapping):
        columns = events
    else:
        columns = {name: [e.get(name) for e in events] for name in schema.names}
    arrays = [pa.array(columns[field.name], type=field.type) for field in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def parquet_bytes(
    table: pa.Table, compression: Compression = "zstd", row_group_rows: int = 128 * 1024
) -> bytes:
    """Serialize a table as one Parquet file (statistics on, dictionary for low-cardinality)."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=None if compression == "none" else compression,
        row_group_size=row_group_rows,
        write_statistics=True,
        use_dictionary=["source", "event_type"],
        coerce_timestamps="us",
        allow_truncated_timestamps=False,
    )
    return bytes(sink.getvalue().to_pybytes())


# --------------------------------------------------------------------------- location


@dataclass(frozen=True)
class LakeLocation:
    """Where the lake is: ``file`` + directory, or ``s3`` + bucket + key prefix."""

    scheme: Literal["file", "s3"]
    bucket: str
    root: str
    """Directory (file) or key prefix without leading/trailing ``/`` (s3, may be empty)."""

    @classmethod
    def parse(cls, url: str) -> LakeLocation:
        parts = urlparse(url)
        if parts.scheme == "s3":
            if not parts.netloc:
                raise LakeError(f"lake URL {url!r} names no bucket (s3://bucket/prefix)")
            return cls("s3", parts.netloc, parts.path.strip("/"))
        if parts.scheme == "file":
            path = parts.netloc + parts.path if parts.netloc else parts.path
            if not path:
                raise LakeError(f"lake URL {url!r} names no directory")
            return cls("file", "", str(Path(path).absolute()))
        raise LakeError(f"lake URL {url!r} must start with s3:// or file://")

    def path(self, relative: str = "") -> str:
        """Full local path (file) or object key (s3) of a lake-relative key."""
        relative = relative.strip("/")
        if self.scheme == "file":
            return str(Path(self.root, relative)) if relative else self.root
        return "/".join(p for p in (self.root, relative) if p)

    def url(self, relative: str = "") -> str:
        """``s3://bucket/key`` or ``file:///path`` of a lake-relative key."""
        if self.scheme == "file":
            return Path(self.path(relative)).as_uri()
        return f"s3://{self.bucket}/{self.path(relative)}"

    def dataset_base(self) -> str:
        """Base path for a pyarrow filesystem: the directory, or ``bucket/prefix``."""
        if self.scheme == "file":
            return self.root
        return "/".join(p for p in (self.bucket, self.root) if p)


# --------------------------------------------------------------------------- durable stores


class LakeStore(Protocol):
    """Durable object writes under a lake location (keys are lake-relative)."""

    location: LakeLocation

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``, replacing it; complete and durable when this returns."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes at ``key``."""
        ...

    def get_optional(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None when there is no such object."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Lake-relative keys of data files under ``prefix``, sorted (temp files excluded)."""
        ...

    def probe(self) -> None:
        """Raise :class:`LakeError` unless the lake takes a write right now: one quick
        attempt without retries (the sink asks while the lake is down, to resume at once)."""
        ...


class LocalLakeStore:
    """``file://`` lake: temp file + fsync + atomic rename + directory fsync."""

    def __init__(self, location: LakeLocation) -> None:
        self.location = location

    def put(self, key: str, data: bytes) -> None:
        final = Path(self.location.path(key))
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:12]}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, final)
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_directory(final.parent)
        except OSError as exc:
            raise LakeError(f"writing {final}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        return Path(self.location.path(key)).read_bytes()

    def get_optional(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except FileNotFoundError:
            return None

    def probe(self) -> None:
        root = Path(self.location.root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LakeError(f"lake directory {root}: {exc.strerror or exc}") from exc
        if not os.access(root, os.W_OK):
            raise LakeError(f"lake directory {root} is not writable")

    def remove_stale_temp_files(self, older_than: float = 600.0) -> int:
        """Delete ``.<name>.tmp-*`` files left by crashed writers; returns how many.

        Only files older than ``older_than`` seconds go, so a temp file another sink of the
        group is writing right now is left alone.
        """
        root = Path(self.location.root)
        if not root.exists():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for path in root.rglob(f".*{PARQUET_SUFFIX}.tmp-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def list(self, prefix: str = "") -> list[str]:
        base = Path(self.location.root)
        start = Path(self.location.path(prefix))
        if not start.exists():
            return []
        return sorted(
            p.relative_to(base).as_posix()
            for p in start.rglob(f"*{PARQUET_SUFFIX}")
            if not p.name.startswith((".", "_"))
        )


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class S3Retries:
    """botocore retry policy of lake writes.

    Timeouts are short so that a lake that stops answering (a server that accepts
    connections but hangs, as SeaweedFS does while it restarts) shows within seconds and
    the attempt is retried on a fresh connection; ``read_timeout`` bounds each wait for
    bytes, not a whole upload. ``probe_timeout`` bounds the single-attempt probe
    (:meth:`S3LakeStore.probe`).
    """

    mode: Literal["standard", "adaptive"] = "standard"
    max_attempts: int = 5
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    probe_timeout: float = 2.0


class S3LakeStore:
    """``s3://`` lake: single PUT, or a multipart upload completed or aborted as a whole."""

    multipart_threshold = 64 * 1024 * 1024
    multipart_chunk = 16 * 1024 * 1024

    def __init__(
        self,
        location: LakeLocation,
        client: Any,
        probe_client_factory: Callable[[], Any] | None = None,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        self.location = location
        self.client = client
        self._probe_client_factory = probe_client_factory
        self._probe_client: Any = None
        self._transfer = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunk,
            max_concurrency=4,
        )

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        object_key = self.location.path(key)
        try:
            if len(data) < self.multipart_threshold:
                self.client.put_object(Bucket=self.location.bucket, Key=object_key, Body=data)
            else:  # s3transfer completes the multipart upload or aborts it on failure
                self.client.upload_fileobj(
                    io.BytesIO(data), self.location.bucket, object_key, Config=self._transfer
                )
        except (BotoCoreError, ClientError) as exc:
            raise LakeError(f"writing s3://{self.location.bucket}/{object_key}: {exc}") from exc

    def get(self, key: str) -> bytes:
        answer = self.client.get_object(Bucket=self.location.bucket, Key=self.location.path(key))
        return bytes(answer["Body"].read())

    def get_optional(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.get(key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise

    def probe(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._probe_client is None:  # made on first use: only a sink whose lake failed
            factory = self._probe_client_factory
            self._probe_client = factory() if factory is not None else self.client
        object_key = self.location.path(PROBE_KEY)
        try:
            self._probe_client.put_object(Bucket=self.location.bucket, Key=object_key, Body=b"")
        except (BotoCoreError, ClientError) as exc:
            raise LakeError(f"probing s3://{self.location.bucket}/{object_key}: {exc}") from exc

    def list(self, prefix: str = "") -> list[str]:
        root = self.location.path("")
        full = self.location.path(prefix)
        if full and not full.endswith("/"):
            full += "/"
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=full):
            for item in page.get("Contents", []):
                key = item["Key"]
                name = key.rsplit("/", 1)[-1]
                if name.endswith(PARQUET_SUFFIX) and not name.startswith((".", "_")):
                    keys.append(key[len(root) + 1 :] if root else key)
        return sorted(keys)


def s3_client(settings: Settings, retries: S3Retries | None = None) -> Any:
    """A boto3 S3 client for the lake (path-style addressing, botocore retries)."""
    import boto3
    from botocore.config import Config

    policy = retries or S3Retries()
    config = Config(
        retries={"mode": policy.mode, "max_attempts": policy.max_attempts},
        connect_timeout=policy.connect_timeout,
        read_timeout=policy.read_timeout,
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
    )
    return boto3.client("s3", config=config, **settings.s3_client_kwargs())  # type: ignore[call-overload]


def open_lake_store(settings: Settings, retries: S3Retries | None = None) -> LakeStore:
    """The durable store of ``settings.lake_url`` (file:// or s3://)."""
    location = LakeLocation.parse(settings.lake_url)
    if location.scheme == "file":
        return LocalLakeStore(location)
    policy = retries or S3Retries()
    quick = S3Retries(
        mode=policy.mode,
        max_attempts=1,
        connect_timeout=min(policy.connect_timeout, policy.probe_timeout),
        read_timeout=policy.probe_timeout,
    )
    return S3LakeStore(location, s3_client(settings, policy), lambda: s3_client(settings, quick))


# --------------------------------------------------------------------------- readers


def open_lake_filesystem(settings: Settings) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the lake's base path on it (``bucket/prefix`` or a directory)."""
    import pyarrow.fs as pafs

    location = LakeLocation.parse(settings.lake_url)
    if location.scheme == "file":
        return pafs.LocalFileSystem(), location.dataset_base()
    options: dict[str, Any] = {"region": settings.s3_region}
    if settings.s3_access_key_id:
        options["access_key"] = settings.s3_access_key_id
    if settings.s3_secret_access_key:
        options["secret_key"] = settings.s3_secret_access_key.get_secret_value()
    if settings.s3_endpoint_url:
        endpoint = urlparse(settings.s3_endpoint_url)
        options["endpoint_override"] = endpoint.netloc or endpoint.path
        options["scheme"] = endpoint.scheme or "https"
    return pafs.S3FileSystem(**options), location.dataset_base()


def lake_dataset(settings: Settings, keys: Sequence[str] = ()) -> ds.Dataset:
    """The whole lake as a pyarrow dataset; filter on ``dt``/``hour``/keys to prune.

    ``keys`` must be the pipeline's ``sink.partition_keys``. An absent or empty lake gives an
    empty dataset.
    """
    import pyarrow.dataset as ds

    filesystem, base = open_lake_filesystem(settings)
    schema = dataset_schema(keys)
    selector_info = filesystem.get_file_info(base)
    if selector_info.type.name == "NotFound":
        return ds.dataset([], schema=schema, format="parquet")
    return ds.dataset(
        base,
        filesystem=filesystem,
        format="parquet",
        partitioning=hive_partitioning(keys),
        schema=schema,
        exclude_invalid_files=False,
        ignore_prefixes=[".", "_"],
    )


def duckdb_read_parquet_sql(glob: str, keys: Sequence[str] = ()) -> str:
    """``read_parquet('<glob>', hive_partitioning=true, hive_types={...})`` for DuckDB.

    ``glob`` is e.g. ``'/lake/**/*.parquet'`` or, with an fsspec filesystem registered on the
    connection (``con.register_filesystem(s3fs.S3FileSystem(...))``), ``'s3://b/p/**/*.parquet'``.
    """
    types = ", ".join(f"'{k}': {v}" for k, v in duckdb_hive_types(keys).items())
    escaped = glob.replace("'", "''")
    return f"read_parquet('{escaped}', hive_partitioning=true, hive_types={{{types}}})"


def lake_files(store: LakeStore, prefix: str = "") -> Iterable[tuple[str, str, int, int]]:
    """``(key, topic, partition, first offset)`` of every data file under ``prefix``."""
    for key in store.list(prefix):
        topic, partition, offset = parse_data_file_name(key)
        yield key, topic, partition, offset
