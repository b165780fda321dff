"""The bad-input catalogue as data: every case, the layer it hits, and what must happen.

One list, :data:`CASES`, drives both the tests of this package and the table in
docs/reliability.md (``python -m tests.badinput.doc_table --write`` regenerates it;
``test_doc_table_is_current`` fails when they drift apart).

Layers:

- ``ingest``: the body of ``POST /v1/sources/{source}/records`` (NDJSON unless said otherwise).
- ``firehose``: a Firehose JSON API request (``X-Amz-Target``).
- ``stream``: one raw-topic record as a Kafka producer wrote it, read by ``hosepipe worker``.
- ``postgres``: a canonical event that reaches PostgreSQL through the selector's loader.
- ``graphql``: a request to the GraphQL API.

``expect`` is machine-readable, per layer:

- ingest: ``"<status> <error code>"``; status 200 means the record alone is refused (the
  response's ``results[i].error``) and the other records of the request are delivered;
  ``"200 accepted"`` means ingest takes it and the worker decides.
- firehose: ``"<status> <__type>"`` or ``"200 accepted"``.
- stream: ``"dlq <stage> <error class>"`` or ``"canonical"`` (unchanged through Avro).
- postgres: ``"verbatim"`` (stored and read back unchanged) or ``"rejected <text in the
  reason>"`` (a ``rejected_rows`` entry, the other rows of the file loaded).
- graphql: ``"empty"`` (valid query, no rows), ``"null"``, or ``"error <text in message>"``.

``bug`` names a known defect: the test states the wanted behaviour and is marked xfail.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

Layer = Literal["ingest", "firehose", "stream", "postgres", "graphql"]
LAYERS: tuple[Layer, ...] = ("ingest", "firehose", "stream", "postgres", "graphql")

MIB = 1024 * 1024
SQLI = "'; DROP TABLE events; --"
SQLI_STRINGS = (
    SQLI,
    "Robert'); DROP TABLE students;--",
    "1' OR '1'='1",
    '" OR ""="',
    "\\N",
    "a\\\\b",
    'x","y',
    "line1\nline2\r\n\tend",
    "$$; SELECT pg_sleep(10); $$",
)
UNICODE_STRINGS = {
    "rtl": "\u202eabc\u200f \u05e9\u05dc\u05d5\u05dd \u0627\u0644\u0633\u0644\u0627\u0645",
    "emoji": "\U0001f600 \U0001f469\u200d\U0001f469\u200d\U0001f467 \U0001f1e9\U0001f1ea",
    "combining": "e\u0301 Z\u0351\u0307\u0308a\u0300\u0301",
    "bom_zero_width": "\ufeffa\u200bb\u2060c",
    "astral": "\U00010348 \U0001d11e \U0010fffd",
}


def now_iso(offset: timedelta = timedelta(0)) -> str:
    """An event time the worker finds plausible (near the wall clock)."""
    return (datetime.now(UTC) + offset).isoformat().replace("+00:00", "Z")


def record(**fields: Any) -> dict[str, Any]:
    """A good raw record of the catalogue's source; ``fields`` override or add keys."""
    base: dict[str, Any] = {
        "id": f"ok-{time.time_ns()}",
        "ts": now_iso(),
        "type": "clicked",
        "user": "u1",
    }
    base.update(fields)
    return base


def without(key: str) -> dict[str, Any]:
    raw = record()
    del raw[key]
    return raw


def dumps(raw: dict[str, Any]) -> bytes:
    return orjson.dumps(raw)


def nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    """A record whose ``p`` field is ``depth`` levels deep."""
    head = dumps(record())[:-1]
    return head + b',"p":' + opener * depth + b"1" * (opener == b'{"a":') + closer * depth + b"}"


def big(size: int) -> bytes:
    return dumps(record(pad="x" * size))


def firehose_put(data: bytes, stream: str = "{source}") -> bytes:
    """A PutRecord body; ``{source}`` is replaced by the test's delivery stream name."""
    return orjson.dumps(
        {"DeliveryStreamName": stream, "Record": {"Data": base64.b64encode(data).decode()}}
    )


