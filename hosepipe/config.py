"""The pipeline, as declared in ``hosepipe.yaml``.

One YAML file says which sources exist, how each maps onto the canonical event, how long
duplicates are remembered, how the sink buffers and partitions, what the selector loads into
PostgreSQL and who may call the APIs. Every model forbids unknown keys, so a typo stops the
program at start with the key's path (``sources.orders.mapping.occured_at: extra inputs are
not permitted``) instead of being silently ignored.

``${NAME}`` and ``${NAME:-default}`` in string values are replaced from the environment when
the file is loaded, so secrets need not live in the file.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hosepipe.topics import EXPLICIT_CONFIG_DEFAULTS

SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
JSON_PATH = re.compile(r"^\$(\.[A-Za-z0-9_@-]+|\[\d+\])*$")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The pipeline file is missing, unreadable or invalid; the message names key and reason."""


def parse_duration(value: object) -> timedelta:
    """Parse ``90``, ``"90s"``, ``"15m"``, ``"24h"``, ``"7d"`` or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '24h', got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = DURATION.match(value)
        if match:
            number, unit = match.groups()
            return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])
    raise ValueError(f"expected a duration like '90s', '15m', '24h' or '7d', got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _check_json_path(value: str) -> str:
    if not JSON_PATH.match(value):
        raise ValueError(
            f"{value!r} is not a supported path: use $.field.nested or $.list[0] "
            "(dot notation from the record root)"
        )
    return value


JsonPath = Annotated[str, BeforeValidator(_check_json_path)]


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- topics


class TopicsConfig(Strict):
    """Kafka topic names and how ``hosepipe topics create`` makes them."""

    raw_prefix: str = Field("raw.", description="Raw topic of a source = prefix + source name.")
    canonical: str = Field("events.canonical", description="Topic of canonical Avro events.")
    dlq: str = Field("events.dlq", description="Dead-letter topic.")
    cursors: str = Field(
        "hosepipe.cursors",
        description="Compacted single-partition topic where pollers and bulk-load keep their "
        "cursors (created on first use).",
    )
    file_log: str = Field(
        "hosepipe.lake-files",
        description="Single-partition topic where the sink announces the lake files of each "
        "flush once they are durable; `select --follow` reads it instead of listing the "
        "lake on every pass (created by the sink on start).",
    )
    partitions: int = Field(4, ge=1, le=10_000, description="Partitions of each created topic.")
    replication_factor: int = Field(1, ge=1, le=16, description="Replication factor.")
    configs: dict[str, str] = Field(
        default_factory=lambda: dict(EXPLICIT_CONFIG_DEFAULTS),
        description=(
            "Topic configs applied at creation (retention, compression, ...). Keys left out "
            "keep these defaults; the stream worker sizes its producer batches by the "
            "canonical and DLQ topics' max.message.bytes."
        ),
    )

    def raw_topic(self, source: str) -> str:
        return f"{self.raw_prefix}{source}"


# --------------------------------------------------------------------------- mapping

TimestampFormat = Literal[
    "auto", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "iso8601", "strptime"
]


class FieldPath(Strict):
    """Take a canonical field from a path into the raw record."""

    path: JsonPath
    default: str | None = Field(None, description="Used when the path is absent.")


class Constant(Strict):
    """Use the same value for every record."""

    const: str


class HashOf(Strict):
    """Deterministic id: SHA-256 of the values at these paths (for sources without an id)."""

    hash: list[JsonPath] = Field(min_length=1)


class TimestampField(Strict):
    """Where the event time is and how it is written; parsed to UTC microseconds."""

    path: JsonPath
    format: TimestampFormat = Field(
        "auto",
        description=(
            "auto (numbers by magnitude, strings as ISO-8601), epoch_s|ms|us|ns, iso8601, "
            "or strptime with `pattern`. Naive times are taken as `timezone`."
        ),
    )
    pattern: str | None = Field(None, description="strptime pattern when format is strptime.")
    timezone: str = Field("UTC", description="Zone for times without an offset.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value

    @model_validator(mode="after")
    def _pattern_needed(self) -> TimestampField:
        if self.format == "strptime" and not self.pattern:
            raise ValueError("format 'strptime' needs a 'pattern'")
        return self


class PayloadSpec(Strict):
    """What goes into ``payload``: a subtree (``path``) or the record minus mapped fields."""

    path: JsonPath | None = None
    rest: bool = Field(False, description="The whole record without the fields mapped above.")

    @model_validator(mode="after")
    def _one_of(self) -> PayloadSpec:
        if (self.path is None) == (not self.rest):
            raise ValueError("give exactly one of 'path' or 'rest: true'")
        return self


def _shorthand_path(value: object) -> object:
    """Allow ``subject: $.user.id`` as short for ``subject: {path: $.user.id}``."""
    if isinstance(value, str):
        return {"path": value} if value.startswith("$") else {"const": value}
    return value


StringSpec = Annotated[FieldPath | Constant, BeforeValidator(_shorthand_path)]
IdSpec = Annotated[FieldPath | HashOf, BeforeValidator(_shorthand_path)]
TimeSpec = Annotated[TimestampField, BeforeValidator(_shorthand_path)]
Payload = Annotated[PayloadSpec, BeforeValidator(_shorthand_path)]


class MappingConfig(Strict):
    """How a raw record becomes the canonical event, declared without code."""

    event_id: IdSpec = Field(
        description="`$.path` of the record's id, or `{hash: [$.a, $.b]}` when it has none."
    )
    occurred_at: TimeSpec = Field(
        description="`$.path` of the event time, or `{path:, format:, timezone:}`."
    )
    event_type: StringSpec = Field(description="`$.path` of the type, or a constant string.")
    subject: StringSpec | None = Field(
        None, description="`$.path` of the entity the event is about (optional)."
    )
    payload: Payload = Field(
        default_factory=lambda: PayloadSpec(rest=True),
        description="`{path: $.sub}` for a subtree, `{rest: true}` for the unmapped rest.",
    )
    attributes: dict[str, str] = Field(
        default_factory=dict, description="Static attributes added to every event."
    )
    attribute_paths: dict[str, JsonPath] = Field(
        default_factory=dict, description="Attributes taken from the record (stringified)."
    )


# --------------------------------------------------------------------------- pull sources


class HttpPagination(Strict):
    """How the HTTP poller walks pages."""

    kind: Literal["none", "cursor", "next_link", "page"] = "none"
    cursor_path: JsonPath | None = Field(None, description="Where the next cursor is (cursor).")
    cursor_param: str = Field("cursor", description="Query parameter carrying the cursor.")
    next_link_path: JsonPath | None = Field(None, description="Where the next URL is.")
    page_param: str = Field("page", description="Query parameter of the page number.")
    page_size_param: str | None = None
    page_size: int | None = Field(None, ge=1)


class HttpPull(Strict):
    """Poll a JSON HTTP API."""

    type: Literal["http"]
    url: str
    interval: Duration = Field(timedelta(seconds=30))
    records_path: JsonPath = Field("$", description="Where the list of records is in a response.")
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    pagination: HttpPagination = Field(default_factory=HttpPagination)
    incremental_param: str | None = Field(
        None, description="Query parameter sent with the last cursor value (e.g. updated_since)."
    )
    incremental_path: JsonPath | None = Field(
        None, description="Field of a record whose maximum becomes the next incremental value."
    )
    timeout: Duration = Field(timedelta(seconds=30))
    max_backoff: Duration = Field(timedelta(minutes=5))


class FilesPull(Strict):
    """Pick up files dropped on an S3 prefix or in a local directory, each once."""

    type: Literal["files"]
    url: str = Field(description="s3://bucket/prefix/ or file:///dir/")
    pattern: str = Field("*", description="Glob on the file name, e.g. '*.jsonl.gz'.")
    format: Literal["jsonl", "csv", "auto"] = "auto"
    interval: Duration = Field(timedelta(seconds=10))


class SqlPull(Strict):
    """Poll a SQL table by a monotonically increasing column."""

    type: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL of the database to read.")
    table: str
    cursor_column: str
    columns: list[str] | None = Field(None, description="Columns to read; all when unset.")
    batch_size: int = Field(1000, ge=1, le=100_000)
    interval: Duration = Field(timedelta(seconds=10))


PullSpec = Annotated[HttpPull | FilesPull | SqlPull, Field(discriminator="type")]


# --------------------------------------------------------------------------- sources


class SourceConfig(Strict):
    """One source: how records arrive and how they map onto the canonical event."""

    kind: Literal["push", "pull"] = Field(
        description="push: producers send to raw.<source>; pull: `hosepipe poll` fetches."
    )
    format: Literal["json", "avro"] = Field("json", description="Encoding of raw records.")
    avro_schema: Path | None = Field(
        None, description="Avro schema file of the raw records (format: avro)."
    )
    description: str = ""
    mapping: MappingConfig = Field(description="How a raw record maps onto the canonical event.")
    transform: str | None = Field(
        None,
        description=(
            "Dotted path 'package.module:function' of a Python hook "
            "`transform(raw: dict) -> dict | None`, run before the mapping: return None to "
            "drop the record on purpose, raise to dead-letter it."
        ),
    )
    key_path: JsonPath | None = Field(
        None,
        description=(
            "Where the raw record's id is, used as the Kafka key by ingest and pollers so "
            "every copy of an event lands in one raw partition (dedupe is per partition). "
            "Unset: they key a JSON source without a transform by the event id its mapping "
            "gives the record; other sources stay unkeyed."
        ),
    )
    max_record_bytes: int = Field(1_024_000, ge=1, description="Larger records are dead-lettered.")
    pull: PullSpec | None = Field(None, description="Poller settings (kind: pull).")

    @field_validator("transform")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][\w.]*[:.][A-Za-z_]\w*$", value):
            raise ValueError(f"{value!r} is not 'package.module:function'")
        return value

    @model_validator(mode="after")
    def _kind_matches(self) -> SourceConfig:
        if self.kind == "pull" and self.pull is None:
            raise ValueError("kind 'pull' needs a 'pull' section (type http, files or sql)")
        if self.kind == "push" and self.pull is not None:
            raise ValueError("kind 'push' takes no 'pull' section")
        if self.format == "avro" and self.avro_schema is None:
            raise ValueError("format 'avro' needs 'avro_schema' (path of an .avsc file)")
        return self


# --------------------------------------------------------------------------- streams


class StreamsConfig(Strict):
    """Normalization, deduplication and dead-lettering (``hosepipe worker``)."""

    engine: Literal["kafka", "faust"] = Field("kafka", description="Which runner executes it.")
    dedupe_window: Duration = Field(
        timedelta(hours=24), description="How long an event_id is remembered."
    )
    plausible_past: Duration = Field(
        timedelta(days=3650),
        description="Events older than now minus this are dead-lettered as implausible.",
    )
    plausible_future: Duration = Field(
        timedelta(days=1),
        description="Events later than now plus this are dead-lettered as implausible.",
    )
    batch_size: int = Field(2000, ge=1, le=100_000, description="Records per processing batch.")
    consumer_group: str = Field("hosepipe-worker", description="Consumer group of the workers.")


# --------------------------------------------------------------------------- sink


class SinkConfig(Strict):
    """How the sink buffers and partitions Parquet files (like Firehose buffering hints)."""

    max_rows: int = Field(100_000, ge=1, description="Flush a batch at this many rows.")
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="... or at this many bytes.")
    max_age: Duration = Field(
        timedelta(seconds=60), description="... or when its oldest record is this old (0-900 s)."
    )
    max_open_partitions: int = Field(
        500, ge=1, le=100_000, description="... or when this many time partitions are open."
    )
    partition_keys: list[Literal["source", "event_type"]] = Field(
        default_factory=list, description="Extra Hive keys before dt=/hour=, e.g. [source]."
    )
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    row_group_rows: int = Field(128 * 1024, ge=1000, description="Rows per Parquet row group.")
    consumer_group: str = Field("hosepipe-sink", description="Consumer group of the sinks.")
    s3_retry_mode: Literal["standard", "adaptive"] = Field(
        "standard", description="botocore retry mode of lake writes."
    )
    s3_max_attempts: int = Field(
        5, ge=1, le=50, description="botocore attempts per lake write before the sink backs off."
    )
    retry_max_backoff: Duration = Field(
        timedelta(seconds=30),
        description="Longest wait between flush attempts while the lake is down (no commit).",
    )
    late_after: Duration | None = Field(
        None,
        description=(
            "Late lane: events whose occurred_at is more than this before their ingested_at "
            "are buffered apart and flushed every late_max_age (or when the sink is idle), "
            "so hours-late events make few files; null: one lane."
        ),
    )
    late_max_age: Duration = Field(
        timedelta(seconds=60),
        description="Flush the late lane when its oldest record is this old (0-900 s).",
    )

    @field_validator("late_after")
    @classmethod
    def _positive_lateness(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be positive (or null for one lane)")
        return value

    @field_validator("max_age", "late_max_age")
    @classmethod
    def _firehose_range(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= timedelta(seconds=900):
            raise ValueError("must be between 0 and 900 seconds, like Firehose's buffer interval")
        return value


# --------------------------------------------------------------------------- selection

ColumnType = Literal[
    "text", "integer", "bigint", "numeric", "double", "boolean", "timestamptz", "date", "jsonb"
]


class ColumnSpec(Strict):
    """A typed column projected from the event."""

    path: str = Field(
        description=(
            "$.payload.path into the payload, $.attributes.<key>, or an event field: event_id, "
            "source, event_type, occurred_at, ingested_at, subject."
        )
    )
    type: ColumnType = "text"
    precision: int | None = Field(None, ge=1, le=1000, description="numeric(precision, scale)")
    scale: int | None = Field(None, ge=0, le=1000)
    nullable: bool = True

    @field_validator("path")
    @classmethod
    def _rule_path(cls, value: str) -> str:
        return _check_rule_path(value)

    @model_validator(mode="after")
    def _numeric_shape(self) -> ColumnSpec:
        if (self.precision is not None or self.scale is not None) and self.type != "numeric":
            raise ValueError("precision/scale apply to type numeric only")
        if self.scale is not None and self.precision is None:
            raise ValueError("scale needs a precision: numeric(precision, scale)")
        if self.scale is not None and self.precision is not None and self.scale > self.precision:
            raise ValueError("scale must not exceed precision")
        return self


def _check_rule_path(value: str) -> str:
    """Selection paths: an event field, ``$.payload...`` or ``$.attributes.<key>``."""
    body = value[2:] if value.startswith("$.") else value
    if body in RULE_EVENT_FIELDS:
        return value
    if (body == "payload" or body.startswith(("payload.", "payload["))) and JSON_PATH.match(
        "$" + body[len("payload") :]
    ):
        return value
    if body.startswith("attributes.") and "." not in body[len("attributes.") :]:
        return value
    raise ValueError(
        f"{value!r}: use an event field ({', '.join(RULE_EVENT_FIELDS)}), "
        "$.payload.<path> or $.attributes.<key>"
    )


RULE_EVENT_FIELDS = ("event_id", "source", "event_type", "occurred_at", "ingested_at", "subject")


class Predicate(Strict):
    """A condition on a path (as for columns); all given operators must hold."""

    path: Annotated[str, BeforeValidator(_check_rule_path)] = Field(
        description="$.payload.<path>, $.attributes.<key> or an event field ($.source, ...)."
    )
    equals: str | int | float | bool | None = None
    in_: list[str | int | float] | None = Field(None, alias="in")
    exists: bool | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SelectionRule(Strict):
    """Which events to load and into which table."""

    name: str
    table: str = Field(description="Target table (created by migrations from this rule).")
    sources: list[str] = Field(default_factory=list, description="Empty = every source.")
    event_types: list[str] = Field(default_factory=list, description="Empty = every type.")
    since: str | None = Field(None, description="ISO-8601 lower bound on occurred_at.")
    until: str | None = Field(None, description="ISO-8601 upper bound on occurred_at.")
    where: list[Predicate] = Field(default_factory=list)
    columns: dict[str, ColumnSpec] = Field(
        default_factory=dict, description="Typed columns; empty for the default events table."
    )
    key: list[str] = Field(default_factory=lambda: ["event_id"], description="Upsert key.")

    @field_validator("table", "name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"{value!r} must be a lower-case SQL identifier")
        return value

    @field_validator("since", "until")
    @classmethod
    def _iso_instant(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{value!r} is not an ISO-8601 date or time") from None
        return value

    @model_validator(mode="after")
    def _key_in_columns(self) -> SelectionRule:
        if self.columns:
            for name in self.columns:
                if not IDENTIFIER.match(name):
                    raise ValueError(f"column {name!r} must be a lower-case SQL identifier")
            missing = [k for k in self.key if k not in self.columns]
            if missing:
                raise ValueError(f"key column(s) {missing} are not declared in 'columns'")
        return self


class SelectionConfig(Strict):
    """What ``hosepipe select`` loads from the lake into PostgreSQL."""

    load_all_events: bool = Field(True, description="Load every event into table 'events'.")
    rules: list[SelectionRule] = Field(default_factory=list)
    follow_interval: Duration = Field(
        timedelta(seconds=5),
        description=(
            "select --follow: pause after a pass that found no new files (a pass that loaded"
            " files is followed by the next at once)."
        ),
    )
    batch_rows: int = Field(50_000, ge=100, description="Rows per upsert batch.")
    load_connections: int = Field(
        2,
        ge=1,
        le=8,
        description=(
            "Connections that load a batch's 'events' rows side by side, split by event_id"
            " (only when each gets at least 10,000 rows); the others commit their share"
            " first, the batch's checkpoint commits last. 1: one connection."
        ),
    )
    rescan_interval: Duration = Field(
        timedelta(hours=1),
        description=(
            "select --follow: also list the whole lake this often, for files that no sink"
            " announced in `topics.file_log` (copied in by hand, written by other tools);"
            " 0s: only at start."
        ),
    )

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[SelectionRule]) -> list[SelectionRule]:
        for attr in ("name", "table"):
            seen: set[str] = set()
            for rule in rules:
                value = getattr(rule, attr)
                if value in seen:
                    raise ValueError(f"two rules share {attr} {value!r}")
                if value == "events" and attr == "table":
                    raise ValueError("table 'events' is the default table; pick another name")
                seen.add(value)
        return rules


# --------------------------------------------------------------------------- auth / APIs


class ApiKey(Strict):
    """A bearer key and what it may do."""

    key: str = Field(min_length=16, description="The secret; use ${ENV_VAR} in the file.")
    name: str = ""
    sources: list[str] = Field(
        default_factory=lambda: ["*"], description="Sources it may push to ('*' = all)."
    )


class FirehoseKey(Strict):
    """An AWS-style access key pair accepted on the Firehose API (SigV4)."""

    access_key_id: str = Field(min_length=4)
    secret_access_key: str = Field(min_length=8)
    sources: list[str] = Field(default_factory=lambda: ["*"])


class IngestConfig(Strict):
    """HTTP ingest and the Firehose-compatible API (``hosepipe ingest``)."""

    auth: bool = Field(True, description="Require keys; false only for a local demo.")
    api_keys: list[ApiKey] = Field(default_factory=list)
    firehose_keys: list[FirehoseKey] = Field(default_factory=list)
    region: str = Field("us-east-1", description="Region expected in SigV4 signatures.")
    max_records_per_request: int = Field(500, ge=1, le=100_000)
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_record_bytes: int = Field(1_024_000, ge=1)
    signature_max_skew: Duration = Field(timedelta(minutes=5))


JwtAlgorithm = Literal["HS256", "RS256"]


class JwtConfig(Strict):
    """JWT verification for the GraphQL API."""

    algorithms: list[JwtAlgorithm] = Field(default_factory=lambda: list[JwtAlgorithm](["HS256"]))
    secret: str | None = Field(None, description="HS256 shared secret.")
    public_key: str | None = Field(None, description="RS256 public key (PEM).")
    audience: str | None = None
    issuer: str | None = None


class ApiConfig(Strict):
    """The GraphQL API (``hosepipe api``)."""

    auth: Literal["none", "api_key", "jwt"] = "none"
    api_keys: list[ApiKey] = Field(default_factory=list)
    jwt: JwtConfig | None = None
    max_first: int = Field(1000, ge=1, le=10_000)
    max_depth: int = Field(10, ge=2, le=100)
    max_cost: int = Field(5000, ge=1)
    max_query_bytes: int = Field(
        100_000,
        ge=1_000,
        description="Largest /graphql request (POST body or GET query string) in bytes; "
        "larger ones get HTTP 413 before anything is parsed.",
    )
    max_query_tokens: int = Field(
        10_000,
        ge=100,
        description="Most lexical tokens (comments included) in a query document; the "
        "parser stops beyond it.",
    )
    introspection: bool = True
    graphiql: bool = True
    cors_origins: list[str] = Field(default_factory=list)
    exact_count_limit: int = Field(
        100_000, ge=0, description="totalCount is exact up to this many rows, then estimated."
    )

    @model_validator(mode="after")
    def _auth_complete(self) -> ApiConfig:
        if self.auth == "api_key" and not self.api_keys:
            raise ValueError("auth 'api_key' needs at least one entry in 'api_keys'")
        if self.auth == "jwt":
            if self.jwt is None:
                raise ValueError("auth 'jwt' needs a 'jwt' section")
            if "HS256" in self.jwt.algorithms and not self.jwt.secret:
                raise ValueError("jwt algorithm HS256 needs 'jwt.secret'")
            if "RS256" in self.jwt.algorithms and not self.jwt.public_key:
                raise ValueError("jwt algorithm RS256 needs 'jwt.public_key'")
        return self


# --------------------------------------------------------------------------- the whole file


class PipelineConfig(Strict):
    """The whole ``hosepipe.yaml``."""

    version: Literal[1] = Field(1, description="Format version of this file.")
    topics: TopicsConfig = Field(default_factory=TopicsConfig, description="Kafka topics.")
    sources: dict[str, SourceConfig] = Field(
        min_length=1, description="Sources by name; the name is used in topics and the lake."
    )
    streams: StreamsConfig = Field(
        default_factory=StreamsConfig, description="Normalize, dedupe, dead-letter."
    )
    sink: SinkConfig = Field(default_factory=SinkConfig, description="Parquet lake writer.")
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig, description="Lake to PostgreSQL loading."
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="HTTP ingest.")
    api: ApiConfig = Field(default_factory=ApiConfig, description="GraphQL API.")

    @field_validator("sources")
    @classmethod
    def _source_names(cls, sources: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        for name in sources:
            if not SOURCE_NAME.match(name):
                raise ValueError(
                    f"source name {name!r} must be lower-case letters, digits, '_' or '-' "
                    "(it becomes part of a topic name)"
                )
        return sources

    @model_validator(mode="after")
    def _references(self) -> PipelineConfig:
        known = set(self.sources)
        for rule in self.selection.rules:
            unknown = [s for s in rule.sources if s not in known]
            if unknown:
                raise ValueError(f"selection rule {rule.name!r} names unknown source(s) {unknown}")
        keys: list[ApiKey | FirehoseKey] = [*self.ingest.api_keys, *self.ingest.firehose_keys]
        for key in keys:
            unknown = [s for s in key.sources if s != "*" and s not in known]
            if unknown:
                raise ValueError(f"ingest key names unknown source(s) {unknown}")
        return self

    def raw_topic(self, source: str) -> str:
        return self.topics.raw_topic(source)

    def push_sources(self) -> dict[str, SourceConfig]:
        return {n: s for n, s in self.sources.items() if s.kind == "push"}

    def pull_sources(self) -> dict[str, SourceConfig]:
        return {n: s for n, s in self.sources.items() if s.kind == "pull"}


# --------------------------------------------------------------------------- loading


def expand_env(value: Any, environ: dict[str, str] | os._Environ[str] | None = None) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of a parsed YAML tree."""
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is referenced but not set")

        return ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    return value


def format_validation_error(error: ValidationError, origin: str) -> str:
    """One line per problem: ``origin: key.path: reason``."""
    lines = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key (not permitted here)"
        elif problem["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{origin}: {location}: {message}")
    return "\n".join(lines)


def parse_pipeline(text: str, origin: str = "hosepipe.yaml") -> PipelineConfig:
    """Validate pipeline YAML text; raises :class:`ConfigError` naming key and reason."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    tree = expand_env(tree)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from exc


def load_pipeline(path: Path) -> PipelineConfig:
    """Read and validate a pipeline file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pipeline file: {exc.strerror}") from exc
    return parse_pipeline(text, str(path))
