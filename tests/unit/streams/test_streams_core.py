"""The batch core: DLQ reasons, transform contract, dedupe and conservation — no servers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from hosepipe.config import PipelineConfig
from streams.core import RawRecord, StreamCore, encode_one_by_one, message_bytes, never_seen
from streams.output import OutputSize, dead_letter_message, set_aside_too_large

NOW = 1795327200_000000  # 2026-11-22T06:00:00Z


def pipeline(**source: Any) -> PipelineConfig:
    base: dict[str, Any] = {
        "kind": "push",
        "max_record_bytes": 300,
        "mapping": {
            "event_id": "$.id",
            "occurred_at": "$.ts",
            "event_type": "$.type",
        },
    }
    base.update(source)
    return PipelineConfig.model_validate(
        {
            "sources": {"clicks": base},
            "streams": {"plausible_past": "30d", "plausible_future": "1h"},
        }
    )


def good(i: int, **extra: Any) -> bytes:
    return orjson.dumps({"id": f"e{i}", "ts": NOW // 1000, "type": "view", **extra})


def records(values: Sequence[bytes | None], partition: int = 0) -> list[RawRecord]:
    return [
        RawRecord("raw.clicks", partition, offset, value, timestamp_ms=NOW // 1000 + 5)
        for offset, value in enumerate(values)
    ]


def test_good_records_become_canonical_events() -> None:
    core = StreamCore.from_pipeline(pipeline())
    result = core.process_batch(records([good(1), good(2)]), never_seen, NOW)
    assert [o.event["event_id"] for o in result.outputs] == ["e1", "e2"]
    event = result.outputs[0].event
    assert event["ingested_at"] == NOW + 5000
    assert event["occurred_at"] == NOW
    assert json.loads(event["payload"]) == {}
    assert result.counts["clicks"].received == 2
    assert result.counts["clicks"].balanced


def test_each_bad_record_gets_its_reason() -> None:
    core = StreamCore.from_pipeline(pipeline())
    far_past = orjson.dumps({"id": "p", "ts": (NOW - 31 * 86400 * 10**6) // 1000, "type": "v"})
    far_future = orjson.dumps({"id": "f", "ts": (NOW + 2 * 3600 * 10**6) // 1000, "type": "v"})
    bad: list[bytes | None] = [
        b"{not json",
        b"\xff\xfe{}",
        b"[1, 2]",
        None,
        b"",
        b'{"id": "x", "ts": "yesterday", "type": "v"}',
        b'{"ts": 1, "type": "v"}',
        far_past,
        far_future,
        good(9, pad="x" * 400),
    ]
    result = core.process_batch(records([good(1), *bad, good(2)]), never_seen, NOW)
    assert [o.event["event_id"] for o in result.outputs] == ["e1", "e2"]
    reasons = [(d.stage, d.error_class) for d in result.dead_letters]
    assert reasons == [
        ("decode", "InvalidJson"),
        ("decode", "InvalidUtf8"),
        ("decode", "NotAnObject"),
        ("decode", "EmptyRecord"),
        ("decode", "EmptyRecord"),
        ("map", "InvalidTimestamp"),
        ("map", "MissingField"),
        ("validate", "ImplausibleTimestamp"),
        ("validate", "ImplausibleTimestamp"),
        ("decode", "RecordTooLarge"),
    ]
    letter = result.dead_letters[0]
    assert letter.record.value == b"{not json"
    headers = dict(letter.headers())
    assert headers["hosepipe.source"] == b"clicks"
    assert headers["hosepipe.error.class"] == b"InvalidJson"
    assert headers["hosepipe.original.topic"] == b"raw.clicks"
    assert headers["hosepipe.original.partition"] == b"0"
    assert headers["hosepipe.original.offset"] == b"1"
    assert headers["hosepipe.failed_at"] == b"2026-11-22T06:00:00.000000Z"
    assert result.counts["clicks"].balanced


def hook(raw: dict[str, Any]) -> dict[str, Any] | None:
    if raw.get("drop"):
        return None
    if raw.get("boom"):
        raise RuntimeError("boom at " + raw["id"])
    if raw.get("weird"):
        return ["not", "a", "dict"]  # type: ignore[return-value]
    return {**raw, "type": raw["type"].upper()}


def test_transform_contract_ok_dropped_failed() -> None:
    core = StreamCore.from_pipeline(pipeline(), {"clicks": hook})
    batch = records([good(1), good(2, drop=True), good(3, boom=True), good(4, weird=True)])
    result = core.process_batch(batch, never_seen, NOW)
    assert [o.event["event_type"] for o in result.outputs] == ["VIEW"]
    assert result.dropped == 1
    assert [(d.stage, d.error_class) for d in result.dead_letters] == [
        ("transform", "TransformFailed"),
        ("transform", "TransformFailed"),
    ]
    assert "RuntimeError: boom at e3" in result.dead_letters[0].message
    assert result.counts["clicks"].balanced


def test_transform_loaded_from_dotted_path() -> None:
    core = StreamCore.from_pipeline(pipeline(transform="tests.unit.streams.test_streams_core:hook"))
    result = core.process_batch(records([good(1, drop=True), good(2)]), never_seen, NOW)
    assert result.dropped == 1 and len(result.outputs) == 1


def test_dedupe_against_state_and_within_batch() -> None:
    core = StreamCore.from_pipeline(pipeline())
    asked: list[tuple[str, int, list[str]]] = []

    def seen(topic: str, partition: int, ids: Sequence[str]) -> list[bool]:
        asked.append((topic, partition, list(ids)))
        return [i == "e1" for i in ids]

    batch = records([good(1), good(2), good(2), good(3)], partition=3)
    result = core.process_batch(batch, seen, NOW)
    assert [o.event["event_id"] for o in result.outputs] == ["e2", "e3"]
    assert result.duplicates == 2
    assert asked == [("raw.clicks", 3, ["e1", "e2", "e2", "e3"])]


def test_unknown_topic_is_dead_lettered_not_raised() -> None:
    core = StreamCore.from_pipeline(pipeline())
    result = core.process_batch([RawRecord("raw.other", 0, 0, good(1))], never_seen, NOW)
    assert result.dead_letters[0].error_class == "UnknownTopic"


def test_window_config_is_read() -> None:
    assert pipeline().streams.dedupe_window == timedelta(hours=24)


values = st.one_of(
    st.builds(good, st.integers(0, 20)),
    st.binary(max_size=40),
    st.sampled_from([b"{}", b"[]", b"null", b'{"id": 1, "ts": 0, "type": "x"}']),
    st.none(),
)


@settings(max_examples=200)
@given(st.lists(values, max_size=40), st.sets(st.integers(0, 20)))
def test_conservation_for_any_input(batch: list[bytes | None], known: set[int]) -> None:
    core = StreamCore.from_pipeline(pipeline())

    def seen(topic: str, partition: int, ids: Sequence[str]) -> list[bool]:
        return [i in {f"e{k}" for k in known} for i in ids]

    result = core.process_batch(records(batch), seen, NOW)
    counts = result.counts.get("clicks")
    total = counts.received if counts else 0
    assert total == len(batch)
    assert len(result.outputs) + result.duplicates + result.dropped + len(
        result.dead_letters
    ) == len(batch)
    ids = [o.event["event_id"] for o in result.outputs]
    assert len(ids) == len(set(ids))
    assert not {f"e{k}" for k in known} & set(ids)


def test_events_avro_rejects_become_dead_letters_and_are_not_remembered() -> None:
    core = StreamCore.from_pipeline(pipeline())
    result = core.process_batch(records([good(1), good(2), good(3)]), never_seen, NOW)

    def encode(event: dict[str, Any]) -> bytes:
        if event["event_id"] == "e2":
            raise ValueError("e2 does not fit the schema")
        return event["event_id"].encode()

    values = encode_one_by_one(result, encode, NOW)
    assert values == [b"e1", b"e3"]
    assert [o.event["event_id"] for o in result.outputs] == ["e1", "e3"]
    (letter,) = result.dead_letters
    assert (letter.stage, letter.error_class) == ("encode", "ValueError")
    counts = result.counts["clicks"]
    assert (counts.out, counts.dead_lettered) == (2, 1)
    assert counts.balanced


def test_events_over_the_limit_become_dead_letters_and_the_counts_follow() -> None:
    core = StreamCore.from_pipeline(pipeline())
    batch = records([good(1), good(2, pad="x" * 200), b"{not json", good(3)])
    result = core.process_batch(batch, never_seen, NOW)
    values = [o.event["payload"].encode() for o in result.outputs]
    limit = message_bytes(b"e2", values[1], ()) - 1  # only e2's event is over it

    kept = set_aside_too_large(result, values, limit, NOW)

    assert [o.event["event_id"] for o in result.outputs] == ["e1", "e3"]
    assert kept == [values[0], values[2]]
    assert [(d.error_class, d.stage) for d in result.dead_letters] == [
        ("InvalidJson", "decode"),
        ("EventTooLarge", "encode"),
    ]
    assert "'e2'" in result.dead_letters[1].message and str(limit) in result.dead_letters[1].message
    assert result.dead_letters[1].record is batch[1]  # the raw record, for replay
    counts = result.counts["clicks"]
    assert (counts.out, counts.dead_lettered) == (2, 2) and counts.balanced


def test_nothing_over_the_limit_changes_nothing() -> None:
    core = StreamCore.from_pipeline(pipeline())
    result = core.process_batch(records([good(1), good(2)]), never_seen, NOW)
    values = [b"a", b"b"]
    assert set_aside_too_large(result, values, 1_000_000, NOW) == values
    assert len(result.outputs) == 2 and not result.dead_letters


def test_a_dead_letter_is_cut_only_when_over_the_limit() -> None:
    core = StreamCore.from_pipeline(pipeline())
    result = core.process_batch(records([b"{not json" + b" " * 5000]), never_seen, NOW)
    (letter,) = result.dead_letters
    whole, headers = dead_letter_message(letter, 1_000_000)
    assert whole == letter.record.value and headers == letter.headers()

    value, headers = dead_letter_message(letter, 6000)
    assert value is not None and letter.record.value.startswith(value)  # type: ignore[union-attr]
    assert message_bytes(letter.record.key, value, headers) <= 6000
    assert dict(headers)["hosepipe.truncated"] == b"true"


def test_the_output_producer_takes_the_sizes() -> None:
    options = OutputSize(batch_bytes=8_000_000, max_message_bytes=3_000_000).producer_options()
    assert options["batch.size"] == 8_000_000
    assert options["message.max.bytes"] == 8_000_000  # librdkafka caps message sets by it too
    assert options["delivery.report.only.error"] is True
    big = OutputSize(batch_bytes=1_000_000, max_message_bytes=7_000_000).producer_options()
    assert big["message.max.bytes"] == 7_000_000


def test_what_the_limit_keeps_librdkafka_accepts() -> None:
    """When the topics report a limit, message.max.bytes equals it; librdkafka counts the
    record framing too, so an event kept by the check must still be accepted by produce()."""
    from confluent_kafka import Producer

    limit = 290_625  # fitting_bytes(300_000): both sizes come from the same topic limit
    options = OutputSize(batch_bytes=limit, max_message_bytes=limit).producer_options()
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", **options})  # never connects
    core = StreamCore.from_pipeline(pipeline())
    result = core.process_batch(records([good(1), good(2)]), never_seen, NOW)
    key = b"e1"
    fitting = b"x" * (limit - message_bytes(key, b"", ()))  # exactly at the limit
    at_librdkafkas_edge = b"x" * (limit - len(key))  # key + value == limit: refused by it
    kept = set_aside_too_large(result, [fitting, at_librdkafkas_edge], limit, NOW)
    assert kept == [fitting]
    assert [d.error_class for d in result.dead_letters] == ["EventTooLarge"]
    producer.produce("t", fitting, key)  # raises KafkaException(MSG_SIZE_TOO_LARGE) if not
    producer.purge()
