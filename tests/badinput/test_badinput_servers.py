"""The catalogue through real servers on the real broker: HTTP ingest, the Firehose API and
the stream worker (DLQ headers). Each bad input goes alongside a good record, which must
arrive; the server keeps answering afterwards."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.badinput.catalogue import Case, cases, dumps, record
from tests.badinput.conftest import Stack, make_stack, read_all
from tests.badinput.support import SOURCE, canonical_view, expected_canonical, param

pytestmark = pytest.mark.integration

FIREHOSE_TARGET = "Firehose_20150804."


def raw_keys(stack: Stack) -> set[bytes]:
    return {e.key for e in read_all(stack.settings, stack.pipeline.raw_topic(SOURCE)) if e.key}


def good_line() -> tuple[bytes, bytes]:
    # letters only: a run of 19 digits would send the whole body through the exact reader
    key = "good-" + uuid.uuid4().hex.translate(str.maketrans("0123456789", "ghijklmnop"))
    return key.encode(), dumps(record(id=key))


# --------------------------------------------------------------------------- HTTP ingest


@pytest.mark.parametrize("case", [param(c) for c in cases("ingest")])
def test_ingest(case: Case, stack: Stack, ingest_url: str) -> None:
    status, code = case.expect.split()
    source = case.option("source", SOURCE)
    content_type = case.option("content_type", "application/x-ndjson")
    key, good = good_line()
    url = f"{ingest_url}/v1/sources/{source}/records"
    per_record = status == "200"
    if not per_record:
        body = case.value()
    elif content_type == "application/json":
        body = b"[" + case.value() + b"," + good + b"]"
    else:
        body = case.value() + b"\n" + good
    response = httpx.post(url, content=body, headers={"content-type": content_type}, timeout=60)
    assert response.status_code == int(status), response.text[:500]
    answer = response.json()
    if per_record:
        first, second = answer["results"]
        if code == "accepted":
            assert "error" not in first and answer["accepted"] == 2
        else:
            assert first["error"] == code and first["reason"], first
            assert answer["accepted"] == 1 and answer["failed"] == 1
        assert "offset" in second
    else:
        assert answer["error"] == code and answer["reason"], answer
        # Refused whole: the client resends; a good request right after still goes through.
        again = httpx.post(
            f"{ingest_url}/v1/sources/{SOURCE}/records",
            content=good,
            headers={"content-type": "application/x-ndjson"},
        )
        assert again.status_code == 200 and again.json()["accepted"] == 1
    assert key in raw_keys(stack), "the good record did not reach the raw topic"


# --------------------------------------------------------------------------- Firehose API


def firehose_post(url: str, body: bytes, operation: str) -> httpx.Response:
    headers = {"content-type": "application/x-amz-json-1.1"}
    if operation:
        headers["x-amz-target"] = FIREHOSE_TARGET + operation
    return httpx.post(url + "/", content=body, headers=headers, timeout=60)


@pytest.mark.parametrize("case", [param(c) for c in cases("firehose")])
def test_firehose(case: Case, stack: Stack, ingest_url: str) -> None:
    status, code = case.expect.split()
    body = case.value().replace(b"{source}", SOURCE.encode())
    response = firehose_post(ingest_url, body, case.option("operation", "PutRecord"))
    assert response.status_code == int(status), response.text[:500]
    if code == "accepted":
        assert response.json()["RecordId"]
    else:
        assert response.headers["x-amzn-ErrorType"] == code
        error = response.json()
        assert error["__type"] == code and error["message"], error
    key, good = good_line()
    ok = firehose_post(
        ingest_url,
        orjson.dumps(
            {"DeliveryStreamName": SOURCE, "Record": {"Data": base64.b64encode(good).decode()}}
        ),
        "PutRecord",
    )
    assert ok.status_code == 200, ok.text
    assert key in raw_keys(stack)


# --------------------------------------------------------------------------- stream worker


def run_worker(stack: Stack, items: list[tuple[str, bytes]], timeout_s: float) -> dict[str, Any]:
    """Produce ``(name, value)`` items, each after a good record, run one worker until all
    are canonical or dead-lettered; raises what the worker raised.

    Returns ``{"offsets": name -> raw offset, "dlq": raw offset -> entry, "canonical": id ->
    event, "good": ids of the good records, "sent": how many records}``.
    """
    from confluent_kafka import Producer

    from hosepipe.avro import make_decoder
    from hosepipe.kafka import producer_config
    from streams.kafka_runner import KafkaRunner, RunnerOptions

    raw = stack.pipeline.raw_topic(SOURCE)
    # Records above librdkafka's default message.max.bytes: raise it, as a producer sending
    # such records would have to (the broker accepts them).
    producer = Producer(producer_config(stack.settings, **{"message.max.bytes": 8 * 1024 * 1024}))
    good_ids: list[str] = []
    sent: list[tuple[str | None, bytes | None]] = []
    for name, value in items:
        gid = f"good-{name}"
        good_ids.append(gid)
        sent.append((None, dumps(record(id=gid))))
        sent.append((name, value or None))
    delivered: dict[int, tuple[Any, int | None]] = {}

    def on_delivery(index: int) -> Any:
        def done(error: Any, message: Any) -> None:
            delivered[index] = (error, message.offset() if error is None else None)

        return done

    for index, (_, payload) in enumerate(sent):
        producer.produce(raw, payload, on_delivery=on_delivery(index))
        producer.poll(0)
    assert producer.flush(60) == 0
    offsets: dict[str, int] = {}
    for index, (label, _) in enumerate(sent):
        error, offset = delivered[index]
        assert error is None, f"{label}: the broker refused it: {error}"
        if label is not None and offset is not None:
            offsets[label] = offset

    options = RunnerOptions(
        batch_size=50,
        group=stack.pipeline.streams.consumer_group,
        state_dir=stack.settings.data_dir / f"worker-{uuid.uuid4().hex[:6]}",
        stats_every_s=1.0,
    )
    runner = KafkaRunner(stack.settings, stack.pipeline, options=options)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    dlq_topic, canonical_topic = stack.pipeline.topics.dlq, stack.pipeline.topics.canonical
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if errors:
                raise errors[0]
            assert thread.is_alive(), "the worker stopped"
            dlq = read_all(stack.settings, dlq_topic)
            canonical = read_all(stack.settings, canonical_topic)
            if len(dlq) + len(canonical) >= len(sent):
                time.sleep(1.0)
                dlq = read_all(stack.settings, dlq_topic)
                canonical = read_all(stack.settings, canonical_topic)
                break
            assert time.monotonic() < deadline, f"{len(dlq)} + {len(canonical)} of {len(sent)}"
            time.sleep(0.5)
    finally:
        runner.stop()
        thread.join(30)
    if errors:
        raise errors[0]
    decoder = make_decoder(stack.settings)
    events = [decoder.decode(e.value or b"") for e in canonical]
    return {
        "offsets": offsets,
        "dlq": {int(e.reasons["hosepipe.original.offset"]): e for e in dlq},
        "canonical": {e["event_id"]: e for e in events},
        "good": good_ids,
        "sent": len(sent),
    }


def isolated(case: Case) -> bool:
    return case.option("isolated") == "1"


@pytest.fixture(scope="module")
def worker_outcome(stack: Stack) -> dict[str, Any]:
    """One worker run over every stream case that cannot take the worker down."""
    items = [(c.name, c.value()) for c in cases("stream") if not isolated(c)]
    return run_worker(stack, items, timeout_s=90)


def test_worker_loses_nothing(worker_outcome: dict[str, Any]) -> None:
    """Conservation: every good record is canonical; raw = canonical + DLQ (+ duplicates)."""
    canonical = worker_outcome["canonical"]
    missing = [gid for gid in worker_outcome["good"] if gid not in canonical]
    assert not missing
    # The ingest tests of this module write to the same raw topic, hence ">=".
    assert len(canonical) + len(worker_outcome["dlq"]) >= worker_outcome["sent"]


@pytest.mark.parametrize("case", [param(c, "worker") for c in cases("stream")])
def test_worker(
    case: Case,
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    if isolated(case):  # may kill the worker: a run (and topics) of its own
        stack = make_stack(kafka_bootstrap, tmp_path)
        outcome = run_worker(stack, [(case.name, case.value())], timeout_s=45)
        assert f"good-{case.name}" in outcome["canonical"], "the good record was lost"
    else:
        stack = request.getfixturevalue("stack")
        outcome = request.getfixturevalue("worker_outcome")
    check_worker_case(case, stack, outcome)


def check_worker_case(case: Case, stack: Stack, outcome: dict[str, Any]) -> None:
    offset = outcome["offsets"][case.name]
    kind, *rest = case.expect.split()
    dlq = outcome["dlq"]
    if kind == "dlq":
        stage, error_class = rest
        assert offset in dlq, f"no DLQ entry for raw offset {offset}"
        entry = dlq[offset]
        reasons = entry.reasons
        assert reasons["hosepipe.source"] == SOURCE
        assert reasons["hosepipe.error.stage"] == stage
        assert reasons["hosepipe.error.class"] == error_class, reasons["hosepipe.error.message"]
        assert reasons["hosepipe.error.message"]
        assert reasons["hosepipe.original.topic"] == stack.pipeline.raw_topic(SOURCE)
        assert reasons["hosepipe.original.partition"] == "0"
        assert reasons["hosepipe.failed_at"]
        assert (entry.value or b"") == case.value(), "the DLQ keeps the value as sent (replay)"
    else:
        assert offset not in dlq, dlq.get(offset)
        raw = json.loads(case.value())  # exact integers of any size, like the worker
        event = outcome["canonical"].get(expected_canonical(raw)["event_id"])
        assert event is not None, "the record did not reach the canonical topic unchanged"
        assert canonical_view(event) == expected_canonical(raw)