@dataclass(frozen=True)
class Case:
    """One bad (or tricky-but-valid) input and the outcome the pipeline owes it."""

    name: str
    layer: Layer
    input: str  # for people (the docs table)
    goes_to: str  # where it ends up
    user_sees: str  # the error, status or DLQ headers the user gets
    expect: str  # machine-readable outcome, see the module docstring
    data: Callable[[], Any] = lambda: b""
    bug: str | None = None
    options: tuple[tuple[str, str], ...] = ()  # e.g. (("content_type", "application/json"),)

    def option(self, key: str, default: str = "") -> str:
        return dict(self.options).get(key, default)

    def value(self) -> Any:
        """The case's input, built once per process (so every layer sees the same bytes)."""
        if self.name not in _VALUES:
            _VALUES[self.name] = self.data()
        return _VALUES[self.name]


_VALUES: dict[str, Any] = {}


DLQ_HEADERS = "DLQ headers `hosepipe.error.class/stage/message`"


def _dlq(stage: str, cls: str, why: str) -> tuple[str, str, str]:
    return "`events.dlq`", f"{DLQ_HEADERS}: `{stage}` / `{cls}` ({why})", f"dlq {stage} {cls}"


def _stream(
    name: str, text: str, data: Callable[[], Any], stage: str, cls: str, why: str, **kw: Any
) -> Case:
    goes, sees, expect = _dlq(stage, cls, why)
    return Case(name, "stream", text, goes, sees, expect, data, **kw)


CANONICAL = "`events.canonical`, unchanged"
ROUNDTRIP = "the same characters in Avro, the lake and PostgreSQL (no normalization)"

