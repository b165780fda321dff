"""Regressions of the kafka engine on a real broker: size limits never crash the worker.

A canonical event over the worker's per-message limit becomes a dead letter
(``encode`` / ``EventTooLarge``); a dead letter over it is cut, with its original size in a
header; the good records around them keep flowing and nothing is committed before delivery.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings

pytestmark = pytest.mark.integration

LIMIT = 200_000  # the worker's per-message limit (max_message_bytes) in this test


def pipeline(prefix: str) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "topics": {
                "raw_prefix": f"{prefix}.raw.",
                "canonical": f"{prefix}.canonical",
                "dlq": f"{prefix}.dlq",
                "partitions": 1,
            },
            "sources": {
                "s": {
                    "kind": "push",
                    "key_path": "$.id",
                    "max_record_bytes": 400_000,
                    "mapping": {"event_id": "$.id", "occurred_at": "$.ts", "event_type": "$.t"},
                }
            },
            "streams": {"consumer_group": f"{prefix}.worker", "batch_size": 50},
        }
    )


def record(event_id: str, pad: int = 0) -> bytes:
    body: dict[str, Any] = {"id": event_id, "ts": int(time.time() * 1000), "t": "x"}
    if pad:
        body["pad"] = "x" * pad
    return orjson.dumps(body)


def test_oversized_events_and_dead_letters_never_crash_the_worker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    from hosepipe.avro import make_decoder
    from hosepipe.kafka import producer_config
    from hosepipe.topics import ensure_topics
    from streams.dlq import read_topic
    from streams.kafka_runner import KafkaRunner, RunnerOptions

    prefix = f"bugs{uuid.uuid4().hex[:8]}"
    settings = Settings(_env_file=None, kafka_bootstrap=kafka_bootstrap, data_dir=tmp_path)  # type: ignore[call-arg]
    config = pipeline(prefix)
    ensure_topics(settings, config)
    sent = [
        record("good-1"),
        record("big-valid", pad=300_000),  # canonical event > LIMIT: EventTooLarge
        record("good-2"),
        b"{not json" + b" " * 300_000,  # dead letter > LIMIT: cut, size in a header
        record("good-3"),
    ]
    producer = Producer(producer_config(settings, **{"message.max.bytes": 4 * 1024 * 1024}))
    for value in sent:
        producer.produce(config.raw_topic("s"), value)
    assert producer.flush(30) == 0

    options = RunnerOptions(
        batch_size=50, group=config.streams.consumer_group, state_dir=tmp_path / "state"
    )
    runner = KafkaRunner(settings, config, options=options)
    runner.max_message_bytes = LIMIT
    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert not errors, errors
            totals = runner.counters.totals.get("s")
            if totals is not None and totals.received >= len(sent):
                break
            assert time.monotonic() < deadline, "the worker did not get through the records"
            time.sleep(0.2)
    finally:
        runner.stop()
        thread.join(30)
    assert not errors, errors
    assert totals.balanced and (totals.out, totals.dead_lettered) == (3, 2)

    decoder = make_decoder(settings)
    canonical = [
        decoder.decode(e.value or b"")["event_id"]
        for e in read_topic(settings, config.topics.canonical)
    ]
    assert sorted(canonical) == ["good-1", "good-2", "good-3"]
    dlq = {
        int(e.reasons["hosepipe.original.offset"]): e
        for e in read_topic(settings, config.topics.dlq)
    }
    assert set(dlq) == {1, 3}

    too_large = dlq[1].reasons
    assert (too_large["hosepipe.error.stage"], too_large["hosepipe.error.class"]) == (
        "encode",
        "EventTooLarge",
    )
    assert "big-valid" in too_large["hosepipe.error.message"]

    cut = dlq[3]
    assert cut.reasons["hosepipe.error.class"] == "InvalidJson"
    assert cut.reasons["hosepipe.truncated"] == "true"
    assert cut.reasons["hosepipe.original.bytes"] == str(len(sent[3]))
    assert cut.value is not None and sent[3].startswith(cut.value) and len(cut.value) < LIMIT
    # the big-valid record's own dead letter was cut as well (its value is over the limit)
    assert dlq[1].reasons["hosepipe.original.bytes"] == str(len(sent[1]))
