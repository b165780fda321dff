"""The stream stage as one pure function per batch: decode → transform → map → validate → dedupe.

Both engines (the confluent-kafka runner and the faust app) feed batches of
:class:`RawRecord` to :meth:`StreamCore.process_batch` and act on the :class:`BatchResult`:
produce ``outputs`` to the canonical topic and ``dead_letters`` to the DLQ, await delivery,
then remember the output ids in the dedupe state, then commit offsets. The core does no I/O;
the only outside knowledge it needs, "was this id seen before?", comes in as ``seen_check``.

Conservation holds per batch and per source by construction:
``received = out + duplicates + dropped + dead_lettered``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson

from hosepipe.config import PipelineConfig, SourceConfig, StreamsConfig
from hosepipe.settings import Settings
from streams.errors import (
    EmptyRecord,
    ImplausibleTimestamp,
    InvalidAvro,
    InvalidJson,
    InvalidUtf8,
    NotAnObject,
    RecordError,
    RecordTooLarge,
    TransformFailed,
)
from streams.mapping import Event, Mapper, compile_mapping, loads_exact
from streams.timestamps import format_micros
from streams.transform import Transform, load_transform

if TYPE_CHECKING:
    from streams.metrics import StageCounters

SeenCheck = Callable[[str, int, Sequence[str]], Sequence[bool]]
"""``(topic, partition, event_ids) -> already seen?`` for each id, in order."""

MAX_MESSAGE_CHARS = 2000
HEADER_PREFIX = "hosepipe."
"""DLQ headers added by hosepipe start with this; replay strips them."""


def now_micros() -> int:
    return time.time_ns() // 1000


@dataclass(slots=True)
class RawRecord:
    """One message of a raw topic, as the engines hand it to the core."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(slots=True)
class CanonicalOutput:
    """A canonical event to produce (keyed by ``event_id``) and the record it came from."""

    event: Event
    record: RawRecord


@dataclass(slots=True)
class DeadLetter:
    """A record that could not become a canonical event, with the reason."""

    record: RawRecord
    source: str
    stage: str
    error_class: str
    message: str
    failed_at: int

    def headers(self) -> list[tuple[str, bytes]]:
        """Reason headers first, then the original record's own headers."""
        record = self.record
        reasons = [
            ("hosepipe.source", self.source),
            ("hosepipe.error.stage", self.stage),
            ("hosepipe.error.class", self.error_class),
            ("hosepipe.error.message", self.message[:MAX_MESSAGE_CHARS]),
            ("hosepipe.original.topic", record.topic),
            ("hosepipe.original.partition", str(record.partition)),
            ("hosepipe.original.offset", str(record.offset)),
            ("hosepipe.failed_at", format_micros(self.failed_at)),
        ]
        if record.timestamp_ms is not None:
            reasons.append(("hosepipe.original.timestamp_ms", str(record.timestamp_ms)))
        encoded = [(name, value.encode()) for name, value in reasons]
        return encoded + list(record.headers or [])


TRUNCATED_HEADER = "hosepipe.truncated"
ORIGINAL_BYTES_HEADER = "hosepipe.original.bytes"
_MESSAGE_OVERHEAD = 4096  # record framing librdkafka counts beyond key, value and headers


def _headers_bytes(headers: Sequence[tuple[str, bytes | None]]) -> int:
    return sum(len(name) + len(data or b"") + 16 for name, data in headers)