STREAM_CASES = [
    _stream(
        "invalid_json",
        'invalid JSON (`{"id": "x", "ts": `)',
        lambda: b'{"id": "x", "ts": ',
        "decode",
        "InvalidJson",
        "`not JSON: ...` with line and column",
    ),
    _stream(
        "not_utf8",
        "bytes that are not UTF-8 (`0xff 0xfe` inside a string)",
        lambda: b'{"id": "\xff\xfe", "ts": "2026-01-01T00:00:00Z", "type": "t"}',
        "decode",
        "InvalidUtf8",
        "`not UTF-8 at byte N`",
    ),
    _stream(
        "utf8_bom",
        "a UTF-8 byte-order mark before the JSON",
        lambda: b"\xef\xbb\xbf" + dumps(record()),
        "decode",
        "InvalidJson",
        "`BOM is not supported`",
    ),
    _stream(
        "lone_surrogate",
        'a lone surrogate escaped in JSON (`"\\ud800"`)',
        lambda: dumps(record())[:-1] + b',"x":"\\ud800"}',
        "decode",
        "InvalidJson",
        "`no low surrogate in string`",
    ),
    _stream(
        "nan_literal",
        "`NaN` / `1e400` as a number",
        lambda: dumps(record())[:-1] + b',"x":1e400}',
        "decode",
        "InvalidJson",
        "`number is infinity`",
    ),
    _stream(
        "not_an_object",
        "a JSON array or scalar instead of an object",
        lambda: b"[1, 2, 3]",
        "decode",
        "NotAnObject",
        "`expected a JSON object, got list`",
    ),
    _stream(
        "empty_value",
        "an empty value or a Kafka tombstone",
        lambda: b"",
        "decode",
        "EmptyRecord",
        "`the record has no value`",
    ),
    _stream(
        "record_2mib",
        "a 2 MiB record (limit `max_record_bytes`, default 1,024,000)",
        lambda: big(2 * MIB),
        "decode",
        "RecordTooLarge",
        "`N bytes exceed max_record_bytes`",
        options=(("isolated", "1"),),
    ),
    _stream(
        "record_1000kib_unmapped",
        "a 1,020,000-byte record without an id (under every size limit)",
        lambda: dumps(without("id"))[:-1] + b',"pad":"' + b"x" * 1_020_000 + b'"}',
        "map",
        "MissingField",
        "`event_id: no value at $.id`",
        options=(("isolated", "1"),),
    ),
    Case(
        "record_1000kib_valid",
        "stream",
        "a valid 1,020,000-byte record (under every size limit)",
        "`events.canonical`",
        "the event",
        "canonical",
        lambda: dumps(record(id="big-valid", pad="x" * 1_020_000)),
        options=(("isolated", "1"),),
    ),
    _stream(
        "nested_10000_arrays",
        "JSON nested 10,000 deep (arrays)",
        lambda: nested(10_000),
        "decode",
        "InvalidJson",
        "`depth limit exceeded`; no RecursionError, no crash",
    ),
    _stream(
        "nested_10000_objects",
        "JSON nested 10,000 deep (objects)",
        lambda: nested(10_000, b'{"a":', b"}"),
        "decode",
        "InvalidJson",
        "`depth limit exceeded`",
    ),
    _stream(
        "occurred_at_dict",
        "wrong type: `occurred_at` is an object",
        lambda: dumps(record(ts={"seconds": 1})),
        "map",
        "InvalidTimestamp",
        "`occurred_at at $.ts: expected a number, got dict`",
    ),
    _stream(
        "occurred_at_bool",
        "wrong type: `occurred_at` is `true`",
        lambda: dumps(record(ts=True)),
        "map",
        "InvalidTimestamp",
        "`expected a number, got a boolean`",
    ),
    _stream(
        "occurred_at_text",
        'unparseable time (`"yesterday"`)',
        lambda: dumps(record(ts="yesterday")),
        "map",
        "InvalidTimestamp",
        "`not an ISO-8601 time`",
    ),
    _stream(
        "id_list",
        "wrong type: the id is a list",
        lambda: dumps(record(id=[1, 2])),
        "map",
        "InvalidField",
        "`event_id at $.id: expected a string or number, got list`",
    ),
    _stream(
        "id_object",
        "wrong type: the id is an object",
        lambda: dumps(record(id={"v": 1})),
        "map",
        "InvalidField",
        "`expected a string or number, got dict`",
    ),
    _stream(
        "id_missing",
        "missing id",
        lambda: dumps(without("id")),
        "map",
        "MissingField",
        "`event_id: no value at $.id`",
    ),
    _stream(
        "id_null",
        "id is `null`",
        lambda: dumps(record(id=None)),
        "map",
        "MissingField",
        "`event_id: no value at $.id`",
    ),
    _stream(
        "id_empty",
        'id is `""`',
        lambda: dumps(record(id="")),
        "map",
        "MissingField",
        "`event_id: empty value at $.id`",
    ),
    _stream(
        "type_missing",
        "missing event type",
        lambda: dumps(without("type")),
        "map",
        "MissingField",
        "`event_type: no value at $.type`",
    ),
    _stream(
        "year_1900",
        "timestamp in year 1900",
        lambda: dumps(record(ts="1900-01-01T00:00:00Z")),
        "validate",
        "ImplausibleTimestamp",
        "outside `streams.plausible_past` (default 3650 days)",
    ),
    _stream(
        "year_3000",
        "timestamp in year 3000",
        lambda: dumps(record(ts="3000-01-01T00:00:00Z")),
        "validate",
        "ImplausibleTimestamp",
        "outside `streams.plausible_future` (default 1 day)",
    ),
    _stream(
        "epoch_1e30",
        "a number too large for any date (`1e30`)",
        lambda: dumps(record(ts=1e30)),
        "validate",
        "ImplausibleTimestamp",
        "`occurred_at 1000000000000000013287555072 µs since the epoch (after year 9999) is "
        "outside the plausible range ...`",
    ),
    Case(
        "id_beyond_64bit",
        "stream",
        "a numeric id beyond 64 bits (`123456789012345678901234567890`)",
        "`events.canonical` with the exact digits",
        "the id `123456789012345678901234567890` (integers beyond 64 bits are read exactly, "
        "never as floats: no collisions)",
        "canonical",
        lambda: dumps(record())[:-1] + b',"id":123456789012345678901234567890}',
    ),
    *[
        Case(
            f"unicode_{kind}",
            "stream",
            f"Unicode: {kind.replace('_', ' ')} in id, subject and payload",
            CANONICAL,
            ROUNDTRIP,
            "canonical",
            (lambda text=text: dumps(record(id=f"u-{text}", user=text, note=text))),  # type: ignore[misc]
        )
        for kind, text in UNICODE_STRINGS.items()
    ],
    Case(
        "escaped_surrogate_pair",
        "stream",
        'an escaped surrogate pair (`"\\ud83d\\ude00"`)',
        CANONICAL,
        "the decoded character (U+1F600)",
        "canonical",
        lambda: dumps(record(id="pair"))[:-1] + b',"note":"\\ud83d\\ude00"}',
    ),
    Case(
        "nul_escaped_in_payload",
        "stream",
        'NUL escaped in a payload string (`"a\\u0000b"`)',
        CANONICAL,
        "the same string in Avro and the lake (PostgreSQL: see the postgres rows)",
        "canonical",
        lambda: dumps(record(note="a\x00b")),
    ),
    Case(
        "sql_injection_fields",
        "stream",
        f"SQL-injection strings in every field (`{SQLI}`, quotes, `\\N`, newlines)",
        CANONICAL,
        "the strings verbatim",
        "canonical",
        lambda: dumps(record(id=SQLI, type=SQLI_STRINGS[1], user=SQLI_STRINGS[2], s=SQLI_STRINGS)),
    ),
]

