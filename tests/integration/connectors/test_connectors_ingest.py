"""HTTP ingest and the Firehose API against a real broker."""

from __future__ import annotations

import base64
import json

import boto3
import httpx
import orjson
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from connectors.delivery import DeliveryProducer, producer_config
from connectors.http.app import build_app
from hosepipe.config import PipelineConfig
from hosepipe.settings import Settings
from hosepipe.topics import ensure_topics

pytestmark = pytest.mark.integration

API_KEY = "test-key-0123456789abcdef"  # as in conftest.make_pipeline
LIMITED_KEY = "limited-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def firehose_client(url: str, secret: str = "hosepipe-firehose-secret"):
    return boto3.client(
        "firehose",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDHOSEPIPETEST",
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


# ------------------------------------------------------------------ plain endpoint


def test_json_array_is_acknowledged_and_keyed(
    kit, ingest_url: str, settings: Settings, pipeline: PipelineConfig
) -> None:
    records = [{"id": f"e{i}", "ts": 1_700_000_000_000 + i, "n": i} for i in range(20)]
    response = httpx.post(f"{ingest_url}/v1/sources/clicks/records", json=records, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 20 and body["failed"] == 0
    assert all("offset" in r for r in body["results"])
    messages = kit.read_topic(settings.kafka_bootstrap, pipeline.raw_topic("clicks"), 20)
    assert len(messages) == 20
    assert sorted(m.key() for m in messages) == sorted(f"e{i}".encode() for i in range(20))
    assert {orjson.loads(m.value())["id"] for m in messages} == {f"e{i}" for i in range(20)}


def test_ndjson_with_a_bad_line_reports_it_and_keeps_the_rest(
    kit, ingest_url: str, settings: Settings, pipeline: PipelineConfig
) -> None:
    body = b'{"id": "a", "ts": 1}\nnot json\n\n{"id": "b", "ts": 2}\n'
    response = httpx.post(
        f"{ingest_url}/v1/sources/orders/records",
        content=body,
        headers={**AUTH, "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 2 and result["failed"] == 1
    assert result["results"][1]["error"] == "InvalidRecord"
    messages = kit.read_topic(settings.kafka_bootstrap, pipeline.raw_topic("orders"), 2)
    assert sorted(orjson.loads(m.value())["id"] for m in messages) == ["a", "b"]
    # orders has no key_path: its records are keyed by the event id of its mapping
    assert sorted(m.key() for m in messages) == [b"a", b"b"]


def test_every_copy_of_an_event_lands_in_one_raw_partition(
    kit, settings: Settings, unique_name
) -> None:
    """A source without key_path and with a hashed event id: the copies of an event sent
    through the plain endpoint and through Firehose, in separate requests, share the raw
    partition (the worker's dedupe is per partition) and carry the worker's event id as key."""
    from streams.mapping import compile_mapping

    mapping = {
        "event_id": {"hash": ["$.order", "$.status"]},
        "occurred_at": {"path": "$.ts", "format": "epoch_ms"},
        "event_type": {"path": "$.status"},
    }
    pipeline = kit.make_pipeline(
        unique_name("hashed"), {"shop": {"kind": "push", "mapping": mapping}}
    )
    ensure_topics(settings, pipeline)
    records = [
        {"order": f"o-{n}", "status": status, "ts": 1_700_000_000_000 + n}
        for n in range(30)
        for status in ("placed", "paid")
    ]
    running = kit.start_server(build_app(settings, pipeline))
    try:
        for start in range(0, len(records), 7):  # many requests: unkeyed, copies would scatter
            response = httpx.post(
                f"{running.url}/v1/sources/shop/records",
                json=records[start : start + 7],
                headers=AUTH,
            )
            assert response.status_code == 200, response.text
        client = firehose_client(running.url)
        for record in records:
            client.put_record(
                DeliveryStreamName="shop", Record={"Data": orjson.dumps(record) + b"\n"}
            )
    finally:
        running.stop()
    messages = kit.read_topic(settings.kafka_bootstrap, pipeline.raw_topic("shop"), 120)
    assert len(messages) == 2 * len(records)
    to_canonical = compile_mapping("shop", pipeline.sources["shop"].mapping)
    partitions: dict[bytes, set[int]] = {}
    for message in messages:
        event_id = to_canonical(orjson.loads(message.value()), 0)["event_id"]
        assert message.key() == event_id.encode()
        partitions.setdefault(message.key(), set()).add(message.partition())
    assert len(partitions) == len(records)
    assert all(len(found) == 1 for found in partitions.values())
    assert {p for found in partitions.values() for p in found} == {0, 1}  # both were used


def test_bad_json_is_400(ingest_url: str) -> None:
    response = httpx.post(f"{ingest_url}/v1/sources/clicks/records", content=b"[{", headers=AUTH)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["reason"]


def test_oversized_body_and_too_many_records_are_413(
    ingest_url: str, pipeline: PipelineConfig
) -> None:
    big = b"[" + b" " * (pipeline.ingest.max_request_bytes + 1) + b"]"
    response = httpx.post(f"{ingest_url}/v1/sources/clicks/records", content=big, headers=AUTH)
    assert response.status_code == 413
    many = [{"id": str(i)} for i in range(pipeline.ingest.max_records_per_request + 1)]
    response = httpx.post(f"{ingest_url}/v1/sources/clicks/records", json=many, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"] == "TooManyRecords"


def test_oversized_record_is_refused_alone(ingest_url: str, pipeline: PipelineConfig) -> None:
    huge = {"id": "big", "blob": "x" * (pipeline.ingest.max_record_bytes + 10)}
    response = httpx.post(
        f"{ingest_url}/v1/sources/clicks/records", json=[{"id": "ok"}, huge], headers=AUTH
    )
    assert response.status_code == 200
    result = response.json()
    assert result["accepted"] == 1
    assert result["results"][1]["error"] == "RecordTooLarge"


def test_keys_are_checked(ingest_url: str) -> None:
    url = f"{ingest_url}/v1/sources/clicks/records"
    assert httpx.post(url, json=[{"id": "x"}]).status_code == 401
    wrong = httpx.post(url, json=[{"id": "x"}], headers={"Authorization": "Bearer nope-nope"})
    assert wrong.status_code == 401
    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
    forbidden = httpx.post(url, json=[{"id": "x"}], headers=limited)
    assert forbidden.status_code == 403
    assert "clicks" in forbidden.json()["reason"]
    allowed = httpx.post(
        f"{ingest_url}/v1/sources/orders/records", json=[{"id": "x"}], headers=limited
    )
    assert allowed.status_code == 200


def test_unknown_source_is_404(ingest_url: str) -> None:
    response = httpx.post(f"{ingest_url}/v1/sources/nope/records", json=[{}], headers=AUTH)
    assert response.status_code == 404
    assert "nope" in response.json()["reason"]


def test_metrics_count_records(ingest_url: str) -> None:
    httpx.post(f"{ingest_url}/v1/sources/clicks/records", json=[{"id": "m"}], headers=AUTH)
    text = httpx.get(f"{ingest_url}/metrics").text
    assert 'hosepipe_connector_records_total{connector="http",source="clicks"}' in text
    assert "hosepipe_connector_produce_seconds_bucket" in text


# ------------------------------------------------------------------ Firehose API


def test_boto3_put_record_and_batch(
    kit, ingest_url: str, settings: Settings, pipeline: PipelineConfig
) -> None:
    client = firehose_client(ingest_url)
    single = client.put_record(
        DeliveryStreamName="clicks", Record={"Data": b'{"id": "single", "ts": 1}\n'}
    )
    assert single["RecordId"]
    batch = client.put_record_batch(
        DeliveryStreamName="clicks",
        Records=[{"Data": json.dumps({"id": f"b{i}", "ts": i}).encode()} for i in range(500)],
    )
    assert batch["FailedPutCount"] == 0
    ids = [r["RecordId"] for r in batch["RequestResponses"]]
    assert len(ids) == 500 and len(set([*ids, single["RecordId"]])) == 501
    messages = kit.read_topic(settings.kafka_bootstrap, pipeline.raw_topic("clicks"), 501)
    assert len(messages) == 501
    keys = {m.key() for m in messages}
    assert b"single" in keys and b"b499" in keys
    assert client.list_delivery_streams()["DeliveryStreamNames"] == ["clicks", "orders"]
    description = client.describe_delivery_stream(DeliveryStreamName="orders")
    assert description["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE"


def test_boto3_oversized_record_and_batch(ingest_url: str, pipeline: PipelineConfig) -> None:
    client = firehose_client(ingest_url)
    too_big = b"x" * (pipeline.ingest.max_record_bytes + 1)
    with pytest.raises(ClientError) as error:
        client.put_record(DeliveryStreamName="clicks", Record={"Data": too_big})
    assert error.value.response["Error"]["Code"] == "InvalidArgumentException"
    with pytest.raises(ClientError) as error:
        client.put_record_batch(
            DeliveryStreamName="clicks",
            Records=[{"Data": b"{}"}] * (pipeline.ingest.max_records_per_request + 1),
        )
    assert error.value.response["Error"]["Code"] == "ValidationException"
    # 5 records of 1,000,000 bytes: each under the record limit, together over 4 MiB
    with pytest.raises(ClientError) as error:
        client.put_record_batch(
            DeliveryStreamName="clicks", Records=[{"Data": b"y" * 1_000_000}] * 5
        )
    assert error.value.response["Error"]["Code"] == "InvalidArgumentException"


def test_boto3_bad_signature_and_unknown_stream(ingest_url: str) -> None:
    with pytest.raises(ClientError) as error:
        firehose_client(ingest_url, secret="wrong-secret-value").put_record(
            DeliveryStreamName="clicks", Record={"Data": b"{}"}
        )
    assert error.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as error:
        firehose_client(ingest_url).put_record(DeliveryStreamName="missing", Record={"Data": b"{}"})
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_unsigned_firehose_request_is_refused(ingest_url: str) -> None:
    body = {"DeliveryStreamName": "clicks", "Record": {"Data": base64.b64encode(b"{}").decode()}}
    response = httpx.post(
        ingest_url,
        content=orjson.dumps(body),
        headers={
            "X-Amz-Target": "Firehose_20150804.PutRecord",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    assert response.status_code == 403
    assert response.json()["__type"] == "MissingAuthenticationTokenException"


def test_backpressure_is_answered_with_retry_after(
    kit, settings: Settings, pipeline: PipelineConfig
) -> None:
    tiny_queue = {"queue.buffering.max.messages": 2}
    app = build_app(
        settings,
        pipeline,
        lambda: DeliveryProducer(producer_config(settings, "tiny-queue", **tiny_queue)),
    )
    running = kit.start_server(app)
    try:
        url = f"{running.url}/v1/sources/clicks/records"
        response = httpx.post(url, json=[{"id": str(i)} for i in range(10)], headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert body["accepted"] >= 1 and body["failed"] >= 1
        assert body["accepted"] + body["failed"] == 10
        assert {r["error"] for r in body["results"] if "error" in r} == {"ServiceUnavailable"}
        assert response.headers["Retry-After"] == "1"
        app.state.service.high_water = 0  # the producer backlog counts as saturated
        refused = httpx.post(url, json=[{"id": "x"}], headers=AUTH)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        with pytest.raises(ClientError) as error:
            firehose_client(running.url).put_record(
                DeliveryStreamName="clicks", Record={"Data": b"{}"}
            )
        assert error.value.response["Error"]["Code"] == "ServiceUnavailableException"
    finally:
        running.stop()