def message_bytes(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> int:
    """What a message counts against the worker's per-message limit (an upper bound of
    librdkafka's count: key, value, serialized headers and record framing)."""
    return len(key or b"") + len(value or b"") + _headers_bytes(headers) + _MESSAGE_OVERHEAD


def fit_dead_letter(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    max_bytes: int,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A dead letter too large for the producer, cut to fit ``max_bytes``.

    The value keeps its first bytes; ``hosepipe.original.bytes`` records the original size
    and ``hosepipe.truncated: true`` marks it (replay skips such entries: the record itself
    is lost to the DLQ, the fact and the reason are not). Original headers are dropped too
    if they alone do not fit.
    """
    original = value or b""
    marks = [
        (ORIGINAL_BYTES_HEADER, str(len(original)).encode()),
        (TRUNCATED_HEADER, b"true"),
    ]
    fitted = headers + marks
    budget = max_bytes - len(key or b"") - _MESSAGE_OVERHEAD
    if _headers_bytes(fitted) > budget // 2:
        fitted = [(n, v) for n, v in headers if n.startswith(HEADER_PREFIX)] + marks
    return original[: max(budget - _headers_bytes(fitted), 0)], fitted


@dataclass(slots=True)
class SourceCounts:
    """Per-source tallies of one batch (or of a run, when added up)."""

    received: int = 0
    out: int = 0
    duplicates: int = 0
    dropped: int = 0
    dead_lettered: int = 0

    def add(self, other: SourceCounts) -> None:
        self.received += other.received
        self.out += other.out
        self.duplicates += other.duplicates
        self.dropped += other.dropped
        self.dead_lettered += other.dead_lettered

    @property
    def balanced(self) -> bool:
        """Conservation: received = out + duplicates + dropped + dead_lettered."""
        return self.received == self.out + self.duplicates + self.dropped + self.dead_lettered


@dataclass
class BatchResult:
    """What to do with a batch: produce ``outputs`` and ``dead_letters``; the rest is counted."""

    outputs: list[CanonicalOutput] = field(default_factory=list)
    duplicates: int = 0
    dropped: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counts: dict[str, SourceCounts] = field(default_factory=dict)


class UnknownTopic(RecordError):
    """The record comes from a topic no configured source reads."""

    stage = "route"


class SourceStage:
    """One source's compiled decode → transform → map → validate steps."""

    def __init__(
        self,
        name: str,
        config: SourceConfig,
        streams: StreamsConfig,
        transform: Transform | None = None,
    ) -> None:
        self.name = name
        self.max_bytes = config.max_record_bytes
        self.mapper: Mapper = compile_mapping(name, config.mapping)
        if transform is None and config.transform:
            transform = load_transform(config.transform, name)
        self.transform = transform
        self.past_us = int(streams.plausible_past.total_seconds() * 1_000_000)
        self.future_us = int(streams.plausible_future.total_seconds() * 1_000_000)
        self.decode: Callable[[bytes], Any] = (
            _avro_decoder(name, config) if config.format == "avro" else _decode_json
        )

    def normalize(self, record: RawRecord, now_us: int) -> Event | None:
        """The canonical event, or None when the transform dropped it; raises RecordError."""
        value = record.value
        if not value:
            raise EmptyRecord("the record has no value (null or empty)")
        if len(value) > self.max_bytes:
            raise RecordTooLarge(
                f"{len(value)} bytes exceed max_record_bytes {self.max_bytes} "
                f"of source {self.name!r}"
            )
        raw = self.decode(value)
        if type(raw) is not dict:
            raise NotAnObject(f"expected a JSON object, got {type(raw).__name__}")
        if self.transform is not None:
            raw = self._run_transform(raw)
            if raw is None:
                return None
        ingested_at = record.timestamp_ms * 1000 if record.timestamp_ms else now_us
        event = self.mapper(raw, ingested_at)
        occurred_at = event["occurred_at"]
        if not now_us - self.past_us <= occurred_at <= now_us + self.future_us:
            earliest = format_micros(now_us - self.past_us)
            latest = format_micros(now_us + self.future_us)
            raise ImplausibleTimestamp(
                f"occurred_at {format_micros(occurred_at)} is outside the plausible range "
                f"{earliest} .. {latest} (streams.plausible_past / plausible_future)"
            )
        return event

    def _run_transform(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        assert self.transform is not None
        try:
            result = self.transform(raw)
        except Exception as exc:
            raise TransformFailed(f"transform raised {type(exc).__name__}: {exc}") from exc
        if result is not None and type(result) is not dict:
            raise TransformFailed(
                f"transform returned {type(result).__name__}; expected a dict or None"
            )
        return result


def _decode_json(value: bytes) -> Any:
    try:
        return loads_exact(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as utf8:
            raise InvalidUtf8(f"not UTF-8 at byte {utf8.start}: {utf8.reason}") from None
        raise InvalidJson(f"not JSON: {exc}") from None


def _avro_decoder(name: str, config: SourceConfig) -> Callable[[bytes], Any]:
    """Decode a raw Avro record: single-object encoded (C3 01 + fingerprint) or bare body."""
    import io

    from fastavro import parse_schema, schemaless_reader

    from hosepipe.avro import SINGLE_OBJECT_HEADER_SIZE, single_object_header

    assert config.avro_schema is not None
    path = config.avro_schema
    try:
        schema = orjson.loads(path.read_bytes())
        parsed = parse_schema(schema)
    except (OSError, ValueError, Exception) as exc:
        raise ValueError(f"sources.{name}.avro_schema: cannot load {path}: {exc}") from exc
    header = single_object_header(schema)

    def decode(value: bytes) -> Any:
        body = value[SINGLE_OBJECT_HEADER_SIZE:] if value.startswith(header) else value
        buffer = io.BytesIO(body)
        try:
            record = schemaless_reader(buffer, parsed, None)
        except Exception as exc:
            raise InvalidAvro(f"not readable with {path.name}: {exc!r}") from None
        if buffer.tell() != len(body):
            raise InvalidAvro(
                f"{len(body) - buffer.tell()} trailing bytes after a {path.name} record"
            )
        return record

    return decode


class StreamCore:
    """Every configured source's stage, selected by the record's topic."""

    def __init__(self, stages: Mapping[str, SourceStage]) -> None:
        self.stages = dict(stages)

    @classmethod
    def from_pipeline(
        cls, pipeline: PipelineConfig, transforms: Mapping[str, Transform] | None = None
    ) -> StreamCore:
        """Compile every source of ``pipeline``; ValueError names the source on bad config."""
        transforms = transforms or {}
        return cls(
            {
                pipeline.raw_topic(name): SourceStage(
                    name, source, pipeline.streams, transforms.get(name)
                )
                for name, source in pipeline.sources.items()
            }
        )

    @property
    def topics(self) -> list[str]:
        return sorted(self.stages)

    def source_of(self, topic: str) -> str:
        stage = self.stages.get(topic)
        return stage.name if stage else ""

    def process_batch(
        self,
        records: Iterable[RawRecord],
        seen_check: SeenCheck,
        now_us: int | None = None,
    ) -> BatchResult:
        """Turn a batch of raw records into outputs, dead letters and counts (no I/O)."""
        now = now_micros() if now_us is None else now_us
        result = BatchResult()
        counts = result.counts
        dead_letters = result.dead_letters
        stages = self.stages
        candidates: list[CanonicalOutput] = []
        add_candidate = candidates.append
        # Per input partition: (candidate indexes, event ids), in batch order.
        by_partition: dict[tuple[str, int], tuple[list[int], list[str]]] = {}
        topic: str | None = None
        stage: SourceStage | None = None
        source = ""
        tally = SourceCounts()
        for record in records:
            if record.topic != topic:  # batches come in runs of one topic: look up per run
                topic = record.topic
                stage = stages.get(topic)
                source = stage.name if stage else ""
                tally = counts.get(source) or counts.setdefault(source, SourceCounts())
            tally.received += 1
            try:
                if stage is None:
                    raise UnknownTopic(f"no source reads topic {record.topic!r}")
                event = stage.normalize(record, now)
            except RecordError as exc:
                tally.dead_lettered += 1
                dead_letters.append(
                    DeadLetter(record, source, exc.stage, type(exc).__name__, str(exc), now)
                )
                continue
            except Exception as exc:  # a bug in a mapping path must not crash-loop the worker
                tally.dead_lettered += 1
                dead_letters.append(
                    DeadLetter(record, source, "map", type(exc).__name__, str(exc), now)
                )
                continue
            if event is None:
                tally.dropped += 1
                result.dropped += 1
                continue
            key = (topic, record.partition)
            group = by_partition.get(key)
            if group is None:
                group = by_partition[key] = ([], [])
            group[0].append(len(candidates))
            group[1].append(event["event_id"])
            add_candidate(CanonicalOutput(event, record))
        if candidates:
            self._dedupe(candidates, by_partition, seen_check, result)
        return result

    @staticmethod
    def _dedupe(
        candidates: list[CanonicalOutput],
        by_partition: dict[tuple[str, int], tuple[list[int], list[str]]],
        seen_check: SeenCheck,
        result: BatchResult,
    ) -> None:
        # One seen_check per input partition, with that partition's ids in batch order; an id
        # already kept earlier in the batch (same source) is a duplicate too.
        duplicate = [False] * len(candidates)
        kept: dict[str, set[str]] = {}
        for (topic, partition), (indexes, ids) in by_partition.items():
            answers = seen_check(topic, partition, ids)
            for index, answer in zip(indexes, answers, strict=True):
                if answer:
                    duplicate[index] = True
        counts = result.counts
        outputs = result.outputs
        add = outputs.append
        for output, is_duplicate in zip(candidates, duplicate, strict=True):
            event = output.event
            source = event["source"]
            seen_here = kept.get(source)
            if seen_here is None:
                seen_here = kept[source] = set()
            event_id = event["event_id"]
            if is_duplicate or event_id in seen_here:
                counts[source].duplicates += 1
                result.duplicates += 1
                continue
            seen_here.add(event_id)
            counts[source].out += 1
            add(output)


def encode_one_by_one(
    result: BatchResult, encode: Callable[[Event], bytes], now: int
) -> list[bytes]:
    """Encode each output; events Avro rejects (a mapping bug) become dead letters.

    Used when encoding the whole batch failed. The rejected events leave ``result.outputs``
    (so their ids are not remembered as seen) and the counts move from out to dead-lettered.
    """
    values: list[bytes | None] = []
    for output in result.outputs:
        try:
            values.append(encode(output.event))
        except ValueError as exc:
            values.append(None)
            source = output.event.get("source", "")
            result.dead_letters.append(
                DeadLetter(output.record, source, "encode", type(exc).__name__, str(exc), now)
            )
            counts = result.counts[source]
            counts.out -= 1
            counts.dead_lettered += 1
    result.outputs = [o for o, v in zip(result.outputs, values, strict=True) if v is not None]
    return [v for v in values if v is not None]


def never_seen(topic: str, partition: int, ids: Sequence[str]) -> list[bool]:
    """A :data:`SeenCheck` with no memory (every id is new)."""
    return [False] * len(ids)


OptionsT = TypeVar("OptionsT")


class EngineBase(Generic[OptionsT]):
    """What both engines set up alike: settings, pipeline, core, options, window, counters.

    ``make_options(batch_size, group, state_dir)`` builds the engine's options from the
    pipeline's ``streams`` section when none are given; ``state_dir`` is
    ``state_root(settings, group)``.
    """

    def __init__(
        self,
        settings: Settings,
        pipeline: PipelineConfig,
        *,
        core: StreamCore | None,
        options: OptionsT | None,
        counters: StageCounters | None,
        make_options: Callable[[int, str, Path], OptionsT],
        state_root: Callable[[Settings, str], Path],
    ) -> None:
        from streams.metrics import StageCounters, instance_id

        streams = pipeline.streams
        self.settings = settings
        self.pipeline = pipeline
        self.core = core or StreamCore.from_pipeline(pipeline)
        group = streams.consumer_group
        self.options: OptionsT = options or make_options(
            streams.batch_size, group, state_root(settings, group)
        )
        self.window_us = window_micros(streams)
        self.counters = counters or StageCounters()
        self.worker_id = instance_id()


def window_micros(streams: StreamsConfig) -> int:
    """The dedupe window in µs."""
    return int(streams.dedupe_window.total_seconds() * 1_000_000)