INGEST_CASES = [
    Case(
        "ingest_invalid_json_line",
        "ingest",
        "NDJSON: one line of invalid JSON among good lines",
        "refused alone; the good lines go to `raw.<source>`",
        "HTTP 200, `results[i]: {error: InvalidRecord, reason: line N is not valid JSON: ...}`",
        "200 InvalidRecord",
        lambda: b'{"id": "x", "ts": ',
    ),
    Case(
        "ingest_not_utf8_line",
        "ingest",
        "NDJSON: a line that is not UTF-8",
        "refused alone",
        "HTTP 200, `results[i].error: InvalidRecord`",
        "200 InvalidRecord",
        lambda: b'{"id": "\xff\xfe"}',
    ),
    Case(
        "ingest_lone_surrogate_line",
        "ingest",
        'NDJSON: a line with a lone surrogate `"\\ud800"`',
        "refused alone",
        "HTTP 200, `results[i].error: InvalidRecord`",
        "200 InvalidRecord",
        lambda: b'{"id": "s", "x": "\\ud800"}',
    ),
    Case(
        "ingest_nested_line",
        "ingest",
        "NDJSON: a line nested 10,000 deep",
        "refused alone",
        "HTTP 200, `results[i].error: InvalidRecord` (`depth limit exceeded`)",
        "200 InvalidRecord",
        lambda: nested(10_000),
    ),
    Case(
        "ingest_not_object_line",
        "ingest",
        "NDJSON: a line that is a list or a number",
        "refused alone",
        "HTTP 200, `results[i].error: InvalidRecord` (`not a JSON object`)",
        "200 InvalidRecord",
        lambda: b"[1, 2]",
    ),
    Case(
        "ingest_record_2mib",
        "ingest",
        "a 2 MiB record (limit `ingest.max_record_bytes`, 1,024,000)",
        "refused alone",
        "HTTP 200, `results[i].error: RecordTooLarge`",
        "200 RecordTooLarge",
        lambda: big(2 * MIB),
    ),
    Case(
        "ingest_wrong_types",
        "ingest",
        "valid JSON with wrong types (id a list, occurred_at an object)",
        "accepted into `raw.<source>`, then `events.dlq` (the mapping is the worker's)",
        "HTTP 200 with partition/offset; DLQ `map` / `InvalidField`",
        "200 accepted",
        lambda: dumps(record(id=[1], ts={"a": 1})),
    ),
    Case(
        "ingest_array_invalid_json",
        "ingest",
        "a JSON-array body that is not valid JSON",
        "nothing from this request (resend it)",
        "HTTP 400 `InvalidBody`: `the body is not valid JSON: ...`",
        "400 InvalidBody",
        lambda: b'[{"id": "a"}, {"id": ',
        options=(("content_type", "application/json"),),
    ),
    Case(
        "ingest_array_nested",
        "ingest",
        "a JSON-array body nested 10,000 deep",
        "nothing from this request",
        "HTTP 400 `InvalidBody` (`depth limit exceeded`)",
        "400 InvalidBody",
        lambda: b"[" * 10_000 + b"]" * 10_000,
        options=(("content_type", "application/json"),),
    ),
    Case(
        "ingest_array_record_nested_1000",
        "ingest",
        "a JSON-array body with one record nested 1,000 deep (more than can be written back)",
        "refused alone; the other records of the array to `raw.<source>`",
        "HTTP 200, `results[i].error: InvalidRecord` (`nested too deeply to be written back; "
        "send it as an NDJSON line`); before 2026-12-05 the whole request failed with a 500. "
        "(In a body that also holds a run of 19 or more digits, read exactly by the standard "
        "library, such nesting fails the body: HTTP 400 `InvalidBody`, "
        "`nesting too deep for exact integers`.)",
        "200 InvalidRecord",
        # no run of 19 digits (record()'s id has one): that body is read by orjson alone
        lambda: (
            dumps(record(id="deep-array-record"))[:-1] + b',"p":' + b"[" * 1000 + b"]" * 1000 + b"}"
        ),
        options=(("content_type", "application/json"),),
    ),
    Case(
        "ingest_array_id_beyond_64bit",
        "ingest",
        "a JSON-array body with a numeric id beyond 64 bits (`123456789012345678901234567890`)",
        "`raw.<source>` with every digit, keyed by it",
        "HTTP 200, accepted (before 2026-12-05 the record was written back with the id "
        "rounded to `1.2345678901234568e+29`)",
        "200 accepted",
        lambda: dumps(record())[:-1] + b',"id":123456789012345678901234567890}',
        options=(("content_type", "application/json"),),
    ),
    Case(
        "ingest_empty_body",
        "ingest",
        "an empty body",
        "nothing",
        "HTTP 400 `InvalidBody`: `the body is empty`",
        "400 InvalidBody",
        lambda: b"  \n",
    ),
    Case(
        "ingest_body_5mib",
        "ingest",
        "a 5 MiB request (limit `ingest.max_request_bytes`, 4 MiB)",
        "nothing",
        "HTTP 413 `RequestTooLarge`",
        "413 RequestTooLarge",
        lambda: b"\n".join(big(500_000) for _ in range(10)),
    ),
    Case(
        "ingest_too_many_records",
        "ingest",
        "501 records in one request (limit `ingest.max_records_per_request`, 500)",
        "nothing",
        "HTTP 413 `TooManyRecords`",
        "413 TooManyRecords",
        lambda: b"\n".join(dumps(record(id=f"m{i}")) for i in range(501)),
    ),
    Case(
        "ingest_unknown_source",
        "ingest",
        "a source that is not configured",
        "nothing",
        "HTTP 404 `UnknownSource` naming the push sources",
        "404 UnknownSource",
        lambda: dumps(record()),
        options=(("source", "no_such_source"),),
    ),
]

