"""Message sizes never crash a worker, on either engine, on a real broker.

- An event bigger than librdkafka's default ``message.max.bytes`` (1,000,000) but within
  what the source accepts and the topics hold is delivered (the faust engine used to raise
  ``MSG_SIZE_TOO_LARGE`` on it and exit, and meet it again after every restart).
- Over the output topics' ``max.message.bytes``: a canonical event becomes a dead letter
  (``encode`` / ``EventTooLarge``) and a dead letter is cut, with its original size in a
  header; the good records around them keep flowing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.streams.conftest import Stage, make_stage

pytestmark = pytest.mark.integration

BIG = 1_500_000  # over librdkafka's default message.max.bytes, under the 8 MiB topics
OUTPUT_LIMIT = 300_000  # the canonical and DLQ topics' max.message.bytes in the second test


def body(event_id: str, now_ms: int, pad: int = 0) -> bytes:
    return orjson.dumps(
        {"id": event_id, "ts": now_ms, "type": "view", "user": "u", "pad": "x" * pad}
    )


def run_through(stage: Stage, sent: list[tuple[bytes, bytes]]) -> None:
    """Produce ``sent`` to the raw topic, run a worker until it has received all of them."""
    from hosepipe.kafka import make_producer

    producer = make_producer(stage.settings, **{"message.max.bytes": 4 * 1024 * 1024})
    for key, value in sent:
        producer.produce(stage.raw, value, key)
    assert producer.flush(30) == 0
    runner = stage.start_runner()
    try:
        stage.wait_for(
            lambda: (totals := stage.stats()) is not None and totals.received >= len(sent),
            timeout=90,
            what="the worker to get through the records",
            explain=stage.diagnosis,
        )
    finally:
        stage.stop_runner(runner)  # raises what the worker raised; exit code 0 for faust


def test_events_over_librdkafkas_default_size_are_delivered(
    kafka_bootstrap: str, tmp_path: Path, engine: str
) -> None:
    stage = make_stage(kafka_bootstrap, tmp_path, engine, partitions=1, max_record_bytes=3_000_000)
    now_ms = int(time.time() * 1000)
    sent = [
        (b"good-1", body("good-1", now_ms)),
        (b"big", body("big", now_ms, pad=BIG)),
        (b"good-2", body("good-2", now_ms)),
        (b"bad", b"{not json" + b" " * BIG),  # a dead letter of the same size
        (b"good-3", body("good-3", now_ms)),
    ]
    run_through(stage, sent)

    events = {e["event_id"]: e for e in stage.canonical_events()}
    assert sorted(events) == ["big", "good-1", "good-2", "good-3"]
    assert len(orjson.loads(events["big"]["payload"])["pad"]) == BIG
    letters = stage.dead_letters()
    assert [letter.value for letter in letters] == [sent[3][1]]  # whole, not cut
    assert letters[0].reasons["hosepipe.error.class"] == "InvalidJson"
    totals = stage.stats()
    assert totals.balanced and (totals.out, totals.dead_lettered) == (4, 1)


def test_over_the_topics_limit_events_are_dead_lettered_and_letters_cut(
    kafka_bootstrap: str, tmp_path: Path, engine: str
) -> None:
    stage = make_stage(
        kafka_bootstrap,
        tmp_path,
        engine,
        partitions=1,
        max_record_bytes=400_000,
        output_max_message_bytes=OUTPUT_LIMIT,
    )
    now_ms = int(time.time() * 1000)
    sent = [
        (b"good-1", body("good-1", now_ms)),
        (b"big-valid", body("big-valid", now_ms, pad=350_000)),  # event > limit: EventTooLarge
        (b"good-2", body("good-2", now_ms)),
        (b"bad", b"{not json" + b" " * 350_000),  # dead letter > limit: cut
        (b"good-3", body("good-3", now_ms)),
    ]
    run_through(stage, sent)

    assert sorted(e["event_id"] for e in stage.canonical_events()) == [
        "good-1",
        "good-2",
        "good-3",
    ]
    letters: dict[int, Any] = {
        int(letter.reasons["hosepipe.original.offset"]): letter for letter in stage.dead_letters()
    }
    assert set(letters) == {1, 3}
    too_large = letters[1].reasons
    assert (too_large["hosepipe.error.stage"], too_large["hosepipe.error.class"]) == (
        "encode",
        "EventTooLarge",
    )
    assert "big-valid" in too_large["hosepipe.error.message"]
    for offset, error_class in ((1, "EventTooLarge"), (3, "InvalidJson")):
        letter = letters[offset]
        original = sent[offset][1]
        assert letter.reasons["hosepipe.error.class"] == error_class
        assert letter.reasons["hosepipe.truncated"] == "true"
        assert letter.reasons["hosepipe.original.bytes"] == str(len(original))
        assert letter.value is not None and original.startswith(letter.value)
        assert len(letter.value) < OUTPUT_LIMIT
    totals = stage.stats()
    assert totals.balanced and (totals.out, totals.dead_lettered) == (3, 2)