FIREHOSE_CASES = [
    Case(
        "firehose_not_json",
        "firehose",
        "a Firehose request body that is not JSON",
        "nothing",
        "HTTP 400 `SerializationException`",
        "400 SerializationException",
        lambda: b"{not json",
    ),
    Case(
        "firehose_bad_base64",
        "firehose",
        "`Record.Data` that is not base64",
        "nothing",
        "HTTP 400 `SerializationException`: `Record: Data is not base64`",
        "400 SerializationException",
        lambda: b'{"DeliveryStreamName": "{source}", "Record": {"Data": "***"}}',
    ),
    Case(
        "firehose_record_2mib",
        "firehose",
        "a 2 MiB record (Firehose's limit is 1,000 KiB)",
        "nothing",
        "HTTP 400 `InvalidArgumentException`: `record size N bytes exceeds the limit`",
        "400 InvalidArgumentException",
        lambda: firehose_put(big(2 * MIB)),
    ),
    Case(
        "firehose_empty_batch",
        "firehose",
        "`PutRecordBatch` with no records",
        "nothing",
        "HTTP 400 `ValidationException`",
        "400 ValidationException",
        lambda: b'{"DeliveryStreamName": "{source}", "Records": []}',
        options=(("operation", "PutRecordBatch"),),
    ),
    Case(
        "firehose_unknown_stream",
        "firehose",
        "a delivery stream that does not exist",
        "nothing",
        "HTTP 400 `ResourceNotFoundException`",
        "400 ResourceNotFoundException",
        lambda: firehose_put(dumps(record()), "no_such_stream"),
    ),
    Case(
        "firehose_no_target",
        "firehose",
        "no or unknown `X-Amz-Target`",
        "nothing",
        "HTTP 400 `UnknownOperationException`",
        "400 UnknownOperationException",
        lambda: firehose_put(dumps(record())),
        options=(("operation", ""),),
    ),
    Case(
        "firehose_data_not_json",
        "firehose",
        "`Data` that is base64 of invalid JSON (Firehose records are opaque)",
        "accepted into `raw.<source>`, then `events.dlq`",
        "HTTP 200 with a `RecordId`; DLQ `decode` / `InvalidJson`",
        "200 accepted",
        lambda: firehose_put(b"not json at all"),
    ),
]

PG_CASES = [
    Case(
        "pg_sql_injection",
        "postgres",
        f"SQL-injection strings (`{SQLI}`, quotes, `\\N`, CSV delimiters, newlines) in "
        "event_id, type, subject, payload, attributes",
        "`events`, stored verbatim (COPY CSV and bound parameters, never SQL text)",
        "the same strings from SQL and GraphQL; the table still exists",
        "verbatim",
        lambda: {"strings": SQLI_STRINGS},
    ),
    Case(
        "pg_unicode",
        "postgres",
        "Unicode (RTL marks, emoji, combining characters, BOM) in every text column",
        "`events`, verbatim",
        "the same characters from SQL and GraphQL",
        "verbatim",
        lambda: {"strings": tuple(UNICODE_STRINGS.values())},
    ),
    Case(
        "pg_nul_in_payload",
        "postgres",
        "NUL (`\\u0000`) inside a payload string (valid JSON, but jsonb cannot hold it)",
        "`rejected_rows` (rule `events`); the other rows of the file load",
        "a rejected row with reason `payload: contains a NUL character (U+0000, \\u0000), "
        "which PostgreSQL text and jsonb cannot store`",
        "rejected payload: contains a NUL character",
        lambda: {"payload": '{"note": "a\\u0000b"}'},
    ),
    Case(
        "pg_nul_in_subject",
        "postgres",
        "NUL in a text column (subject): PostgreSQL text cannot hold it",
        "`rejected_rows` (rule `events`); the other rows of the file load",
        "a rejected row with reason `subject: contains a NUL character (U+0000, \\u0000), ...`",
        "rejected subject: contains a NUL character",
        lambda: {"subject": "a\x00b"},
    ),
    Case(
        "pg_nul_in_event_id",
        "postgres",
        "NUL in the event_id (and in an attribute)",
        "`rejected_rows` (rule `events`) under the event_id with the NUL written `\\u0000`; "
        "the other rows of the file load",
        "a rejected row with reason `event_id, attributes: contains a NUL character ...`",
        "rejected event_id, attributes: contains a NUL character",
        lambda: {"event_id": "bad-pg_nul_in_event_id-a\x00b", "attributes": {"k": "v\x00"}},
    ),
]


def deep_query(levels: int) -> str:
    """A cyclic introspection query ``levels`` object fields deep
    (``__schema { types { fields { type { fields { type ...``)."""
    fields = ["__schema", "types", *(["fields", "type"] * levels)][:levels]
    return "{ " + " { ".join(fields) + " { name" + " }" * (len(fields) + 1)


def events_query(flt: str) -> str:
    return "{ events(filter: " + flt + ") { edges { node { eventId } } totalCount } }"


GRAPHQL_CASES = [
    *[
        Case(
            f"graphql_sqli_{field}",
            "graphql",
            f"SQL injection in the `{field}` filter",
            "a bound parameter",
            "an empty result; the `events` table still exists",
            "empty",
            (lambda flt=flt: {"query": events_query(flt)}),  # type: ignore[misc]
        )
        for field, flt in {
            "source": '{source: "' + SQLI + '"}',
            "sources": '{sources: ["' + SQLI + '", "x\\" OR 1=1 --"]}',
            "eventType": '{eventType: "' + SQLI + '"}',
            "subject": '{subject: "' + SQLI + '"}',
            "payload": '{payload: {k: "' + SQLI + '"}}',
            "payloadPath": '{payloadPath: [{path: "$.a\'; DROP TABLE events; --", equals: 1}]}',
            "attributes": '{attributes: {k: "' + SQLI + '"}}',
        }.items()
    ],
    Case(
        "graphql_sqli_event_id",
        "graphql",
        "SQL injection in `event(eventId:)`",
        "a bound parameter",
        "`null`",
        "null",
        lambda: {"query": '{ event(eventId: "' + SQLI + '") { eventId } }'},
    ),
    Case(
        "graphql_sqli_cursor",
        "graphql",
        "SQL injection as the `after` cursor",
        "nothing runs",
        "error `invalid cursor in 'after'`",
        "error invalid cursor",
        lambda: {"query": '{ events(after: "' + SQLI + '") { edges { cursor } } }'},
    ),
    Case(
        "graphql_nul_in_filter",
        "graphql",
        "NUL in a filter string (PostgreSQL text cannot hold it)",
        "nothing runs",
        "error `filter.subject contains a NUL character (\\u0000), which PostgreSQL text "
        "and jsonb cannot hold ...`",
        "error filter.subject contains a NUL character",
        lambda: {
            "query": "query($s: String) { events(filter: {subject: $s}) { edges { cursor } } }",
            "variables": {"s": "a\x00b"},
        },
    ),
    Case(
        "graphql_year_3000_filter",
        "graphql",
        "a time filter in year 3000 / 1900",
        "a valid query",
        "an empty result",
        "empty",
        lambda: {
            "query": events_query(
                '{occurredAt: {gte: "3000-01-01T00:00:00Z"}, '
                'ingestedAt: {lt: "1900-01-01T00:00:00Z"}}'
            )
        },
    ),
    Case(
        "graphql_bad_datetime",
        "graphql",
        "a time filter that is not a date",
        "nothing runs",
        "error naming the DateTime value",
        "error DateTime",
        lambda: {"query": events_query('{occurredAt: {gte: "yesterday"}}')},
    ),
    Case(
        "graphql_first_overflow",
        "graphql",
        "`first: 99999999999` (beyond a 32-bit Int)",
        "nothing runs",
        "error `operation 'anonymous' costs 100000000000, more than the limit 5000`",
        "error more than the limit",
        lambda: {"query": "{ events(first: 99999999999) { edges { cursor } } }"},
    ),
    Case(
        "graphql_depth_limit",
        "graphql",
        "a cyclic introspection query (`__schema{types{fields{type{fields...`) deeper "
        "than `api.max_depth` (10); introspection fields count, except `ofType` chains "
        "(standard introspection asks nine of them; they end in null)",
        "nothing runs",
        "error `'anonymous' exceeds maximum operation depth of 10 (api.max_depth)`",
        "error exceeds maximum operation depth",
        lambda: {"query": deep_query(11)},
    ),
    Case(
        "graphql_nested_10000",
        "graphql",
        "a query nested 10,000 deep",
        "nothing runs",
        "error `Syntax Error: Document is nested too deeply`; the server keeps serving",
        "error nested too deeply",
        lambda: {"query": "{ sources " + "{ name " * 10_000 + "}" * 10_001},
    ),
    Case(
        "graphql_cost_aliases",
        "graphql",
        "400 aliased `events(first: 1000)` fields",
        "nothing runs",
        "error `operation 'anonymous' costs N, more than the limit 5000`",
        "error more than the limit",
        lambda: {
            "query": "{ "
            + " ".join(f"a{i}: events(first: 1000) {{ edges {{ cursor }} }}" for i in range(400))
            + " }"
        },
    ),
    Case(
        "graphql_oversized_query",
        "graphql",
        "a 2 MiB query document",
        "nothing runs (the body is refused before parsing)",
        "HTTP 413 `query too large: the request is more than 100000 bytes "
        "(api.max_query_bytes)`; the server keeps serving",
        "error 413",
        lambda: {"query": "{ sources { name } }" + " " * (2 * MIB)},
    ),
    Case(
        "graphql_too_many_tokens",
        "graphql",
        "a query of 20,000 tokens within `api.max_query_bytes` (`{ a a a ... }`)",
        "nothing runs (the parser stops)",
        "error `Syntax Error: Document contains more than 10000 tokens. Parsing aborted.`",
        "error more than 10000 tokens",
        lambda: {"query": "{" + " a" * 20_000 + " }"},
    ),
    Case(
        "graphql_not_json",
        "graphql",
        "a POST body that is not JSON",
        "nothing runs",
        "HTTP 400",
        "error 400",
        lambda: {"raw": b"{not json"},
    ),
]

CASES: list[Case] = [
    *STREAM_CASES,
    *INGEST_CASES,
    *FIREHOSE_CASES,
    *PG_CASES,
    *GRAPHQL_CASES,
]


def cases(layer: Layer) -> list[Case]:
    """The catalogue's cases of one layer, in order."""
    return [case for case in CASES if case.layer == layer]


def by_name(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(name)
